//! What the REST API's write endpoints ask of this agent: DCS reads and compare-and-swap
//! writes through the agent's own DCS handle ([`AgentCommands`]), and local operations on
//! PostgreSQL handed to the agent loop over a channel ([`Agent::handle_local_command`]).
//! Restart and reinitialize (and a due scheduled restart) go through the HA core: the next
//! cycle's observation carries the command, the decision carries the operations and the
//! answer ([`Agent::answer_command`]), so they never race with what the core decides.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgbaton_api::{BoxFuture, CommandOutcome, Commands, LocalCommand, ScheduledRestart};
use pgbaton_core::{CommandVerdict, Decision, LocalPg, MemberCommand};
use pgbaton_dcs::{ClusterState, Dcs, DcsError, FailoverDoc};
use tokio::sync::{mpsc, oneshot};

use super::Agent;
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

/// How long the API waits for the loop to take a local command (it finishes its cycle first).
const LOCAL_ANSWER: Duration = Duration::from_secs(30);

/// A local command with the channel its answer goes back on.
pub struct LocalRequest {
    pub command: LocalCommand,
    pub reply: oneshot::Sender<CommandOutcome>,
}

/// A command for the next cycle's decision, and where its answer goes.
pub(super) struct PendingCommand {
    pub command: MemberCommand,
    /// The REST caller waiting for the answer (`None`: a scheduled restart).
    pub reply: Option<oneshot::Sender<CommandOutcome>>,
}

/// The agent's side of the REST write endpoints.
pub struct AgentCommands<D: Dcs> {
    /// The agent's own DCS handle (the same lease and connection).
    dcs: Arc<D>,
    /// Into the agent loop.
    local: mpsc::Sender<LocalRequest>,
    /// Bound of each DCS request made for the API.
    timeout: Duration,
    /// The member side of failsafe mode (`POST /failsafe`).
    failsafe: super::failsafe::FailsafeMember,
}

impl<D: Dcs> AgentCommands<D> {
    /// The commands handle and the receiver the agent loop reads local commands from.
    fn new(
        dcs: Arc<D>,
        timeout: Duration,
        failsafe: super::failsafe::FailsafeMember,
    ) -> (Self, mpsc::Receiver<LocalRequest>) {
        let (tx, rx) = mpsc::channel(8);
        let commands = AgentCommands {
            dcs,
            local: tx,
            timeout: timeout.max(Duration::from_secs(2)),
            failsafe,
        };
        (commands, rx)
    }
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, DcsError>>,
) -> Result<T, DcsError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(DcsError::Unreachable {
                endpoints: "etcd".to_string(),
                message: format!("no answer within {} ms", timeout.as_millis()),
            })
        })
}

