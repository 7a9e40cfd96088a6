//! The agent's background operations on PostgreSQL (initdb, clone, rewind, start, stop,
//! promote): how long they take, how they may fail, and what they leave behind. A job
//! belongs to the agent process that started it; a job that outlives its agent (PostgreSQL
//! keeps starting, stopping or promoting after the agent was killed) still takes effect.
//! A start writes the agent's synchronous_standby_names into postgresql.conf (as the real
//! agent rewrites its configuration); a fast stop of a primary sends all its WAL to the
//! connected standbys before the server is down (PostgreSQL's walsenders do at shutdown);
//! pg_rewind on a directory that did not diverge finds nothing to do and does not fail.

use pgbaton_core::{Action, JobKind, JobView, Millis, StopMode};
use rand::Rng;

use crate::postgres::{DataDir, Process};
use crate::world::{Event, World};

/// One background operation.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub action: Action,
    pub finishes_at: Millis,
    /// Drawn at the start: this run of the operation fails.
    pub fails: bool,
    /// Incarnation of the agent that started it.
    pub owner: u64,
}

/// Kind, duration range and failure probability of an operation.
fn profile(action: &Action) -> Option<(JobKind, Millis, Millis, f64)> {
    Some(match action {
        Action::Bootstrap => (JobKind::Bootstrap, 600, 600, 0.02),
        Action::Clone { .. } => (JobKind::Clone, 1_000, 3_000, 0.05),
        Action::Rewind { .. } => (JobKind::Rewind, 300, 800, 0.05),
        Action::StartReplica { .. } | Action::StartPrimary => (JobKind::Start, 100, 400, 0.03),
        Action::Stop {
            mode: StopMode::Fast,
        } => (JobKind::Stop, 50, 150, 0.0),
        Action::Stop {
            mode: StopMode::Immediate,
        } => (JobKind::Stop, 10, 100, 0.0),
        Action::Stop {
            mode: StopMode::CheckpointThenFast,
        } => (JobKind::Stop, 100, 400, 0.0),
        Action::Promote => (JobKind::Promote, 100, 200, 0.0),
        _ => return None,
    })
}

impl World {
    /// What the agent of `m` sees of its background operation.
    pub(crate) fn job_view(&self, m: usize) -> JobView {
        let member = &self.members[m];
        match (&member.job, &member.agent.last_failed) {
            (Some(job), _) if job.owner == member.agent.incarnation => JobView::Running(job.kind),
            (_, Some((kind, error))) => JobView::Failed {
                kind: *kind,
                error: error.clone(),
            },
            _ => JobView::Idle,
        }
    }

    /// Start `action` in the background. An immediate stop preempts whatever runs; a job
    /// left by a dead agent is preempted by any new one (the new agent does not know it).
    pub(crate) fn start_job(&mut self, m: usize, action: &Action) {
        let Some((kind, lo, hi, fail_p)) = profile(action) else {
            return;
        };
        if let Some(running) = &self.members[m].job {
            let orphan = running.owner != self.members[m].agent.incarnation;
            if !orphan
                && *action
                    != (Action::Stop {
                        mode: StopMode::Immediate,
                    })
            {
                self.log(
                    m,
                    format!("ignored {action}: {:?} still runs", running.kind),
                );
                return;
            }
            self.abort_job(m);
        }
        let duration = self.rng.random_range(lo..=hi);
        let fails = fail_p > 0.0 && self.rng.random_bool(fail_p);
        let member = &mut self.members[m];
        match action {
            Action::StartReplica { upstream } => {
                member.pg.upstream = upstream.clone();
                member.agent.configured_upstream = upstream.clone();
            }
            Action::StartPrimary => member.pg.upstream = None,
            _ => {}
        }
        if matches!(
            action,
            Action::StartReplica { .. } | Action::StartPrimary | Action::Bootstrap
        ) {
            member.pg.ssn_conf = member.agent.configured_sync.clone();
        }
        if matches!(action, Action::StartReplica { .. } | Action::StartPrimary)
            && member.pg.data.is_some()
            && member.pg.process == Process::Stopped
        {
            member.pg.process = Process::Starting;
        }
        self.next_job_id += 1;
        let id = self.next_job_id;
        let finishes_at = self.now + duration;
        let owner = member.agent.incarnation;
        member.agent.last_failed = None;
        member.job = Some(Job {
            id,
            kind,
            action: action.clone(),
            finishes_at,
            fails,
            owner,
        });
        self.schedule(finishes_at, Event::JobDone { m, id });
    }

