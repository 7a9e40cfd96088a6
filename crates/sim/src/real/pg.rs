//! The PostgreSQL world of the real-runtime simulation, and the agent's PostgreSQL port over
//! it ([`SimPostgres`]).
//!
//! Each member has a data directory (system id, timeline, position, the timeline history,
//! what pg_control says) and maybe a running postmaster. Time moves in ticks driven by
//! `super::Driver`: a primary that accepts connections takes writes, a replica streams from
//! the upstream its configuration names while that upstream runs and their timelines agree.
//! A replica started on a data directory that needs WAL it does not have (after pg_rewind or
//! a clone) accepts connections only once it streamed up to that point.
//!
//! WAL retention: a running server keeps the last `WAL_KEEP` of WAL (`wal_keep_size`), and
//! more for each physical slot on it, but never more than `SLOT_KEEP_MAX` for a slot
//! (`max_slot_wal_keep_size`): past that PostgreSQL invalidates the slot (`wal_status
//! lost`). A replica that needs WAL its upstream removed cannot stream; it logs "requested WAL
//! segment ... has already been removed" as PostgreSQL does, and the agent heals it by a new
//! clone. A replica whose `primary_slot_name` is missing or invalidated on the upstream cannot
//! stream either (until the leader's slot round creates it again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgbaton_agent::ports::{Busy, ConfigFiles, LogFrom, Postgres, WalLog};
use pgbaton_core::{Millis, SyncStandbyNames};
use pgbaton_postgres::{
    BootstrapCommand, ControlData, DataDirState, DbState, LogicalSlotSpec, PassFile, PgError,
    PgStatus, ReplicaMethod, ReplicationRow, RewindOutcome, SlotChanges, SlotPosition, StopMode,
    StreamTrouble, TimelineEnd, Upstream, WalReceiver,
};

use super::commits::{Commit, Ledger};

/// A replica or primary started this long ago answers (if it has the WAL it needs).
const START_MS: Millis = 300;
/// A replica that needs WAL from its upstream (after a clone or pg_rewind) replays it for
/// this long after it received it all.
const REPLAY_MS: Millis = 3_000;
/// WAL a primary writes per tick.
const WRITES_PER_TICK: u64 = 0x100;
/// WAL a replica receives per tick at most: one that is behind (a rejoining old primary
/// after pg_rewind, a clone) catches up at three times the write rate.
const STREAM_PER_TICK: u64 = 4 * WRITES_PER_TICK;
/// WAL a running server keeps without a slot (`wal_keep_size`): 12 s of writes at the
/// simulation's 50 ms tick.
pub(crate) const WAL_KEEP: u64 = 240 * WRITES_PER_TICK;
/// The most WAL a slot may hold back (`max_slot_wal_keep_size`): 15 s of writes. A replica
/// away longer loses its slot and is re-cloned; a shorter absence streams on from its slot.
pub(crate) const SLOT_KEEP_MAX: u64 = 300 * WRITES_PER_TICK;

/// PostgreSQL's `checkpoint_timeout` (5 min): a standby's restartpoints come this often.
const CHECKPOINT_TIMEOUT_MS: Millis = 300_000;
/// How often operations fail when `RealConfig::job_failures` is on.
const INITDB_FAILURE_P: f64 = 0.02;
const CLONE_FAILURE_P: f64 = 0.05;
const REWIND_FAILURE_P: f64 = 0.05;
const START_FAILURE_P: f64 = 0.03;

/// A physical replication slot on a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The oldest WAL it keeps.
    pub restart: u64,
    /// Invalidated by PostgreSQL: it held more than `SLOT_KEEP_MAX`; it keeps nothing.
    pub lost: bool,
}

/// A WAL segment's file name as PostgreSQL prints it (16 MB segments).
fn segment_name(timeline: u32, lsn: u64) -> String {
    let segno = lsn / 0x100_0000;
    format!("{timeline:08X}{:08X}{:08X}", segno / 0x100, segno % 0x100)
}

#[derive(Debug, Clone)]
pub(crate) struct Data {
    pub system_id: u64,
    pub timeline: u32,
    pub lsn: u64,
    /// (timeline, where it ended) for every timeline before `timeline`.
    pub history: Vec<(u32, u64)>,
    pub state: DbState,
    /// A started replica answers only from this position on.
    pub min_recovery: u64,
    /// The oldest WAL it still has (what it can send a replica from).
    pub oldest: u64,
    /// pg_control's checkpoint timeline: a primary's is its timeline; a standby updates it
    /// only at a restartpoint (every `CHECKPOINT_TIMEOUT_MS`, and at a clean shutdown), so
    /// right after a timeline switch it still names the old one.
    pub control_timeline: u32,
    /// When pg_control's timeline was last brought up to date.
    pub restartpoint_at: Millis,
    /// The timelines whose history file is in `pg_wal`: written at a promotion, fetched by
    /// the WAL receiver for the upstream's timelines, copied by pg_basebackup and pg_rewind,
    /// put there by the agent. A promotion picks the timeline after the newest of an unbroken
    /// run of them from its own (PostgreSQL's `findNewestTimeLine`): without the file of a
    /// lost branch's timeline it reuses that id.
    pub history_files: BTreeSet<u32>,
}

impl Data {
    /// The timeline a promotion now gets.
    fn next_timeline(&self) -> u32 {
        let mut newest = self.timeline;
        while self.history_files.contains(&(newest + 1)) {
            newest += 1;
        }
        newest + 1
    }

