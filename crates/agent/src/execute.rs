//! Carrying out the core's actions, in order. Outcomes are not reported back: the next
//! observation shows them (level-triggered).

use pgbaton_core::{AgentAction, DcsAction, JobAction, PgAction};
use std::time::Duration;

use pgbaton_core::{Action, Decision, JobKind, Observation, StopMode};
use pgbaton_dcs::{Dcs, DcsError, HistoryEntry, StatusDoc, SyncDoc};
use pgbaton_postgres::{self as pg, StandbyConfig, Upstream};

use tracing::Instrument;

use super::{jobs, settings, Agent};
use crate::jobs::JobFailure;
use crate::peers::Peers;
use crate::ports::{ConfigFiles, Host, LogFrom, Postgres};

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    pub(super) async fn execute(&mut self, decision: &Decision, obs: &Observation) {
        let mut dcs_down = obs.dcs.is_none();
        for action in &decision.actions {
            match action {
                Action::Dcs(request) => {
                    // Without this cycle's read, only the lease renewal and giving the key up
                    // (compare-and-delete) are sent: a slow DCS may still take them.
                    if dcs_down
                        && !matches!(request, DcsAction::RenewLease | DcsAction::ReleaseLeader)
                    {
                        continue;
                    }
                    if let Err(e) = self.dcs_action(request, decision).await {
                        tracing::warn!(%action, error = %e, "DCS request failed");
                        dcs_down = true;
                    }
                }
                Action::Agent(AgentAction::FailsafeRound) => self.failsafe_round().await,
                Action::Agent(AgentAction::ApplyDynamicConfig) => self.apply_dynamic_config(),
                Action::Pg(operation) => {
                    if !self.pg_action(operation).await {
                        // A timeline reservation failed: the promotion after it would
                        // reuse a timeline id.
                        break;
                    }
                }
                Action::Job(job) => self.job_action(job).await,
            }
        }
    }

    /// `PgAction::ReserveTimelines`: false when a history file could not be written.
    fn reserve_timelines(&self, after: u32, through: u32, ended: &[(u32, u64)]) -> bool {
        for timeline in after + 1..=through {
            match self.pg.install_timeline_history(timeline, ended) {
                Ok(true) => tracing::warn!(
                    timeline,
                    "put the history file of timeline {timeline} into pg_wal before promoting: the cluster used that timeline on a branch whose leader was lost, and PostgreSQL must not give this promotion the same id"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(timeline, error = %e, "cannot put the history file of timeline {timeline} into pg_wal, and the promotion would reuse that id: not promoting this cycle");
                    return false;
                }
            }
        }
        true
    }

    /// Where `timeline` ended and why, from the current timeline's history file.
    /// The `history` key as this leader's own history file tells it: every timeline that
    /// ended on the way to ours, where and why. Entries the key already has for the same
    /// switch keep their timestamp and new leader; the promotion that made us gets now and
    /// our name. Entries from another branch (a timeline number PostgreSQL reused after a
    /// leader without archive was lost) are replaced, never left to hold the election back.
    /// Without a readable history file: the key's entries before our timeline plus the
    /// position seen before promoting (`None` when even that is unknown).
    fn history_to_write(
        &self,
        existing: &[HistoryEntry],
        timeline: u32,
        seen_before_promoting: u64,
        name: &str,
    ) -> Option<Vec<HistoryEntry>> {
        let unix_ms = self.host.unix_now_ms() as i64;
        let now = || {
            chrono::DateTime::from_timestamp_millis(unix_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
        };
        let current = self.last_pg_status.as_ref().map(|s| s.timeline)?;
        match self.pg.timeline_history(current) {
            Ok(lines) if !lines.is_empty() => Some(
                lines
                    .into_iter()
                    .map(|l| {
                        let kept = existing
                            .iter()
                            .find(|h| h.timeline == l.timeline && h.lsn == l.switch_lsn);
                        let ours = l.timeline == timeline;
                        HistoryEntry {
                            timeline: l.timeline,
                            lsn: l.switch_lsn,
                            reason: l.reason,
                            timestamp: kept.and_then(|h| h.timestamp.clone()).or_else(|| {
                                if ours {
                                    now()
                                } else {
                                    None
                                }
                            }),
                            new_leader: kept
                                .and_then(|h| h.new_leader.clone())
                                .or_else(|| ours.then(|| name.to_string())),
                        }
                    })
                    .collect(),
            ),
            result => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "history file unreadable; recording the position seen before promoting");
                }
                if seen_before_promoting == 0 {
                    return None;
                }
                let mut history: Vec<HistoryEntry> = existing
                    .iter()
                    .filter(|h| h.timeline < current && h.timeline != timeline)
                    .cloned()
                    .collect();
                history.push(HistoryEntry {
                    timeline,
                    lsn: seen_before_promoting,
                    reason: "no recovery target specified".to_string(),
                    timestamp: now(),
                    new_leader: Some(name.to_string()),
                });
                history.sort_by_key(|h| h.timeline);
                Some(history)
            }
        }
    }

    async fn dcs_action(
        &mut self,
        request: &DcsAction,
        decision: &Decision,
    ) -> Result<(), DcsError> {
        let timeout = self.dcs_timeout();
        let dcs = self.dcs.clone();
        let name = self.cfg.name.clone();
        match request {
            DcsAction::RenewLease => {
                let ack = bounded(timeout, dcs.keepalive()).await?;
                self.lease = Some(ack);
                self.feed_watchdog();
                self.arm_lease_guard();
            }
            DcsAction::PublishMember => {
                let doc = self.member_doc(decision.published.as_str());
                bounded(timeout, dcs.touch_member(&doc)).await?;
            }
            DcsAction::ClaimInitialize => {
                let won = bounded(timeout, dcs.claim_initialize(&name)).await?;
                if won {
                    tracing::info!("won the initialize race");
                }
            }
            DcsAction::WriteInitialize { system_id } => {
                let value = system_id.to_string();
                bounded(timeout, dcs.set_initialize(&name, &value)).await?;
            }
            DcsAction::CancelInitialize => {
                bounded(timeout, dcs.cancel_initialize(&name)).await?;
            }
            DcsAction::WriteBootstrapConfig => {
                let value = self.cfg.bootstrap.dcs.to_dcs_json();
                bounded(timeout, dcs.set_config(&value, None)).await?;
            }
            DcsAction::AcquireLeader => {
                if bounded(timeout, dcs.acquire_leader()).await? {
                    // Attached to the lease of our last renewal.
                    self.key_lease = self.lease.map(|ack| ack.lease_id);
                    tracing::info!("acquired the leader key");
                } else {
                    tracing::info!("another member took the leader key first");
                }
            }
            DcsAction::ReleaseLeader => {
                let released = bounded(timeout, dcs.release_leader()).await?;
                if released {
                    tracing::info!("released the leader key");
                }
            }
            DcsAction::WriteStatus { optime } => {
                let status = StatusDoc {
                    optime: Some(*optime),
                    slots: self.published_slot_positions(),
                    oldest_wal_lsn: self.oldest_wal(),
                    slots_wal: self.published_slots_wal(),
                    ..Default::default()
                };
                if !bounded(timeout, dcs.set_status(&status)).await? {
                    tracing::info!("status not written: the leader key is not this member's");
                }
            }
            DcsAction::AppendHistory { timeline, lsn } => {
                let existing = self
                    .cluster
                    .as_ref()
                    .map(|c| c.history.clone())
                    .unwrap_or_default();
                if let Some(history) = self.history_to_write(&existing, *timeline, *lsn, &name) {
                    if history != existing && !bounded(timeout, dcs.set_history(&history)).await? {
                        tracing::info!(
                            "history key not written: this member no longer holds the leader key"
                        );
                    }
                }
            }
            DcsAction::WriteSync { members, quorum } => {
                let doc = SyncDoc {
                    leader: Some(name.clone()),
                    sync_standby: if members.is_empty() {
                        None
                    } else {
                        Some(members.join(","))
                    },
                    quorum: *quorum,
                    ..Default::default()
                };
                let expected = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.sync.as_ref())
                    .map(|v| v.mod_revision);
                let written = bounded(timeout, dcs.set_sync(&doc, expected)).await?;
                if written {
                    tracing::info!(sync_standby = %members.join(","), "sync key updated");
                }
            }
            DcsAction::ClearFailover => {
                bounded(timeout, dcs.delete_failover()).await?;
                tracing::info!("failover key cleared");
            }
            DcsAction::WriteFailsafe { members } => {
                let own = settings::api_url(&self.cfg);
                let topology = members
                    .iter()
                    .map(|m| {
                        let url = self
                            .cluster
                            .as_ref()
                            .and_then(|c| c.members.get(m))
                            .map(|doc| doc.api_url.clone())
                            .filter(|u| !u.is_empty() && *m != name)
                            .unwrap_or_else(|| own.clone());
                        (m.clone(), url)
                    })
                    .collect();
                if bounded(timeout, dcs.set_failsafe(&topology)).await? {
                    tracing::info!(members = %members.join(","), "failsafe key updated");
                } else {
                    tracing::info!(members = %members.join(","), "failsafe key not written: this member no longer holds the leader key");
                }
            }
        }
        Ok(())
    }

    /// host:port of a member from its document in the DCS.
    pub(super) fn upstream_of(&self, member: &str) -> Option<Upstream> {
        let doc = self.cluster.as_ref()?.members.get(member)?;
        let (host, port) = doc.host_port()?;
        Some(Upstream { host, port })
    }

    /// A replica's configuration: streaming from the member `upstream`; with none, from the
    /// remote primary of `standby_cluster` in a standby cluster (its slot, its apply delay),
    /// else from nobody (replaying what it has until there is a leader).
    fn standby_config(&self, upstream: Option<&str>) -> StandbyConfig {
        if let (None, Some(remote)) = (upstream, &self.dynamic.standby_cluster) {
            return StandbyConfig {
                upstream: remote.host.as_ref().map(|host| Upstream {
                    host: host.clone(),
                    port: remote.port,
                }),
                slot_name: remote.primary_slot_name.clone(),
                apply_delay: remote.recovery_min_apply_delay.clone(),
            };
        }
        StandbyConfig {
            upstream: upstream.and_then(|m| self.upstream_of(m)),
            slot_name: if self.ha.use_slots {
                Some(pg::slot_name_for(&self.cfg.name))
            } else {
                None
            },
            apply_delay: None,
        }
    }

    /// PostgreSQL is about to run as a primary (or be created): no primary_conninfo.
    fn run_without_upstream(&mut self) {
        self.configured_upstream = None;
        self.follows_remote_primary = false;
    }

    /// Record where primary_conninfo now points. Only a member whose address went into it
    /// counts: one without a member document (its key expired while the leader key lived)
    /// got no host, and is pointed at again once its address is known (found by the
    /// real-runtime soak, failsafe seed 200350: a starting replica whose upstream had no
    /// document waited 30 s with no primary_conninfo while the agent took it as set).
    fn set_upstream(&mut self, upstream: Option<String>) {
        self.follows_remote_primary = upstream.is_none() && self.dynamic.standby_cluster.is_some();
        let upstream = upstream.filter(|m| {
            let known = self.upstream_of(m).is_some();
            if !known {
                tracing::warn!(member = %m, "no address for the upstream in the DCS (no member document): replication left without an upstream until it has one");
            }
            known
        });
        self.configured_upstream = upstream;
    }

    /// The configuration files with `params` (`standby`: a replica's; `passfile`: the
    /// replication password in a password file rather than in primary_conninfo).
    fn config_files(
        &self,
        params: std::collections::BTreeMap<String, String>,
        standby: Option<StandbyConfig>,
        passfile: bool,
    ) -> ConfigFiles {
        ConfigFiles {
            parameters: params,
            hba: settings::pg_hba(&self.cfg),
            standby,
            passfile: if passfile {
                settings::passfile(&self.cfg, &self.spec)
            } else {
                None
            },
        }
    }

    /// A PostgreSQL operation done inline; false when it failed so that the rest of the
    /// cycle's actions must not be done (a timeline reservation before a promotion).
    async fn pg_action(&mut self, operation: &PgAction) -> bool {
        let params = self.parameters();
        let timeout = Duration::from_millis(self.ha.retry_timeout_ms.max(1_000));
        match operation {
            PgAction::SetSyncStandbyNames { names } => {
                self.configured_sync = names.clone();
                let params = self.parameters();
                let standby = match &self.last_pg_status {
                    Some(st) if st.in_recovery => {
                        Some(self.standby_config(self.configured_upstream.as_deref()))
                    }
                    _ => None,
                };
                let files = self.config_files(params, standby, true);
                if let Err(e) = self.pg.write_config(&files) {
                    tracing::warn!(error = %e, "cannot write synchronous_standby_names");
                    return true;
                }
                let value = names.as_ref().map(|n| n.to_setting()).unwrap_or_default();
                tracing::info!(synchronous_standby_names = %value, "synchronous replication changed");
                self.reload_and_wait_for("synchronous_standby_names", &value)
                    .await;
            }
            PgAction::SyncSlots { members } => {
                // One slot per other member, plus the permanent physical slots of the
                // dynamic configuration (`slots: {name: {type: physical}}`).
                let mut wanted: std::collections::BTreeSet<String> =
                    members.iter().map(|m| pg::slot_name_for(m)).collect();
                wanted.extend(settings::permanent_physical_slots(&self.dynamic));
                let keep = settings::permanent_slots(&self.dynamic);
                // In the background, one round at a time: a slow server must not delay the
                // loop (and with it the lease renewal); a replica that finds its slot
                // missing retries until the next round has created it.
                let busy = self.physical_slots_busy.clone();
                if !busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let pg = self.pg.clone();
                    tokio::spawn(
                        async move {
                            match pg.sync_physical_slots(&wanted, &keep, timeout).await {
                                Ok(changes) => {
                                    for s in changes.created {
                                        tracing::info!(slot = %s, "created replication slot");
                                    }
                                    for s in changes.recreated {
                                        tracing::warn!(slot = %s, "PostgreSQL had invalidated this replication slot (wal_status lost, max_slot_wal_keep_size): dropped it and created it again; its member re-clones if the WAL it needs is gone");
                                    }
                                    for s in changes.dropped {
                                        tracing::info!(slot = %s, "dropped replication slot of a member that left (or whose member_slots_ttl passed)");
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot maintain replication slots")
                                }
                            }
                            busy.store(false, std::sync::atomic::Ordering::Release);
                        }
                        .in_current_span(),
                    );
                }
                if let Some(in_recovery) = self.last_pg_status.as_ref().map(|s| s.in_recovery) {
                    self.logical_slots(in_recovery, timeout);
                }
            }
            PgAction::ApplyLogical => self.apply_logical(timeout),
            PgAction::Repoint { upstream } => {
                let standby = self.standby_config(upstream.as_deref());
                let files = self.config_files(params, Some(standby), true);
                if let Err(e) = self.pg.write_config(&files) {
                    tracing::warn!(error = %e, "cannot write the replica configuration");
                    return true;
                }
                if let Some(Err(e)) = self.pg.reload().await {
                    tracing::warn!(error = %e, "cannot reload PostgreSQL");
                }
                self.set_upstream(upstream.clone());
                // What the old upstream said about removed WAL says nothing about the new one.
                if self.wal_log.is_some() {
                    self.wal_log = Some(self.pg.wal_log(LogFrom::End));
                }
            }
            PgAction::MoveDataAside { reason } => match self.pg.move_aside(reason) {
                Ok(path) => {
                    tracing::warn!(moved_to = %path.display(), "moved the data directory aside")
                }
                Err(e) => tracing::error!(error = %e, "cannot move the data directory aside"),
            },
            PgAction::ReserveTimelines {
                after,
                through,
                ended,
            } => return self.reserve_timelines(*after, *through, ended),
        }
        true
    }

    /// An operation on PostgreSQL that runs in the background (one at a time), or a stop.
    async fn job_action(&mut self, job: &JobAction) {
        let params = self.parameters();
        match job {
            JobAction::Stop { mode } => {
                if *mode == StopMode::Immediate {
                    self.jobs.abort().await;
                }
                if self.jobs.is_running() {
                    return;
                }
                let pg = self.pg.clone();
                let checkpoint_first = *mode == StopMode::CheckpointThenFast;
                let mode = match mode {
                    StopMode::Fast | StopMode::CheckpointThenFast => pg::StopMode::Fast,
                    StopMode::Immediate => pg::StopMode::Immediate,
                };
                let limit = Duration::from_secs(if mode == pg::StopMode::Fast { 30 } else { 5 });
                self.jobs.start(JobKind::Stop, async move {
                    if checkpoint_first {
                        // While still accepting writes: the shutdown checkpoint is then short.
                        if let Err(e) = pg.checkpoint(Duration::from_secs(60)).await {
                            tracing::warn!(error = %e, "checkpoint before the handover failed; stopping anyway");
                        }
                    }
                    pg.stop(mode, limit).await
                });
            }
            JobAction::InstallSlotCopies => self.install_ready_copies(),
            JobAction::Promote | JobAction::StartPrimary
                if !self.lease_still_valid()
                    && !self.flaws.has(crate::flaws::Flaw::NoRecheckBeforePrimary) =>
            {
                // The decision is stale (the agent may have been paused since it was taken).
                tracing::warn!(%job, "not done: the lease is no longer certainly valid");
            }
            JobAction::Promote | JobAction::StartPrimary if !self.watchdog_allows(job) => {}
            job @ (JobAction::Bootstrap
            | JobAction::Clone { .. }
            | JobAction::Rewind { .. }
            | JobAction::StartReplica { .. }
            | JobAction::StartPrimary
            | JobAction::Promote) => {
                if self.jobs.is_running() {
                    tracing::debug!(%job, "an operation runs already");
                    return;
                }
                self.start_job(job, params);
            }
        }
    }

    /// Rewrite postgresql.conf with the parameters in force and reload a running server
    /// (a parameter that needs a restart shows up as pending restart).
    pub(super) async fn rewrite_config_and_reload(&self, obs: &Observation) {
        let standby = match &obs.pg {
            pgbaton_core::LocalPg::Running(r) if r.in_recovery => {
                Some(self.standby_config(self.configured_upstream.as_deref()))
            }
            pgbaton_core::LocalPg::Running(_) => None,
            _ => return,
        };
        let files = self.config_files(self.parameters(), standby, true);
        if let Err(e) = self.pg.write_config(&files) {
            tracing::warn!(error = %e, "cannot write postgresql.conf");
            return;
        }
        match self.pg.reload().await {
            Some(Ok(())) => tracing::info!("PostgreSQL parameters changed: configuration reloaded"),
            Some(Err(e)) => tracing::warn!(error = %e, "cannot reload PostgreSQL"),
            None => {}
        }
    }

    /// PostgreSQL parameters in force, with the synchronous_standby_names we set.
    fn parameters(&self) -> std::collections::BTreeMap<String, String> {
        let mut params = settings::pg_parameters(&self.cfg, &self.dynamic);
        let ssn = self
            .configured_sync
            .as_ref()
            .map(|n| n.to_setting())
            .unwrap_or_default();
        params.insert("synchronous_standby_names".to_string(), ssn);
        params
    }

    /// Reload and wait (up to 2 s) until the running server shows `value` for `setting`.
    async fn reload_and_wait_for(&self, setting: &str, value: &str) {
        let running = matches!(self.pg.reload().await, Some(Ok(())));
        if !running {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline {
            if let Ok(shown) = self.pg.show(setting, Duration::from_millis(500)).await {
                if shown == value {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(
            setting,
            value,
            "PostgreSQL did not apply the new setting within 2 s"
        );
    }

    /// Re-checked right before anything that makes PostgreSQL a primary.
    fn lease_still_valid(&self) -> bool {
        self.lease_valid_until()
            .is_some_and(|until| self.now() + self.ha.demote_margin_ms < until)
    }

    fn start_job(&mut self, job: &JobAction, params: std::collections::BTreeMap<String, String>) {
        let pg = self.pg.clone();
        let start_timeout = Duration::from_millis(self.ha.primary_restart_timeout_ms.max(5_000));
        match job {
            JobAction::Bootstrap if self.dynamic.standby_cluster.is_some() => {
                self.start_standby_bootstrap(params)
            }
            JobAction::Bootstrap => {
                let initdb_args: Vec<String> = self
                    .cfg
                    .bootstrap
                    .initdb
                    .iter()
                    .map(|o| o.to_arg())
                    .collect();
                let users = settings::bootstrap_users(&self.cfg);
                let method = settings::bootstrap_method(&self.cfg);
                let scope = self.cfg.scope.clone();
                self.run_without_upstream();
                let files = self.config_files(params, None, false);
                self.jobs.start(JobKind::Bootstrap, async move {
                    let Some(method) = method else {
                        pg.initdb(&initdb_args).await.map_err(|e| e.to_string())?;
                        pg.write_config(&files).map_err(|e| e.to_string())?;
                        jobs::start_and_wait(&pg, Duration::from_secs(60)).await?;
                        return pg
                            .ensure_users(&users, Duration::from_secs(30))
                            .await
                            .map_err(|e| e.to_string());
                    };
                    // bootstrap.method: restored by a command, recovered to its target, promoted.
                    let recovery = pg
                        .bootstrap_by_command(&method, &scope)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut with_recovery = files.clone();
                    with_recovery.parameters.extend(recovery);
                    pg.write_config(&with_recovery).map_err(|e| e.to_string())?;
                    jobs::start_and_wait(&pg, Duration::from_secs(3600)).await?;
                    pg.wait_until_promoted(Duration::from_secs(3600))
                        .await
                        .map_err(|e| e.to_string())?;
                    pg.write_config(&files).map_err(|e| e.to_string())?;
                    pg.ensure_users(&users, Duration::from_secs(30))
                        .await
                        .map_err(|e| e.to_string())
                });
            }
            JobAction::Clone { from } => {
                let Some(upstream) = self.upstream_of(from) else {
                    tracing::warn!(member = %from, "cannot clone: no address for the member in the DCS");
                    return;
                };
                let methods = settings::replica_methods(&self.cfg);
                let scope = self.cfg.scope.clone();
                let passfile = settings::passfile(&self.cfg, &self.spec);
                self.jobs.start(JobKind::Clone, async move {
                    pg.create_replica(&upstream, &methods, &scope, passfile.as_ref())
                        .await
                        .map_err(|e| e.to_string())
                });
            }
            JobAction::Rewind { from } => {
                let Some(upstream) = self.upstream_of(from) else {
                    tracing::warn!(member = %from, "cannot rewind: no address for the member in the DCS");
                    return;
                };
                let passfile = settings::passfile(&self.cfg, &self.spec);
                self.jobs.start(JobKind::Rewind, async move {
                    match pg.rewind(&upstream, passfile.as_ref()).await {
                        Ok(outcome) => {
                            tracing::info!(?outcome, "pg_rewind done");
                            Ok(())
                        }
                        Err(e @ pg::PgError::RewindSourceUnreachable { .. }) => {
                            Err(JobFailure::SourceUnreachable(e.to_string()))
                        }
                        Err(e) => Err(JobFailure::Failed(e.to_string())),
                    }
                });
            }
            JobAction::StartReplica { upstream } => {
                let standby = self.standby_config(upstream.as_deref());
                self.set_upstream(upstream.clone());
                // Only what this start logs counts.
                self.wal_log = Some(self.pg.wal_log(LogFrom::End));
                // Written now, not in the job: a `Repoint` of the next cycle (the leader
                // changed while it starts) must not be overwritten by this older upstream
                // when the job runs later (found by the real-runtime simulation, soak seed
                // 108739: the replica started towards a former leader and waited there).
                let files = self.config_files(params, Some(standby), true);
                let written = self.pg.write_config(&files).map_err(|e| e.to_string());
                self.jobs.start(JobKind::Start, async move {
                    written?;
                    jobs::start_and_wait(&pg, Duration::from_secs(120)).await
                });
            }
            JobAction::StartPrimary => {
                self.run_without_upstream();
                self.wal_log = None;
                let files = self.config_files(params, None, false);
                let written = self.pg.write_config(&files).map_err(|e| e.to_string());
                self.jobs.start(JobKind::Start, async move {
                    written?;
                    jobs::start_and_wait(&pg, start_timeout).await
                });
            }
            JobAction::Promote => {
                self.run_without_upstream();
                self.wal_log = None;
                self.jobs.start(JobKind::Promote, async move {
                    pg.promote(Duration::from_secs(60))
                        .await
                        .map_err(|e| e.to_string())
                });
            }
            // Not started here: `job_action` stops PostgreSQL itself.
            JobAction::Stop { .. } | JobAction::InstallSlotCopies => {
                debug_assert!(false, "{job} is not started as a background operation");
            }
        }
    }
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// The bootstrap of a standby cluster: copy the remote primary of `standby_cluster` (its
    /// `create_replica_methods`, pg_basebackup by default) and start the copy as its replica.
    /// Nothing is created in it: it is read-only, and its users are the remote cluster's.
    fn start_standby_bootstrap(&mut self, params: std::collections::BTreeMap<String, String>) {
        let Some(remote) = self.dynamic.standby_cluster.clone() else {
            return;
        };
        let pg = self.pg.clone();
        let methods = settings::standby_replica_methods(&self.cfg, &remote);
        let scope = self.cfg.scope.clone();
        let passfile = settings::passfile(&self.cfg, &self.spec);
        let standby = self.standby_config(None);
        self.set_upstream(None);
        let files = self.config_files(params, Some(standby), true);
        let only_basebackup = methods
            .iter()
            .all(|m| matches!(m, pg::ReplicaMethod::Basebackup { .. }));
        tracing::info!(host = ?remote.host, port = remote.port, "standby cluster: copying the remote primary");
        self.jobs.start(JobKind::Bootstrap, async move {
            let source = match &remote.host {
                Some(host) => Upstream {
                    host: host.clone(),
                    port: remote.port,
                },
                None if only_basebackup => {
                    return Err("standby_cluster has no host, so pg_basebackup cannot copy the remote primary: set standby_cluster.host and port, or name a method that restores from the archive in standby_cluster.create_replica_methods".to_string());
                }
                None => Upstream {
                    host: String::new(),
                    port: remote.port,
                },
            };
            pg.create_replica(&source, &methods, &scope, passfile.as_ref())
                .await
                .map_err(|e| format!("standby cluster: cannot copy the remote primary: {e}"))?;
            pg.write_config(&files).map_err(|e| e.to_string())?;
            jobs::start_and_wait(&pg, Duration::from_secs(3600)).await
        });
    }
}

/// A DCS request bounded by `timeout`.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, DcsError>>,
) -> Result<T, DcsError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(DcsError::Unreachable {
            endpoints: "etcd".to_string(),
            message: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}