    /// The operation ends: apply its outcome and tell the agent that started it.
    pub(crate) fn finish_job(&mut self, m: usize, id: u64) {
        if self.members[m].job.as_ref().is_none_or(|j| j.id != id) {
            return;
        }
        let Some(job) = self.members[m].job.take() else {
            return;
        };
        let outcome = self.outcome(m, &job);
        match &outcome {
            Ok(()) => self.log(m, format!("{} done", job.action)),
            Err(e) => self.log(m, format!("{} failed: {e}", job.action)),
        }
        self.report_to_owner(m, &job, outcome.err());
    }

    /// The operation ends early with an error (its PostgreSQL died under it).
    pub(crate) fn fail_job(&mut self, m: usize, error: &str) {
        let Some(job) = self.members[m].job.take() else {
            return;
        };
        if job.kind == JobKind::Stop {
            // Stopping a postmaster that died: done.
            self.members[m].pg.halt();
            self.report_to_owner(m, &job, None);
            return;
        }
        if job.kind == JobKind::Bootstrap {
            self.members[m].pg.data = None;
        }
        self.log(m, format!("{} failed: {error}", job.action));
        self.report_to_owner(m, &job, Some(error.to_string()));
    }

    fn report_to_owner(&mut self, m: usize, job: &Job, error: Option<String>) {
        let agent = &mut self.members[m].agent;
        if !agent.alive || agent.incarnation != job.owner {
            return;
        }
        if let Some(error) = error {
            agent.last_failed = Some((job.kind, error));
        }
        self.trigger(m);
    }

    /// The job is killed with its agent or preempted: what it leaves behind.
    pub(crate) fn abort_job(&mut self, m: usize) {
        let Some(job) = self.members[m].job.take() else {
            return;
        };
        self.log(m, format!("{} interrupted", job.action));
        let pg = &mut self.members[m].pg;
        match job.kind {
            JobKind::Start if pg.process == Process::Starting => pg.halt(),
            // Simplification: a half-copied or half-initialized directory counts as empty (the
            // real agent moves it aside). An interrupted pg_rewind leaves the directory as it was.
            JobKind::Clone => pg.data = None,
            JobKind::Bootstrap => {
                pg.data = None;
                pg.halt();
            }
            _ => {}
        }
    }