    /// What a WAL receiver, pg_basebackup or pg_rewind copies of `source`'s history files
    /// (those of its own timeline and earlier ones).
    fn take_history_files(&mut self, source: &Data) {
        self.history_files.extend(
            source
                .history_files
                .iter()
                .filter(|&&t| t <= source.timeline),
        );
    }
    /// Where `timeline` ended in this history (None: it did not end here).
    fn switch_point(&self, timeline: u32) -> Option<u64> {
        self.history
            .iter()
            .find(|(t, _)| *t == timeline)
            .map(|(_, lsn)| *lsn)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub pid: u32,
    pub primary: bool,
    pub started_at: Millis,
    pub answering: bool,
    /// The member primary_conninfo names, as last loaded (start or reload).
    pub upstream: Option<String>,
    /// primary_slot_name, as last loaded.
    pub slot: Option<String>,
    pub streaming: bool,
    /// A replica's WAL sender reached the upstream's position once since it connected
    /// (pg_stat_replication `state = 'streaming'`, not `catchup`): only then may a primary
    /// wait for it as a synchronous standby.
    pub caught_up: bool,
    /// synchronous_standby_names in force (as last loaded: start or reload).
    pub ssn: Option<SyncStandbyNames>,
}

#[derive(Debug)]
pub(crate) struct PgMember {
    pub name: String,
    pub data: Option<Data>,
    pub run: Option<Run>,
    /// What the configuration files say: standby.signal and primary_conninfo's member.
    pub conf_standby: bool,
    pub conf_upstream: Option<String>,
    pub conf_slot: Option<String>,
    /// synchronous_standby_names as the configuration files say.
    pub conf_ssn: Option<SyncStandbyNames>,
    /// A slow standby (slow disk): it flushes an eighth of what it is behind per tick.
    pub slow: bool,
    /// Client commits waiting for synchronous standbys (a primary's, in WAL order).
    pub pending: Vec<Commit>,
    /// Physical slots in the data directory.
    pub slots: BTreeMap<String, Slot>,
    /// The server log: what PostgreSQL wrote about streaming.
    pub log_lines: Vec<String>,
    /// When the WAL receiver last logged that it cannot stream (it retries every second).
    pub last_stream_error_at: Option<Millis>,
    /// The agent process: alive, stopped (SIGSTOP), and which start of it this is.
    pub agent_alive: bool,
    pub agent_frozen: bool,
    pub incarnation: u64,
    /// Replication and REST API connections to other members are cut.
    pub isolated: bool,
    /// This member's WAL receiver gets nothing.
    pub streaming_cut: bool,
    /// The stopped agent's loop, to wake when it continues.
    pub waker: Option<std::task::Waker>,
    /// The newest agent start whose lease guard has run: an older guard (of a killed
    /// agent) enforces its deadline until then, as `pgbaton lease-guard` does until a newer
    /// agent writes the lease file.
    pub fence_incarnation: u64,
    /// The lease guard's file (`pgbaton_agent::fence`): what the agent's guard last wrote.
    pub fence: Option<pgbaton_agent::fence::Fence>,
}

#[derive(Debug)]
pub(crate) struct PgWorld {
    pub now: Millis,
    pub members: Vec<PgMember>,
    pub next_pid: u32,
    pub next_system_id: u64,
    pub trace: Vec<String>,
    pub ledger: Ledger,
    /// What happened to PostgreSQL, for scenario tests (the driver adds faults and keys).
    pub happenings: Vec<crate::Happening>,
    /// The data of the primary on the newest timeline, as it last wrote (for the liveness
    /// check: a member promoted and lost within one check still made the newest history).
    pub newest_primary: Option<Data>,
    /// How the agent's adapter reads a replica's timeline (the old way on purpose, to show
    /// the checker catches what it caused).
    pub timeline_model: crate::TimelineModel,
    /// Deliberate faults (`super::RealFlaw`).
    pub flaws: Vec<super::RealFlaw>,
    /// Reads the leader key the moment a member becomes a primary (the checker's handle).
    pub key_reader: Option<pgbaton_dcs::MemoryDcs>,
    /// Members that became a primary since the driver last looked: when, who, and who held
    /// the leader key just then.
    pub new_primaries: Vec<(Millis, String, Option<String>)>,
    /// Operations fail now and then (initdb, pg_basebackup, pg_rewind, a start), as they
    /// do on real hosts (a full disk, a network hiccup, a bad setting): `None` when they
    /// never do.
    pub job_failures: Option<rand::rngs::StdRng>,
}

pub(crate) type Shared = Arc<Mutex<PgWorld>>;

pub(crate) fn lock(world: &Shared) -> MutexGuard<'_, PgWorld> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgWorld {
    pub fn new(names: &[String], seed: u64) -> Self {
        PgWorld {
            now: 0,
            members: names
                .iter()
                .map(|name| PgMember {
                    name: name.clone(),
                    data: None,
                    run: None,
                    conf_standby: false,
                    conf_upstream: None,
                    conf_slot: None,
                    conf_ssn: None,
                    slow: false,
                    pending: Vec::new(),
                    slots: BTreeMap::new(),
                    log_lines: Vec::new(),
                    last_stream_error_at: None,
                    agent_alive: false,
                    agent_frozen: false,
                    incarnation: 0,
                    isolated: false,
                    streaming_cut: false,
                    waker: None,
                    fence_incarnation: 0,
                    fence: None,
                })
                .collect(),
            next_pid: 100,
            next_system_id: 7_000_000_000_000_000_000 + seed * 1_000,
            trace: Vec::new(),
            ledger: Ledger::default(),
            happenings: Vec::new(),
            newest_primary: None,
            timeline_model: crate::TimelineModel::Fixed,
            flaws: Vec::new(),
            key_reader: None,
            new_primaries: Vec::new(),
            job_failures: None,
        }
    }

    /// Whether this operation fails (probability `p`), when operations may fail.
    fn operation_fails(&mut self, m: usize, what: &str, p: f64) -> bool {
        let fails = self
            .job_failures
            .as_mut()
            .is_some_and(|rng| rand::Rng::random_bool(rng, p));
        if fails {
            self.log(m, format!("{what} fails (injected)"));
        }
        fails
    }