impl<D: Dcs> Commands for AgentCommands<D> {
    fn load(&self) -> BoxFuture<'_, Result<ClusterState, DcsError>> {
        Box::pin(bounded(self.timeout, self.dcs.load()))
    }

    fn set_failover(
        &self,
        doc: FailoverDoc,
        expected_revision: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async move {
            bounded(self.timeout, self.dcs.set_failover(&doc, expected_revision)).await
        })
    }

    fn delete_failover(&self) -> BoxFuture<'_, Result<(), DcsError>> {
        Box::pin(bounded(self.timeout, self.dcs.delete_failover()))
    }

    fn set_config(
        &self,
        value: serde_json::Value,
        expected_revision: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async move {
            bounded(self.timeout, self.dcs.set_config(&value, expected_revision)).await
        })
    }

    fn failsafe(&self, leader: &str) -> CommandOutcome {
        self.failsafe.receive(leader)
    }

    fn local(&self, command: LocalCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if self
                .local
                .send(LocalRequest { command, reply })
                .await
                .is_err()
            {
                return CommandOutcome::refused(503, "the agent is shutting down");
            }
            match tokio::time::timeout(LOCAL_ANSWER, answer).await {
                Ok(Ok(outcome)) => outcome,
                _ => CommandOutcome::refused(
                    503,
                    "the agent loop did not take the command in time; see the agent's log",
                ),
            }
        })
    }
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// The REST API's write endpoints for this agent (sharing its DCS handle and lease)
    /// and the receiver [`Agent::run`] takes local commands from; `timeout` bounds each
    /// DCS request made for the API.
    pub fn commands(&self, timeout: Duration) -> (AgentCommands<D>, mpsc::Receiver<LocalRequest>) {
        AgentCommands::new(self.dcs.clone(), timeout, self.failsafe_member.clone())
    }

    /// Carry out a local command between two cycles and send the answer back.
    pub(super) async fn handle_local_command(&mut self, request: LocalRequest) {
        tracing::info!(command = ?request.command, "REST API command");
        let outcome = match request.command {
            // Answered by the next cycle's decision (the loop runs it at once).
            LocalCommand::Restart => {
                return self.defer(MemberCommand::Restart, request.reply);
            }
            LocalCommand::Reinitialize { force } => {
                return self.defer(MemberCommand::Reinitialize { force }, request.reply);
            }
            LocalCommand::Reload => self.reload_postgres().await,
            LocalCommand::ScheduleRestart(restart) => self.schedule_restart(restart),
            LocalCommand::CancelScheduledRestart => match self.scheduled_restart.take() {
                Some(r) => {
                    CommandOutcome::ok(format!("scheduled restart at {} deleted", r.schedule))
                }
                None => CommandOutcome::refused(404, "no restart is scheduled: nothing to cancel"),
            },
            LocalCommand::Backup { kind, from } => self.start_backup(kind, from),
        };
        if (200..300).contains(&outcome.status) {
            tracing::info!("{}", outcome.message);
        } else {
            tracing::warn!(status = outcome.status, "{}", outcome.message);
        }
        let _ = request.reply.send(outcome);
    }

    /// `POST /backup`: a pgBackRest backup in the background (the API checked that this
    /// member is the writable leader); 202 with what was started.
    fn start_backup(
        &self,
        kind: pgbaton_api::BackupKind,
        from: Option<pgbaton_api::BackupFrom>,
    ) -> CommandOutcome {
        use pgbaton_api::{BackupFrom, BackupKind};
        let kind = match kind {
            BackupKind::Full => pgbaton_postgres::BackupType::Full,
            BackupKind::Diff => pgbaton_postgres::BackupType::Diff,
            BackupKind::Incr => pgbaton_postgres::BackupType::Incr,
        };
        let from = from.map(|f| match f {
            BackupFrom::Standby => pgbaton_postgres::BackupSource::Standby,
            BackupFrom::Leader => pgbaton_postgres::BackupSource::Leader,
        });
        match self.repo_check.start_backup(&self.spec, kind, from) {
            Ok(started) => CommandOutcome::refused(
                202,
                format!("started a {started}; GET /patroni shows it under pgbackrest.backup"),
            ),
            Err(refused) => CommandOutcome::refused(refused.status, refused.message),
        }
    }

    /// Keep one restart for later (Patroni allows one at a time).
    fn schedule_restart(&mut self, restart: ScheduledRestart) -> CommandOutcome {
        if let Some(existing) = &self.scheduled_restart {
            return CommandOutcome::refused(
                409,
                format!(
                    "cannot schedule a restart: another one is scheduled at {}; cancel it first (pgbaton ctl flush restart / DELETE /restart)",
                    existing.schedule
                ),
            );
        }
        let message = format!("Restart scheduled at {}", restart.schedule);
        self.scheduled_restart = Some(restart);
        CommandOutcome {
            status: 202,
            message,
        }
    }

    /// When the scheduled restart is due: carry it out if its conditions hold (else drop it
    /// with a log line); if another operation runs, try again next cycle.
    pub(super) async fn run_scheduled_restart(&mut self) {
        let Some(restart) = &self.scheduled_restart else {
            return;
        };
        let now_ms = self.host.unix_now_ms() as i64;
        if now_ms < restart.at_unix_ms || self.jobs.is_running() || self.pending_command.is_some() {
            return;
        }
        let restart = self.scheduled_restart.take().expect("checked above");
        let status = self.last_pg_status.as_ref();
        let pending = status.is_some_and(|s| s.pending_restart);
        let role = status.map(|s| {
            if s.in_recovery {
                pgbaton_api::PgRole::Replica
            } else {
                pgbaton_api::PgRole::Primary
            }
        });
        if restart.restart_pending && !pending {
            tracing::warn!(schedule = %restart.schedule, "scheduled restart skipped: no restart is pending");
            return;
        }
        if restart.role.is_some() && restart.role != role {
            tracing::warn!(schedule = %restart.schedule, wanted = ?restart.role, "scheduled restart skipped: this member does not have the role");
            return;
        }
        tracing::info!(schedule = %restart.schedule, "scheduled restart due: handed to the next cycle");
        self.pending_command = Some(PendingCommand {
            command: MemberCommand::Restart,
            reply: None,
        });
        self.wake.notify_one();
    }

    /// Read the DCS configuration again, rewrite postgresql.conf and reload PostgreSQL.
    async fn reload_postgres(&mut self) -> CommandOutcome {
        let obs = self.observe().await;
        if obs.dcs.is_none() {
            return CommandOutcome::refused(503, "cannot read the configuration from the DCS");
        }
        if !matches!(obs.pg, LocalPg::Running(_)) {
            return CommandOutcome::refused(503, "PostgreSQL is not running: nothing to reload");
        }
        self.parameters_changed = false;
        self.rewrite_config_and_reload(&obs).await;
        CommandOutcome::ok("reloaded configuration")
    }

    /// Keep `command` for the next cycle's decision, which answers `reply`.
    fn defer(&mut self, command: MemberCommand, reply: oneshot::Sender<CommandOutcome>) {
        self.pending_command = Some(PendingCommand {
            command,
            reply: Some(reply),
        });
    }

    /// Answer the command this cycle's decision carried out or refused.
    pub(super) fn answer_command(&mut self, decision: &Decision) {
        let Some(pending) = self.pending_command.take() else {
            return;
        };
        let outcome = match &decision.command {
            Some(CommandVerdict::Started(message)) => CommandOutcome::ok(message.clone()),
            Some(CommandVerdict::Refused { status, message }) => {
                CommandOutcome::refused(*status, message.clone())
            }
            None => CommandOutcome::refused(503, "not carried out; see the agent's log"),
        };
        let origin = if pending.reply.is_some() {
            "REST API"
        } else {
            "scheduled restart"
        };
        if (200..300).contains(&outcome.status) {
            tracing::info!(command = ?pending.command, origin, "{}", outcome.message);
        } else {
            tracing::warn!(command = ?pending.command, origin, status = outcome.status, "{}", outcome.message);
        }
        if let Some(reply) = pending.reply {
            let _ = reply.send(outcome);
        }
    }
}