    fn outcome(&mut self, m: usize, job: &Job) -> Result<(), String> {
        match &job.action {
            Action::Bootstrap => {
                if self.members[m].pg.data.is_some() {
                    return Err("data directory is not empty".into());
                }
                if job.fails {
                    // initdb removes what it created when it fails.
                    return Err("initdb failed".into());
                }
                let system_id = self.rng.random_range(1..u64::MAX);
                let pg = &mut self.members[m].pg;
                pg.data = Some(DataDir::new_cluster(system_id));
                pg.started(true, self.now, self.checkpoint_timeout_ms);
                pg.ssn = pg.ssn_conf.clone();
                Ok(())
            }
            Action::Clone { from } => {
                let (source, checkpoint_timeline) = self.source_data(m, from)?;
                if job.fails {
                    return Err("pg_basebackup failed".into());
                }
                let pg = &mut self.members[m].pg;
                if pg.data.is_some() || pg.process != Process::Stopped {
                    return Err("data directory is not empty".into());
                }
                pg.data = Some(DataDir {
                    was_primary: false,
                    checkpoint_timeline,
                    ..source
                });
                let member = self.members[m].name.clone();
                self.happenings.push(crate::Happening::Cloned {
                    at: self.now,
                    member,
                });
                Ok(())
            }
            Action::Rewind { from } => {
                let (source, source_checkpoint_timeline) = self.source_data(m, from)?;
                let pg = &mut self.members[m].pg;
                let Some(data) = pg.data.as_mut().filter(|_| pg.process == Process::Stopped) else {
                    return Err("no stopped data directory to rewind".into());
                };
                if data.system_id != source.system_id {
                    return Err("source and target clusters are from different systems".into());
                }
                // "no rewind required" does not fail.
                if job.fails && !data.can_follow(&source) {
                    return Err("pg_rewind failed".into());
                }
                let before = (data.history.clone(), data.lsn);
                data.rewind_to(&source, source_checkpoint_timeline);
                let discarded = (data.history.clone(), data.lsn) != before;
                let to = data.lsn;
                let member = self.members[m].name.clone();
                if discarded {
                    self.happenings.push(crate::Happening::WalDiscarded {
                        at: self.now,
                        member: member.clone(),
                        from: before.1,
                        to,
                    });
                }
                self.happenings.push(crate::Happening::Rewound {
                    at: self.now,
                    member,
                });
                Ok(())
            }
            Action::StartReplica { .. } | Action::StartPrimary => {
                let primary = job.action == Action::StartPrimary;
                let pg = &mut self.members[m].pg;
                if pg.process != Process::Starting {
                    return Err("PostgreSQL was not stopped when the start began".into());
                }
                if job.fails {
                    pg.halt();
                    return Err("PostgreSQL did not start".into());
                }
                let Some(data) = pg.data.as_mut() else {
                    return Err("no data directory".into());
                };
                data.was_primary = primary;
                if primary {
                    // Crash recovery of a primary ends with a checkpoint.
                    data.checkpoint();
                }
                pg.started(primary, self.now, self.checkpoint_timeout_ms);
                pg.ssn = pg.ssn_conf.clone();
                Ok(())
            }
            Action::Stop { mode } => {
                if *mode == StopMode::Immediate {
                    // No shutdown checkpoint: pg_control stays as it was.
                    self.members[m].pg.halt();
                    return Ok(());
                }
                if self.members[m].pg.is_running_primary() {
                    self.ship_all_wal(m);
                }
                if self.members[m].pg.is_running() {
                    self.members[m].pg.shut_down_cleanly();
                } else {
                    self.members[m].pg.halt();
                }
                Ok(())
            }
            Action::Promote => {
                let pg = &mut self.members[m].pg;
                if pg.data.is_none() || !pg.is_running_replica() {
                    return Err("PostgreSQL is not a running replica".into());
                }
                pg.promoted(self.now, self.checkpoint_timeout_ms);
                Ok(())
            }
            other => Err(format!("{other} is not a background operation")),
        }
    }

    /// A clean shutdown of primary `p`: every connected standby receives all of its WAL.
    fn ship_all_wal(&mut self, p: usize) {
        let Some(source) = self.members[p].pg.data.clone() else {
            return;
        };
        let standbys: Vec<usize> = self.connections(p).iter().map(|c| c.m).collect();
        for m in standbys {
            if let Some(d) = self.members[m].pg.data.as_mut() {
                d.replay_from(&source, source.lsn);
            }
        }
    }

    /// The data directory of a running member `from` that `m` can reach (clone, rewind), and
    /// the checkpoint timeline its pg_control gives the copy.
    fn source_data(&self, m: usize, from: &str) -> Result<(DataDir, u32), String> {
        let Some(src) = self.index_of(from) else {
            return Err(format!("unknown member {from}"));
        };
        if !self.net.linked(m, src) {
            return Err(format!("cannot connect to {from}"));
        }
        let source = &self.members[src].pg;
        match (&source.data, source.copy_source_checkpoint_timeline()) {
            (Some(data), Some(tli)) if source.is_running() => Ok((data.clone(), tli)),
            _ => Err(format!("{from} does not run PostgreSQL")),
        }
    }
}