    pub fn log(&mut self, m: usize, what: impl std::fmt::Display) {
        let line = format!("{:>7} {:<3} {what}", self.now, self.members[m].name);
        self.trace.push(line);
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The member named by a host (members' addresses are their names).
    fn member_at(&self, upstream: &Upstream) -> Option<usize> {
        self.index_of(&upstream.host)
    }

    pub fn linked(&self, a: usize, b: usize) -> bool {
        a == b || !(self.members[a].isolated || self.members[b].isolated)
    }

    pub fn running_primary(&self, m: usize) -> bool {
        self.members[m]
            .run
            .as_ref()
            .is_some_and(|r| r.primary && r.answering)
    }

    /// The postmaster dies (SIGKILL or SIGQUIT): pg_control keeps saying it was running.
    pub fn crash(&mut self, m: usize, why: &str) {
        if let Some(run) = self.members[m].run.take() {
            self.log(m, format!("PostgreSQL stops at once ({why})"));
            if run.primary && run.answering {
                self.primary_stopped(m);
            }
        }
    }

    fn happened(&mut self, h: crate::Happening) {
        self.happenings.push(h);
    }

    fn primary_stopped(&mut self, m: usize) {
        let (at, member) = (self.now, self.members[m].name.clone());
        self.happened(crate::Happening::PrimaryStopped { at, member });
    }

    fn became_primary(&mut self, m: usize) {
        let (at, member) = (self.now, self.members[m].name.clone());
        if let Some(reader) = &self.key_reader {
            let holder = reader
                .peek()
                .ok()
                .and_then(|state| state.leader_name().map(str::to_string));
            self.new_primaries.push((at, member.clone(), holder));
        }
        let timeline = self.members[m].data.as_ref().map_or(0, |d| d.timeline);
        self.happened(crate::Happening::BecamePrimary {
            at,
            member,
            timeline,
        });
    }

    /// One tick of PostgreSQL time: replicas receive what their upstreams had written
    /// before the tick (asynchronous replication lags by a tick), then primaries write.
    pub fn tick(&mut self, now: Millis) {
        self.now = now;
        for m in 0..self.members.len() {
            self.stream(m, now);
        }
        self.release_commits(now);
        for m in 0..self.members.len() {
            let Some(run) = self.members[m].run.clone().filter(|r| r.primary) else {
                continue;
            };
            if !run.answering && now >= run.started_at + START_MS {
                self.set_answering(m);
            }
            if run.answering {
                let d = self.members[m].data.as_mut().expect("data");
                d.control_timeline = d.timeline;
                let from = d.lsn;
                d.lsn += WRITES_PER_TICK;
                let to = d.lsn;
                let written = d.clone();
                self.note_primary(written);
                self.take_commits(m, from, to);
            }
        }
        for m in 0..self.members.len() {
            if self.members[m].run.as_ref().is_some_and(|r| r.answering) {
                self.remove_old_wal(m);
            }
        }
    }

    /// A checkpoint of a running server: WAL older than `wal_keep_size` and every valid
    /// slot's restart point goes; a slot holding more than `max_slot_wal_keep_size` is
    /// invalidated first.
    fn remove_old_wal(&mut self, m: usize) {
        let Some(lsn) = self.members[m].data.as_ref().map(|d| d.lsn) else {
            return;
        };
        let mut keep_from = lsn.saturating_sub(WAL_KEEP);
        let mut invalidated = Vec::new();
        for (name, slot) in self.members[m].slots.iter_mut() {
            if slot.lost {
                continue;
            }
            if lsn.saturating_sub(slot.restart) > SLOT_KEEP_MAX {
                slot.lost = true;
                invalidated.push(name.clone());
            } else {
                keep_from = keep_from.min(slot.restart);
            }
        }
        for name in invalidated {
            self.log(
                m,
                format!("replication slot {name} invalidated (max_slot_wal_keep_size)"),
            );
        }
        let d = self.members[m].data.as_mut().expect("data");
        d.oldest = d.oldest.max(keep_from);
    }

    /// The WAL receiver of `m` logs why it cannot stream, once per retry interval.
    fn stream_error(&mut self, m: usize, now: Millis, line: String) {
        let member = &mut self.members[m];
        if member
            .last_stream_error_at
            .is_some_and(|at| now < at + 1_000)
        {
            return;
        }
        member.last_stream_error_at = Some(now);
        member.log_lines.push(line.clone());
        self.log(m, line);
    }

    /// A replica streams from its upstream while it can, and answers once consistent.
    fn stream(&mut self, m: usize, now: Millis) {
        {
            let Some(run) = self.members[m].run.clone().filter(|r| !r.primary) else {
                return;
            };
            let data = self.members[m]
                .data
                .clone()
                .expect("a running server has data");
            let source = run.upstream.as_deref().and_then(|u| self.index_of(u));
            let slow = self.members[m].slow;
            let mut streaming = false;
            let mut caught_up = false;
            if let Some(u) = source.filter(|&u| u != m) {
                let up = &self.members[u];
                let can = !self.members[m].streaming_cut
                    && self.linked(m, u)
                    && up.run.as_ref().is_some_and(|r| r.answering);
                if let (true, Some(ud)) = (can, up.data.clone()) {
                    let compatible = ud.system_id == data.system_id
                        && (ud.timeline == data.timeline && data.lsn <= ud.lsn
                            || ud.timeline > data.timeline
                                && ud
                                    .switch_point(data.timeline)
                                    .is_some_and(|end| data.lsn <= end));
                    // The slot primary_slot_name names on the upstream: absent, or lost?
                    let slot = run
                        .slot
                        .as_ref()
                        .map(|name| (name.clone(), up.slots.get(name).map(|s| s.lost)));
                    if !compatible && ud.system_id == data.system_id && ud.timeline < data.timeline
                    {
                        self.stream_error(
                            m,
                            now,
                            format!(
                                "FATAL:  highest timeline {} of the primary is behind recovery timeline {}",
                                ud.timeline, data.timeline
                            ),
                        );
                    }
                    if !compatible && ud.system_id == data.system_id && ud.timeline > data.timeline
                    {
                        // The upstream's history does not contain this replica's position on
                        // its timeline: the WAL receiver is refused (PostgreSQL's words).
                        self.stream_error(
                            m,
                            now,
                            format!(
                                "FATAL:  could not start WAL streaming: ERROR:  requested starting point {}/{:X} on timeline {} is not in this server's history",
                                data.lsn >> 32,
                                data.lsn & 0xFFFF_FFFF,
                                data.timeline
                            ),
                        );
                    }
                    if compatible {
                        match slot {
                            Some((name, None)) => self.stream_error(
                                m,
                                now,
                                format!("FATAL:  could not start WAL streaming: ERROR:  replication slot \"{name}\" does not exist"),
                            ),
                            Some((name, Some(true))) => self.stream_error(
                                m,
                                now,
                                format!("FATAL:  could not start WAL streaming: ERROR:  can no longer get changes from replication slot \"{name}\""),
                            ),
                            _ if data.lsn < ud.oldest => {
                                let segment = segment_name(data.timeline, data.lsn);
                                self.stream_error(
                                    m,
                                    now,
                                    format!("FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment {segment} has already been removed"),
                                );
                            }
                            _ => {
                                streaming = true;
                                let d = self.members[m].data.as_mut().expect("data");
                                let was = d.lsn;
                                let step = if slow {
                                    (ud.lsn.saturating_sub(d.lsn) / 8).max(1)
                                } else {
                                    STREAM_PER_TICK
                                };
                                d.lsn = ud.lsn.min(d.lsn + step);
                                caught_up = d.lsn == ud.lsn;
                                d.timeline = ud.timeline;
                                d.history = ud.history.clone();
                                d.take_history_files(&ud);
                                let lsn = d.lsn;
                                if !run.streaming {
                                    let line = format!(
                                        "LOG:  started streaming WAL from primary at {was:X} on timeline {}",
                                        ud.timeline
                                    );
                                    self.members[m].log_lines.push(line);
                                    self.members[m].last_stream_error_at = None;
                                }
                                if let Some(name) = &run.slot {
                                    if let Some(s) = self.members[u].slots.get_mut(name) {
                                        s.restart = s.restart.max(lsn);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if let Some(r) = self.members[m].run.as_mut() {
                r.streaming = streaming;
                r.caught_up = streaming && (r.caught_up || caught_up);
            }
            if let Some(d) = self.members[m].data.as_mut() {
                if now >= d.restartpoint_at + CHECKPOINT_TIMEOUT_MS {
                    d.control_timeline = d.timeline;
                    d.restartpoint_at = now;
                }
            }
            let d = self.members[m].data.as_ref().expect("data");
            let ready_at = run.started_at
                + if d.min_recovery > 0 {
                    REPLAY_MS
                } else {
                    START_MS
                };
            if !run.answering && now >= ready_at && d.lsn >= d.min_recovery {
                self.set_answering(m);
            }
        }
    }

    fn note_primary(&mut self, data: Data) {
        let newer = self
            .newest_primary
            .as_ref()
            .is_none_or(|n| n.system_id != data.system_id || data.timeline >= n.timeline);
        if newer {
            self.newest_primary = Some(data);
        }
    }

    /// A clean shutdown of primary `m` (fast or smart): its WAL senders send everything up
    /// to the shutdown checkpoint to the standbys streaming from it before they exit, as
    /// PostgreSQL's do; a switchover's candidate then has the old leader's last WAL.
    fn send_final_wal(&mut self, m: usize) {
        let Some(source) = self.members[m].data.clone() else {
            return;
        };
        let name = self.members[m].name.clone();
        for r in 0..self.members.len() {
            let connected = r != m
                && !self.members[r].streaming_cut
                && self.linked(r, m)
                && self.members[r].run.as_ref().is_some_and(|run| {
                    !run.primary && run.streaming && run.upstream.as_deref() == Some(&name)
                });
            if !connected {
                continue;
            }
            if let Some(d) = self.members[r].data.as_mut() {
                if d.system_id == source.system_id && d.timeline == source.timeline {
                    d.lsn = d.lsn.max(source.lsn);
                }
            }
        }
    }

    fn set_answering(&mut self, m: usize) {
        let member = &mut self.members[m];
        let Some(run) = member.run.as_mut() else {
            return;
        };
        run.answering = true;
        let primary = run.primary;
        if let Some(d) = member.data.as_mut() {
            d.state = if primary {
                DbState::InProduction
            } else {
                DbState::InArchiveRecovery
            };
            d.min_recovery = 0;
        }
        if primary {
            self.check_new_primary(m, "started as primary");
            self.became_primary(m);
        }
        self.log(
            m,
            if primary {
                "PostgreSQL accepts writes (primary)"
            } else {
                "PostgreSQL accepts read-only connections (replica)"
            },
        );
    }
}

/// The agent's PostgreSQL port for member `m`, handed to one start of its agent.
#[derive(Clone)]
pub(crate) struct SimPostgres {
    pub world: Shared,
    pub m: usize,
    pub incarnation: u64,
}

fn refused(what: &str, detail: &str) -> PgError {
    PgError::UnexpectedResult {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

impl SimPostgres {
    /// The agent process this handle belongs to is gone (a later start replaced it, or it
    /// was killed): it does nothing any more.
    fn gone(&self, w: &PgWorld) -> bool {
        let member = &w.members[self.m];
        member.incarnation != self.incarnation || !member.agent_alive
    }

    /// SIGSTOP this start of the agent now, if it still runs; returns on SIGCONT (the driver
    /// clears `agent_frozen` when the fault heals).
    pub(crate) async fn stop_here(&self, what: &str) {
        {
            let mut w = lock(&self.world);
            if self.gone(&w) {
                return;
            }
            w.members[self.m].agent_frozen = true;
            w.log(self.m, format!("agent stopped (SIGSTOP) after {what}"));
        }
        self.wait_running().await;
    }

    /// A stopped (SIGSTOP) agent does nothing until it continues.
    async fn wait_running(&self) {
        loop {
            let frozen = {
                let w = lock(&self.world);
                w.members[self.m].agent_frozen && !self.gone(&w)
            };
            if !frozen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Run `f` on the world as this agent, if it still exists.
    async fn act<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut PgWorld, usize) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        self.wait_running().await;
        let mut w = lock(&self.world);
        if self.gone(&w) {
            return Err(refused(what, "the agent process is gone"));
        }
        f(&mut w, self.m)
    }

    fn act_now<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut PgWorld, usize) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let mut w = lock(&self.world);
        if self.gone(&w) {
            return Err(refused(what, "the agent process is gone"));
        }
        f(&mut w, self.m)
    }
}

fn status_of(w: &PgWorld, m: usize) -> Result<PgStatus, PgError> {
    let member = &w.members[m];
    let run = member
        .run
        .as_ref()
        .ok_or_else(|| refused("connect", "no server runs"))?;
    if !run.answering {
        return Err(refused("connect", "the database system is starting up"));
    }
    let d = member.data.as_ref().expect("a running server has data");
    let (wal_lsn, receive_lsn, replay_lsn) = if run.primary {
        (Some(d.lsn), None, None)
    } else {
        (None, Some(d.lsn), Some(d.lsn))
    };
    // As the adapter reads it (`pgbaton_core::member_timeline`): the replay timeline
    // (IDENTIFY_SYSTEM), the WAL receiver's while it streams, pg_control's as a last resort;
    // the old adapter did not ask for the replay timeline.
    let (timeline, timeline_source) = pgbaton_core::member_timeline(
        run.primary.then_some(d.timeline),
        (!run.primary && w.timeline_model == crate::TimelineModel::Fixed).then_some(d.timeline),
        (!run.primary && run.streaming).then_some(d.timeline),
        d.control_timeline,
    );
    let wal_receiver = (!run.primary && run.streaming).then(|| WalReceiver {
        status: "streaming".to_string(),
        sender_host: run.upstream.clone(),
        sender_port: Some(5432),
        slot_name: None,
        received_tli: d.timeline,
    });
    Ok(PgStatus {
        in_recovery: !run.primary,
        server_version: 150_000,
        system_identifier: d.system_id,
        postmaster_start_time: format!("{} ms", run.started_at),
        timeline,
        timeline_source,
        wal_lsn,
        receive_lsn,
        replay_lsn,
        replay_timestamp: None,
        replay_paused: false,
        wal_receiver,
        replication: replication_rows(w, m),
        slots: Vec::new(),
        pending_restart: false,
        read_only: !run.primary,
    })
}

/// pg_stat_replication on a running primary.
fn replication_rows(w: &PgWorld, p: usize) -> Vec<ReplicationRow> {
    if !w.running_primary(p) {
        return Vec::new();
    }
    let conns = w.connections(p);
    let ssn = w.members[p].run.as_ref().and_then(|r| r.ssn.clone());
    let sync = crate::syncrep::synchronous(ssn.as_ref(), &conns);
    let quorum = matches!(ssn, Some(SyncStandbyNames::Any { .. }));
    conns
        .iter()
        .zip(sync)
        .map(|(c, synchronous)| ReplicationRow {
            pid: 1_000 + c.m as i32,
            usename: "replicator".to_string(),
            application_name: c.name.to_string(),
            client_addr: None,
            state: if c.streaming { "streaming" } else { "catchup" }.to_string(),
            sync_state: match (synchronous, quorum) {
                (true, true) => "quorum",
                (true, false) => "sync",
                (false, _) => "async",
            }
            .to_string(),
            sync_priority: 0,
            replay_lsn: Some(c.flush),
            flush_lsn: Some(c.flush),
        })
        .collect()
}

/// The agent's reader of the simulated server log, as `WalLogScanner` reads the real one.
struct SimWalLog {
    world: Shared,
    m: usize,
    next: usize,
    missing: Option<StreamTrouble>,
}

impl WalLog for SimWalLog {
    fn poll(&mut self) -> Option<StreamTrouble> {
        let w = lock(&self.world);
        let lines = &w.members[self.m].log_lines;
        for line in lines.iter().skip(self.next) {
            match pgbaton_postgres::parse_line(line) {
                Some(pgbaton_postgres::LogEvent::SegmentRemoved(segment)) => {
                    self.missing = Some(StreamTrouble::SegmentRemoved(segment))
                }
                Some(pgbaton_postgres::LogEvent::Forked) => {
                    self.missing = Some(StreamTrouble::Forked(line.clone()))
                }
                Some(pgbaton_postgres::LogEvent::StreamingStarted) => self.missing = None,
                None => {}
            }
        }
        self.next = lines.len();
        self.missing.clone()
    }
}

impl Postgres for SimPostgres {
    async fn postmaster_running(&self) -> bool {
        lock(&self.world).members[self.m].run.is_some()
    }

    fn try_postmaster_running(&self) -> Result<bool, Busy> {
        Ok(lock(&self.world).members[self.m].run.is_some())
    }

    fn try_postmaster_pid(&self) -> Result<Option<u32>, Busy> {
        // Only the lease guard asks this, every tick: this start's guard runs.
        let mut w = lock(&self.world);
        let member = &mut w.members[self.m];
        member.fence_incarnation = member.fence_incarnation.max(self.incarnation);
        Ok(member.run.as_ref().map(|r| r.pid))
    }

    async fn status(&self, _timeout: Duration) -> Result<PgStatus, PgError> {
        self.act("query_status", |w, m| status_of(w, m)).await
    }

    fn data_dir_state(&self) -> Result<DataDirState, PgError> {
        let w = lock(&self.world);
        Ok(match &w.members[self.m].data {
            None => DataDirState::Missing,
            Some(d) => DataDirState::Initialized(ControlData {
                system_identifier: d.system_id,
                state: d.state.clone(),
                timeline: d.control_timeline,
                checkpoint_lsn: d.lsn,
                redo_lsn: d.lsn,
                min_recovery_end_lsn: d.min_recovery,
                min_recovery_end_timeline: d.timeline,
                data_checksums: true,
                wal_log_hints: true,
            }),
        })
    }

    fn timeline_history(&self, timeline: u32) -> Result<Vec<TimelineEnd>, PgError> {
        let w = lock(&self.world);
        let Some(d) = &w.members[self.m].data else {
            return Ok(Vec::new());
        };
        Ok(d.history
            .iter()
            .filter(|(t, _)| *t < timeline)
            .map(|&(timeline, switch_lsn)| TimelineEnd {
                timeline,
                switch_lsn,
                reason: "no recovery target specified".to_string(),
            })
            .collect())
    }

    fn oldest_wal_lsn(&self) -> Result<Option<u64>, PgError> {
        Ok(lock(&self.world).members[self.m]
            .data
            .as_ref()
            .map(|d| d.oldest))
    }

    async fn show(&self, setting: &str, _timeout: Duration) -> Result<String, PgError> {
        self.act(&format!("SHOW {setting}"), |w, m| {
            status_of(w, m)?;
            match setting {
                "synchronous_standby_names" => Ok(w.members[m]
                    .run
                    .as_ref()
                    .and_then(|r| r.ssn.as_ref())
                    .map(|n| n.to_setting())
                    .unwrap_or_default()),
                _ => Err(refused(&format!("SHOW {setting}"), "not modelled")),
            }
        })
        .await
    }

    fn log_file(&self) -> PathBuf {
        PathBuf::from(format!("sim/{}/postgresql.log", self.m))
    }

    fn wal_log(&self, from: LogFrom) -> Box<dyn WalLog> {
        let len = lock(&self.world).members[self.m].log_lines.len();
        let next = match from {
            LogFrom::End => len,
            // A few lines of what it logged before the agent started.
            LogFrom::Tail(_) => len.saturating_sub(20),
        };
        Box::new(SimWalLog {
            world: self.world.clone(),
            m: self.m,
            next,
            missing: None,
        })
    }

    async fn adopt(&self) -> Result<Option<u32>, PgError> {
        Ok(lock(&self.world).members[self.m]
            .run
            .as_ref()
            .map(|r| r.pid))
    }

    async fn spawn(&self) -> Result<(), String> {
        self.act("start", |w, m| {
            if let Some(run) = &w.members[m].run {
                return Err(refused("start", &format!("already runs (pid {})", run.pid)));
            }
            if w.members[m].data.is_none() {
                return Err(refused("start", "no data directory"));
            }
            if w.operation_fails(m, "start", START_FAILURE_P) {
                return Err(refused(
                    "start",
                    "the postmaster exited during start (injected failure)",
                ));
            }
            let member = &w.members[m];
            let primary = !member.conf_standby;
            let upstream = member.conf_upstream.clone().filter(|_| !primary);
            let slot = member.conf_slot.clone().filter(|_| !primary);
            let ssn = member.conf_ssn.clone();
            let pid = w.next_pid;
            w.next_pid += 1;
            let now = w.now;
            w.members[m].run = Some(Run {
                pid,
                primary,
                started_at: now,
                answering: false,
                upstream: upstream.clone(),
                slot,
                streaming: false,
                caught_up: false,
                ssn,
            });
            let role = match &upstream {
                _ if primary => "primary".to_string(),
                Some(u) => format!("replica of {u}"),
                None => "replica without upstream".to_string(),
            };
            w.log(m, format!("PostgreSQL starts as {role}"));
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn stop(&self, mode: StopMode, _timeout: Duration) -> Result<(), String> {
        self.act("stop", |w, m| {
            if mode != StopMode::Immediate
                && w.members[m]
                    .run
                    .as_ref()
                    .is_some_and(|r| r.primary && r.answering)
            {
                w.send_final_wal(m);
            }
            let Some(run) = w.members[m].run.take() else {
                return Ok(());
            };
            if let Some(d) = w.members[m].data.as_mut() {
                if mode != StopMode::Immediate {
                    // The shutdown checkpoint (restartpoint on a standby).
                    d.control_timeline = d.timeline;
                    d.restartpoint_at = w.now;
                }
                d.state = match (mode, run.primary) {
                    (StopMode::Immediate, true) => DbState::InProduction,
                    (StopMode::Immediate, false) => DbState::InArchiveRecovery,
                    (_, true) => DbState::ShutDown,
                    (_, false) => DbState::ShutDownInRecovery,
                };
            }
            w.log(m, format!("PostgreSQL stopped ({mode:?})"));
            if run.primary && run.answering {
                w.primary_stopped(m);
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn reload(&self) -> Option<Result<(), PgError>> {
        let result = self
            .act("reload", |w, m| {
                let member = &mut w.members[m];
                let conf = member.conf_upstream.clone();
                let conf_slot = member.conf_slot.clone();
                let conf_ssn = member.conf_ssn.clone();
                let frozen_conninfo = w.flaws.contains(&super::RealFlaw::NoRepointWhileStarting);
                let member = &mut w.members[m];
                let Some(run) = member.run.as_mut() else {
                    return Ok(false);
                };
                let conf = if frozen_conninfo && !run.answering {
                    run.upstream.clone()
                } else {
                    conf
                };
                run.ssn = conf_ssn;
                if !run.primary {
                    run.slot = conf_slot;
                }
                if !run.primary && run.upstream != conf {
                    run.upstream = conf.clone();
                    let when = if run.answering { "" } else { " while starting" };
                    w.log(m, format!("primary_conninfo reloaded{when}: {conf:?}"));
                }
                Ok(true)
            })
            .await;
        match result {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn quit_immediately(&self, pid: u32) {
        // The lease guard (and the lease-guard process it stands for here): works, even
        // when this agent is stopped or dead, until the guard of a later start runs.
        let mut w = lock(&self.world);
        if w.members[self.m].fence_incarnation > self.incarnation
            || w.flaws.contains(&super::RealFlaw::LeaseGuardIgnored)
        {
            return;
        }
        if w.members[self.m].run.as_ref().is_some_and(|r| r.pid == pid) {
            w.crash(self.m, "SIGQUIT from the lease guard");
        }
    }

    fn write_config(&self, files: &ConfigFiles) -> Result<(), PgError> {
        self.act_now("write_config", |w, m| {
            let upstream = files
                .standby
                .as_ref()
                .and_then(|s| s.upstream.as_ref())
                .and_then(|u| w.member_at(u))
                .map(|u| w.members[u].name.clone());
            let slot = files
                .standby
                .as_ref()
                .filter(|s| s.upstream.is_some())
                .and_then(|s| s.slot_name.clone());
            let ssn = files
                .parameters
                .get("synchronous_standby_names")
                .map(|v| SyncStandbyNames::parse_setting(v))
                .transpose()
                .map_err(|e| refused("write_config", &e))?
                .flatten();
            let member = &mut w.members[m];
            member.conf_ssn = ssn;
            member.conf_standby = files.standby.is_some();
            member.conf_upstream = upstream;
            member.conf_slot = slot;
            Ok(())
        })
    }

    fn install_timeline_history(
        &self,
        timeline: u32,
        _ended: &[(u32, u64)],
    ) -> Result<bool, PgError> {
        self.act_now("install_timeline_history", |w, m| {
            let Some(d) = w.members[m].data.as_mut() else {
                return Err(refused("install_timeline_history", "no data directory"));
            };
            Ok(d.history_files.insert(timeline))
        })
    }

    fn move_aside(&self, reason: &str) -> Result<PathBuf, PgError> {
        self.act_now("move_aside", |w, m| {
            if w.members[m].run.is_some() {
                return Err(refused("move_aside", "PostgreSQL runs"));
            }
            w.members[m].data = None;
            w.members[m].slots.clear();
            w.log(m, format!("data directory moved aside ({reason})"));
            Ok(PathBuf::from(format!("sim/{m}/data.{reason}")))
        })
    }

    async fn initdb(&self, _options: &[String]) -> Result<(), PgError> {
        self.act("initdb", |w, m| {
            if w.members[m].data.is_some() {
                return Err(refused("initdb", "the data directory is not empty"));
            }
            if w.operation_fails(m, "initdb", INITDB_FAILURE_P) {
                return Err(refused("initdb", "initdb failed (injected failure)"));
            }
            let system_id = w.next_system_id;
            w.next_system_id += 1;
            w.members[m].data = Some(Data {
                system_id,
                timeline: 1,
                lsn: 0x0100_0000,
                history: Vec::new(),
                history_files: Default::default(),
                state: DbState::ShutDown,
                min_recovery: 0,
                oldest: 0x0100_0000,
                control_timeline: 1,
                restartpoint_at: 0,
            });
            w.log(m, format!("initdb: system {system_id}"));
            Ok(())
        })
        .await
    }

    async fn ensure_users(
        &self,
        _users: &[(String, Option<String>, Vec<String>)],
        _timeout: Duration,
    ) -> Result<(), PgError> {
        self.act("ensure_users", |w, m| status_of(w, m).map(drop))
            .await
    }

    async fn bootstrap_by_command(
        &self,
        _method: &BootstrapCommand,
        _scope: &str,
    ) -> Result<BTreeMap<String, String>, PgError> {
        Err(refused("bootstrap.method", "not modelled"))
    }

    async fn wait_until_promoted(&self, _timeout: Duration) -> Result<(), PgError> {
        Err(refused("bootstrap.method", "not modelled"))
    }

    async fn create_replica(
        &self,
        from: &Upstream,
        _methods: &[ReplicaMethod],
        _scope: &str,
        _passfile: Option<&PassFile>,
    ) -> Result<(), PgError> {
        // pg_basebackup takes a while.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.act("pg_basebackup", |w, m| {
            let source = w
                .member_at(from)
                .filter(|&u| w.linked(m, u))
                .filter(|&u| w.members[u].run.as_ref().is_some_and(|r| r.answering))
                .ok_or_else(|| refused("pg_basebackup", "the source does not answer"))?;
            if w.members[m].data.is_some() {
                return Err(refused("pg_basebackup", "the data directory is not empty"));
            }
            if w.operation_fails(m, "pg_basebackup", CLONE_FAILURE_P) {
                return Err(refused(
                    "pg_basebackup",
                    "the copy broke off (injected failure)",
                ));
            }
            let mut data = w.members[source].data.clone().expect("running: data");
            data.state = DbState::InArchiveRecovery;
            data.min_recovery = data.lsn;
            // The copy holds the WAL from its start on, nothing older; its pg_control is the
            // backup's checkpoint, on the source's timeline.
            data.oldest = data.lsn;
            data.control_timeline = data.timeline;
            data.restartpoint_at = w.now;
            let name = w.members[source].name.clone();
            w.members[m].data = Some(data);
            w.members[m].slots.clear();
            w.log(m, format!("cloned from {name}"));
            let (at, member) = (w.now, w.members[m].name.clone());
            w.happened(crate::Happening::Cloned { at, member });
            Ok(())
        })
        .await
    }

    async fn rewind(
        &self,
        from: &Upstream,
        _passfile: Option<&PassFile>,
    ) -> Result<RewindOutcome, PgError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.act("pg_rewind", |w, m| {
            let source = w
                .member_at(from)
                .filter(|&u| w.linked(m, u))
                .filter(|&u| w.members[u].run.as_ref().is_some_and(|r| r.answering))
                // As pg_rewind: it fails connecting, before it touches the target.
                .ok_or_else(|| PgError::RewindSourceUnreachable {
                    source_server: format!("{}:{}", from.host, from.port),
                    output_tail: "connection to server failed: Connection refused".into(),
                })?;
            if w.members[m].run.is_some() {
                return Err(refused("pg_rewind", "PostgreSQL runs"));
            }
            let src = w.members[source].data.clone().expect("running: data");
            let name = w.members[source].name.clone();
            if w.members[m].data.is_some() && w.operation_fails(m, "pg_rewind", REWIND_FAILURE_P) {
                return Err(refused(
                    "pg_rewind",
                    "pg_rewind failed before it changed anything (injected failure)",
                ));
            }
            let Some(d) = w.members[m].data.as_mut() else {
                return Err(refused("pg_rewind", "no data directory"));
            };
            if d.system_id != src.system_id {
                return Err(refused("pg_rewind", "another system"));
            }
            let diverged = !(src.timeline == d.timeline && d.lsn <= src.lsn
                || src.switch_point(d.timeline).is_some_and(|end| d.lsn <= end));
            if !diverged {
                return Ok(RewindOutcome::NotNeeded);
            }
            let end = src.switch_point(d.timeline).unwrap_or(src.lsn).min(d.lsn);
            let discarded = (d.lsn > end).then_some((d.lsn, end));
            // pg_rewind copies the source's WAL from the divergence on, as far as it had
            // written when the files were listed (here: a tick of writes before the end of
            // the rewind, which `min_recovery` names): the target replays that from its own
            // pg_wal and needs only the rest from its upstream.
            d.lsn = end.max(src.lsn.saturating_sub(WRITES_PER_TICK));
            d.timeline = src.timeline;
            d.control_timeline = src.timeline;
            d.history = src.history.clone();
            d.take_history_files(&src);
            d.state = DbState::InArchiveRecovery;
            d.min_recovery = src.lsn;
            d.oldest = d.oldest.min(d.lsn);
            w.log(m, format!("rewound to {name}'s timeline {}", src.timeline));
            let (at, member) = (w.now, w.members[m].name.clone());
            if let Some((from, to)) = discarded {
                w.happened(crate::Happening::WalDiscarded {
                    at,
                    member: member.clone(),
                    from,
                    to,
                });
            }
            w.happened(crate::Happening::Rewound { at, member });
            Ok(RewindOutcome::Rewound)
        })
        .await
    }

    async fn promote(&self, _timeout: Duration) -> Result<(), PgError> {
        self.act("promote", |w, m| {
            let member = &mut w.members[m];
            let Some(run) = member.run.as_mut().filter(|r| r.answering) else {
                return Err(refused("promote", "PostgreSQL does not answer"));
            };
            if run.primary {
                return Ok(());
            }
            run.primary = true;
            run.upstream = None;
            run.streaming = false;
            member.conf_standby = false;
            let d = member.data.as_mut().expect("running: data");
            d.history.push((d.timeline, d.lsn));
            d.timeline = d.next_timeline();
            d.history_files.insert(d.timeline);
            d.control_timeline = d.timeline;
            d.state = DbState::InProduction;
            let timeline = d.timeline;
            let promoted = d.clone();
            w.note_primary(promoted);
            w.log(m, format!("promoted: timeline {timeline}"));
            w.became_primary(m);
            w.check_new_primary(m, "promoted");
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self, _timeout: Duration) -> Result<(), PgError> {
        self.act("checkpoint", |w, m| status_of(w, m).map(drop))
            .await
    }

    async fn sync_physical_slots(
        &self,
        wanted: &BTreeSet<String>,
        keep: &BTreeSet<String>,
        _timeout: Duration,
    ) -> Result<SlotChanges, PgError> {
        self.act("sync_physical_slots", |w, m| {
            status_of(w, m)?;
            let lsn = w.members[m].data.as_ref().map_or(0, |d| d.lsn);
            let mut changes = SlotChanges::default();
            let slots = &mut w.members[m].slots;
            for name in wanted {
                match slots.get(name) {
                    None => {
                        changes.created.push(name.clone());
                    }
                    Some(slot) if slot.lost => changes.recreated.push(name.clone()),
                    Some(_) => continue,
                }
                // Created reserving WAL at once, as the adapter does.
                slots.insert(
                    name.clone(),
                    Slot {
                        restart: lsn,
                        lost: false,
                    },
                );
            }
            slots.retain(|name, _| {
                let stays = wanted.contains(name) || keep.contains(name);
                if !stays {
                    changes.dropped.push(name.clone());
                }
                stays
            });
            for name in &changes.recreated {
                w.log(
                    m,
                    format!("replication slot {name} invalidated: created again"),
                );
            }
            Ok(changes)
        })
        .await
    }

    async fn ensure_logical_slots(
        &self,
        _wanted: &[LogicalSlotSpec],
        _timeout: Duration,
    ) -> Result<Vec<String>, PgError> {
        Ok(Vec::new())
    }

    async fn logical_slot_positions(
        &self,
        _timeout: Duration,
    ) -> Result<BTreeMap<String, SlotPosition>, PgError> {
        Ok(BTreeMap::new())
    }

    async fn drop_logical_slots(
        &self,
        _names: &[String],
        _timeout: Duration,
    ) -> Result<Vec<String>, PgError> {
        Ok(Vec::new())
    }

    async fn advance_slot(
        &self,
        name: &str,
        _database: &str,
        _lsn: u64,
        _timeout: Duration,
    ) -> Result<u64, PgError> {
        Err(refused(&format!("advance slot {name}"), "not modelled"))
    }

    async fn read_slot_state(
        &self,
        _upstream: &Upstream,
        name: &str,
        _timeout: Duration,
    ) -> Result<Vec<u8>, PgError> {
        Err(refused(&format!("read slot {name}"), "not modelled"))
    }

    fn install_slot_state(&self, name: &str, _state: &[u8]) -> Result<(), PgError> {
        Err(refused(&format!("install slot {name}"), "not modelled"))
    }
}
