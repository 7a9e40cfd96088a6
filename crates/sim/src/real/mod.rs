//! The real-runtime simulation: N real [`pgbaton_agent::Agent`]s, each with simulated ports —
//! the in-memory DCS (`pgbaton_dcs::MemoryDcs`: leases that expire, a switch per member for
//! partitions and outages), a PostgreSQL world model ([`pg`]), peers' REST APIs answered from
//! the other agents' published status, and a wall clock derived from virtual time.
//!
//! Everything runs on one current-thread tokio runtime with paused time: a task runs until it
//! waits, and when every task waits the clock jumps to the next timer. Nothing reads real
//! time, the network or the disk, and the agent's wait loop selects in a fixed order
//! (`biased;`), so one seed gives one schedule and one trace. The driver below is one more
//! task: every tick it advances PostgreSQL (writes, streaming), starts and heals faults, and
//! checks the promises.
//!
//! Faults from `faults.rs`: member crash, postmaster kill, agent kill, agent stop (SIGSTOP:
//! the agent's loop and its PostgreSQL operations wait; its lease guard, standing in for the
//! `pgbaton lease-guard` process, does not), partition from the DCS, DCS outage and message
//! delays (`dcs.rs`: requests hang or are slow), isolation from the other members,
//! replication cut, switchover. Slow standbys are not modelled here (noted in the trace).
//! WAL retention and replication slots are (`pg.rs`): a member away for long loses the WAL
//! it needs and is re-cloned by its agent.
//!
//! Promises checked every tick: never two PostgreSQL primaries accepting writes at once; no
//! leaderless stretch over `ttl + loop_wait + 2 s` while a member could lead; a member that
//! could follow the leader does within 30 s; after the last fault healed, one leader with
//! every member streaming from it within the liveness bound.

mod commits;
mod dcs;
mod peers;
mod pg;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use pgbaton_agent::{settings, Agent, Ports};
use pgbaton_api::NodeStatus;
use pgbaton_config::template::{MemberYaml, Synchronous};
use pgbaton_core::{Millis, SyncConfig, SyncMode};
use pgbaton_dcs::{ClusterPath, ClusterState, Dcs, FailoverDoc, MemoryDcs, MemoryStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::faults::{
    random_quick_succession, random_schedule, Candidate, FaultKind, ScriptedFault, Target,
};
use crate::report::ViolationKind;
use crate::{Ack, Happening, Violation};
use peers::{Endpoints, SimHost, SimPeers, Statuses};
use pg::{lock, PgWorld, SimPostgres};

/// A deliberate fault, to show the checker catches what it causes: the faults the chaos suite
/// once found in the runtime, put back at the port, and the agent's own duties left undone
/// (`pgbaton_agent::flaws`); none in every real run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealFlaw {
    /// The lease guard's SIGQUIT does nothing (no `pgbaton lease-guard` process): a stopped
    /// or dead leader agent's primary keeps accepting writes past its lease.
    LeaseGuardIgnored,
    /// A replica still starting does not take a new `primary_conninfo` on reload: it waits
    /// for WAL from an upstream that may be gone.
    NoRepointWhileStarting,
    /// The DCS adapter reports a keepalive's lease from when the answer arrived, not from
    /// when the request was sent: the leader believes its lease lasts longer than etcd does.
    LeaseFromAnswerTime,
    /// A duty of the agent runtime left undone.
    Agent(pgbaton_agent::flaws::Flaw),
}

/// One run of the real-runtime simulation.
#[derive(Debug, Clone)]
pub struct RealConfig {
    pub members: usize,
    pub seed: u64,
    /// Random faults start in `[fault_window_start_ms, duration_ms)`.
    pub duration_ms: Millis,
    pub fault_window_start_ms: Millis,
    /// Expected random faults per virtual minute.
    pub fault_rate: f64,
    /// Expected quick-succession sequences per virtual minute (see
    /// [`crate::random_quick_succession`]).
    pub quick_succession_rate: f64,
    /// A fixed schedule instead of the random one.
    pub scripted: Option<Vec<ScriptedFault>>,
    /// After the last fault healed: healthy within this long...
    pub liveness_bound_ms: Millis,
    /// ...and for this long; the run then ends.
    pub settle_ms: Millis,
    /// PostgreSQL and the checks move once per tick.
    pub tick_ms: Millis,
    /// `ttl` of the members' configuration (seconds); `loop_wait` is 1 s, `retry_timeout`
    /// 1.5 s, as in pgbaton's tests.
    pub ttl_s: u64,
    /// `pgbaton.auto_reclone` of the members (on by default, as in pgbaton). The members'
    /// `reclone_interval` is 5 s: the checker's 30 s bound for a member to follow again could
    /// not wait for the 10 minutes pgbaton waits by default between two automatic re-clones.
    pub auto_reclone: bool,
    /// Synchronous replication of the members (`synchronous_mode`, `_strict`,
    /// `synchronous_node_count`): clients commit and no acknowledged commit may be lost
    /// (`commits.rs`).
    pub synchronous: Option<SyncConfig>,
    /// Invariant 7 (the `sync` key names only members holding every acknowledged commit)
    /// stops the run. Off: its first breach is only noted (`RealReport::sync_key_breach`)
    /// and the run goes on, to see whether the wrong key really loses a commit.
    pub check_sync_key: bool,
    /// `failsafe_mode` of the members: a leader cut from etcd keeps its primary while every
    /// member acknowledges it (`POST /failsafe`, answered by the members' agents).
    pub failsafe: bool,
    /// How the agent's PostgreSQL adapter reads a replica's timeline: the fixed way, or the
    /// old one (pg_control's when the WAL receiver does not run), to show the checker finds
    /// what it caused.
    pub timeline_model: crate::TimelineModel,
    /// Deliberate faults (checks of the checker).
    pub flaws: Vec<RealFlaw>,
    /// The members are ranked by `tags.failover_priority` (m1: 1, m2: 2, ...): among
    /// candidates equally far, the higher priority takes over.
    pub ranked: bool,
    /// Operations fail now and then: initdb 2 %, pg_basebackup 5 %, pg_rewind 5 % (before it
    /// changes anything), a start 3 % (on in the random schedules, `RealConfig::random`).
    pub job_failures: bool,
}

impl RealConfig {
    /// Three members, 60 s of random faults from 3 s on at about 6 per minute plus the
    /// quick-succession sequences (a seed draws the same fault schedule as it always has).
    pub fn new(seed: u64) -> Self {
        RealConfig {
            members: 3,
            seed,
            duration_ms: 60_000,
            fault_window_start_ms: 3_000,
            fault_rate: 6.0,
            quick_succession_rate: 1.0,
            scripted: None,
            liveness_bound_ms: 60_000,
            settle_ms: 5_000,
            tick_ms: 50,
            ttl_s: 4,
            auto_reclone: true,
            synchronous: None,
            check_sync_key: true,
            failsafe: false,
            timeline_model: crate::TimelineModel::Fixed,
            flaws: Vec::new(),
            ranked: false,
            job_failures: false,
        }
    }

    /// `new(seed)` with PostgreSQL's operations failing now and then (`job_failures`): the
    /// random schedules' configuration.
    pub fn random(seed: u64) -> Self {
        RealConfig {
            job_failures: true,
            // Every third seed ranks the members, every fourth runs in failsafe mode.
            ranked: seed % 3 == 2,
            failsafe: seed % 4 == 1,
            ..RealConfig::new(seed)
        }
    }

    /// `new(seed)` with synchronous replication.
    pub fn synchronous(seed: u64, sync: SyncConfig) -> Self {
        RealConfig {
            synchronous: Some(sync),
            ..RealConfig::new(seed)
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RealReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub end_ms: Millis,
    /// When the cluster was last found healthy for good (None: never, or not settled).
    pub converged_at: Option<Millis>,
    /// The longest stretch without a leader while a healthy candidate existed (promise 4's
    /// clock).
    pub longest_leaderless_ms: Millis,
    /// The longest stretch a member that could follow the leader did not (the clock of the
    /// follow promise).
    pub longest_not_following_ms: Millis,
    pub faults: Vec<ScriptedFault>,
    /// PostgreSQL events, faults and leader changes, in order, with virtual times.
    pub trace: Vec<String>,
    /// FNV-1a over the trace: two runs of one seed must agree.
    pub trace_digest: u64,
    /// Synchronous mode: every commit a primary acknowledged.
    pub acks: Vec<Ack>,
    /// Faults, leader key takings, primaries started and stopped, rewinds and clones, `sync`
    /// key writes, in order (for scenario tests).
    pub happenings: Vec<Happening>,
    /// With `check_sync_key` off: the first time the `sync` key named a member lacking an
    /// acknowledged commit.
    pub sync_key_breach: Option<Violation>,
    /// Synchronous mode, at the end without a leader: why that is by design (the `sync` key
    /// names no member that has a data directory), if it is.
    pub leaderless_by_design: Option<String>,
}

impl RealReport {
    /// For a failing test: the seed, how the run ended, its faults, the last `tail` lines
    /// of the trace and every violation.
    pub fn describe(&self, tail: usize) -> String {
        let mut out = format!(
            "seed {}: ended at {} ms, converged at {:?}, {} commits acknowledged, faults {:?}\n",
            self.seed,
            self.end_ms,
            self.converged_at,
            self.acks.len(),
            self.faults
        );
        for line in &self.trace[self.trace.len().saturating_sub(tail)..] {
            out.push_str(line);
            out.push('\n');
        }
        for v in &self.violations {
            out.push_str(&format!("{:?} at {} ms: {}\n", v.kind, v.at, v.description));
        }
        out
    }
}

/// Run one real-runtime simulation to its end.
pub fn run_real(cfg: &RealConfig) -> RealReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime");
    // `PGBATON_SIM_LOG=<filter>` (e.g. `info`): the agents' log lines, stamped with virtual
    // milliseconds and the member, on stderr (for replays).
    let _log = std::env::var("PGBATON_SIM_LOG").ok().map(|filter| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(VirtualTime(runtime.block_on(async { Instant::now() })))
            .with_target(false)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .finish();
        tracing::subscriber::set_default(subscriber)
    });
    let report = runtime.block_on(Driver::new(cfg).run());
    // Agents still running (their tasks, jobs, guards) end with the runtime.
    runtime.shutdown_background();
    report
}

/// A running agent process.
struct AgentTask {
    handle: JoinHandle<()>,
    /// Kept so that the agent's loop does not see a stop request.
    _shutdown: watch::Sender<bool>,
}

struct Member {
    name: String,
    agent: Option<AgentTask>,
    /// The current agent's link to the DCS.
    link: Option<Arc<dcs::Link>>,
    /// Active message-delay faults (each way, at most) on it.
    delays: Vec<Millis>,
    /// Active faults: partitions from the DCS, agent down, agent stopped, isolation,
    /// replication cut.
    partitioned: u32,
    down: u32,
    stalled: u32,
    isolated: u32,
    stream_cut: u32,
    slow: u32,
}

struct Driver {
    cfg: RealConfig,
    rng: StdRng,
    start: Instant,
    now: Millis,
    store: MemoryStore,
    path: ClusterPath,
    /// The operator's handle (switchovers) and the checker's reads.
    operator: MemoryDcs,
    world: pg::Shared,
    statuses: Statuses,
    endpoints: Endpoints,
    members: Vec<Member>,
    outage: u32,
    faults: Vec<ScriptedFault>,
    fault_members: Vec<Option<usize>>,
    /// (at, fault index, start or heal), in time order.
    agenda: Vec<(Millis, usize, bool)>,
    violations: Vec<Violation>,
    last_leader: Option<String>,
    /// Promise 4: the leaderless window being measured.
    window: Option<Window>,
    /// The last leader's data directory while it led (None before the first leader).
    leader_data: Option<pg::Data>,
    longest_leaderless_ms: Millis,
    /// Per member: since when it could follow the leader but does not.
    not_following_since: Vec<Option<Millis>>,
    longest_not_following_ms: Millis,
    trace: Vec<String>,
    sync_key_breach: Option<Violation>,
    /// A `failover` key existed at the last read.
    last_failover: bool,
    /// The `sync` key as last read (leader, members, quorum).
    last_sync: Option<(Option<String>, Vec<String>, Option<u32>)>,
    /// Leader key takings and lease adoptions (`dcs::SimDcs::takings`).
    takings: Arc<std::sync::atomic::AtomicU64>,
}

impl Driver {
    fn new(cfg: &RealConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let names: Vec<String> = (0..cfg.members).map(crate::member_name).collect();
        let faults = match &cfg.scripted {
            Some(list) => list.clone(),
            None => {
                let mut faults = random_schedule(
                    &mut rng,
                    cfg.members,
                    cfg.ttl_s * 1000,
                    cfg.fault_window_start_ms,
                    cfg.duration_ms,
                    cfg.fault_rate,
                );
                faults.extend(random_quick_succession(
                    cfg.seed,
                    cfg.members,
                    cfg.fault_window_start_ms,
                    cfg.duration_ms,
                    cfg.quick_succession_rate,
                ));
                faults.sort_by_key(|f| f.at_ms);
                faults
            }
        };
        let mut agenda: Vec<(Millis, usize, bool)> = Vec::new();
        for (i, f) in faults.iter().enumerate() {
            agenda.push((f.at_ms, i, true));
            agenda.push((f.at_ms + f.kind.length(), i, false));
        }
        agenda.sort_by_key(|&(at, i, start)| (at, !start, i));
        let store = MemoryDcs::new_store();
        let path = ClusterPath::new("/service/", "sim");
        let ttl = Duration::from_secs(cfg.ttl_s);
        let key_reader = MemoryDcs::new(&store, path.clone(), "checker", ttl);
        Driver {
            rng,
            start: Instant::now(),
            now: 0,
            operator: MemoryDcs::new(&store, path.clone(), "operator", ttl),
            store,
            path,
            world: Arc::new(Mutex::new({
                let mut world = PgWorld::new(&names, cfg.seed);
                world.timeline_model = cfg.timeline_model;
                world.flaws = cfg.flaws.clone();
                world.key_reader = Some(key_reader);
                if cfg.job_failures {
                    world.job_failures = Some(StdRng::seed_from_u64(cfg.seed ^ 0x6a6f_6266));
                }
                world.ledger.terms = commits::SyncTerms {
                    enabled: cfg.synchronous.is_some_and(|s| s.mode != SyncMode::Off),
                    strict: cfg.synchronous.is_some_and(|s| s.strict),
                };
                world
            })),
            statuses: Arc::new(Mutex::new(vec![None; cfg.members])),
            endpoints: Arc::new(Mutex::new(vec![None; cfg.members])),
            members: names
                .into_iter()
                .map(|name| Member {
                    name,
                    agent: None,
                    link: None,
                    delays: Vec::new(),
                    partitioned: 0,
                    down: 0,
                    stalled: 0,
                    isolated: 0,
                    stream_cut: 0,
                    slow: 0,
                })
                .collect(),
            outage: 0,
            fault_members: vec![None; faults.len()],
            faults,
            agenda,
            violations: Vec::new(),
            last_leader: None,
            window: None,
            leader_data: None,
            longest_leaderless_ms: 0,
            not_following_since: vec![None; cfg.members],
            longest_not_following_ms: 0,
            trace: Vec::new(),
            sync_key_breach: None,
            last_sync: None,
            last_failover: false,
            takings: Arc::default(),
            cfg: cfg.clone(),
        }
    }

    fn log(&mut self, what: impl std::fmt::Display) {
        let line = format!("{:>7} --- {what}", self.now);
        lock(&self.world).trace.push(line);
    }

    async fn run(mut self) -> RealReport {
        self.start = Instant::now();
        for m in 0..self.members.len() {
            self.start_agent(m);
        }
        let last_heal = self.agenda.last().map_or(0, |&(at, _, _)| at);
        let quiet_from = last_heal.max(self.cfg.duration_ms);
        let end_at = quiet_from + self.cfg.liveness_bound_ms;
        let mut healthy_since: Option<Millis> = None;
        let mut next_fault = 0;
        loop {
            tokio::time::sleep_until(self.start + Duration::from_millis(self.now)).await;
            lock(&self.world).tick(self.now);
            while let Some(&(at, idx, start)) = self.agenda.get(next_fault) {
                if at > self.now {
                    break;
                }
                next_fault += 1;
                if start {
                    self.start_fault(idx).await;
                } else {
                    self.heal_fault(idx);
                }
            }
            let state = self.operator.load().await.ok();
            let leader = state
                .as_ref()
                .and_then(|s| s.leader_name().map(str::to_string));
            let failover_key = state.as_ref().is_some_and(|s| s.failover.is_some());
            if self.last_failover && !failover_key && state.is_some() {
                self.happened(Happening::FailoverCleared {
                    at: self.now,
                    member: leader.clone().unwrap_or_default(),
                });
            }
            if state.is_some() {
                self.last_failover = failover_key;
            }
            if leader != self.last_leader {
                self.log(format!("leader key: {leader:?}"));
                if let Some(member) = leader.clone() {
                    self.happened(Happening::LeaderKeyTaken {
                        at: self.now,
                        member,
                    });
                }
                self.last_leader = leader.clone();
            }
            let sync = state
                .as_ref()
                .and_then(|s| s.sync.as_ref())
                .map(|k| (k.value.leader.clone(), k.value.members(), k.value.quorum));
            if sync != self.last_sync {
                if let Some((Some(leader), members, quorum)) = sync.clone() {
                    self.happened(Happening::SyncKeyWritten {
                        at: self.now,
                        leader,
                        members,
                        quorum,
                    });
                }
                self.last_sync = sync;
            }
            self.check_safety();
            if self.violations.is_empty() {
                self.check_new_primaries();
            }
            if self.violations.is_empty() {
                self.check_commits(leader.as_deref(), state.as_ref());
            }
            if self.violations.is_empty() {
                self.check_leaderless(leader.as_deref(), failover_key, state.as_ref());
            }
            if self.violations.is_empty() {
                self.check_following(leader.as_deref());
            }
            if !self.violations.is_empty() {
                break;
            }
            if self.now >= quiet_from {
                match self.health(leader.as_deref()) {
                    Ok(()) => {
                        let since = *healthy_since.get_or_insert(self.now);
                        if self.now - since >= self.cfg.settle_ms {
                            break;
                        }
                    }
                    Err(_)
                        if self.now >= end_at
                            && self.leaderless_by_design(state.as_ref()).is_some() =>
                    {
                        break;
                    }
                    Err(why) if self.now >= end_at => {
                        let description = format!(
                            "no single healthy leader with every member streaming within {} ms after the last fault healed (at {quiet_from} ms): {why}",
                            self.cfg.liveness_bound_ms
                        );
                        self.violate(ViolationKind::NotLive, description);
                        break;
                    }
                    Err(_) => healthy_since = None,
                }
            }
            self.now += self.cfg.tick_ms;
        }
        let final_state = self.operator.load().await.ok();
        let leaderless_by_design = if healthy_since.is_none() && self.violations.is_empty() {
            self.leaderless_by_design(final_state.as_ref())
        } else {
            None
        };
        for m in 0..self.members.len() {
            self.kill_agent(m);
        }
        let acks = std::mem::take(&mut lock(&self.world).ledger.acks);
        let happenings = std::mem::take(&mut lock(&self.world).happenings);
        let mut trace = std::mem::take(&mut lock(&self.world).trace);
        trace.append(&mut self.trace);
        let trace_digest = fnv1a(&trace);
        RealReport {
            seed: self.cfg.seed,
            violations: self.violations,
            end_ms: self.now,
            converged_at: healthy_since,
            longest_leaderless_ms: self.longest_leaderless_ms,
            longest_not_following_ms: self.longest_not_following_ms,
            faults: self.faults,
            trace,
            trace_digest,
            acks,
            happenings,
            sync_key_breach: self.sync_key_breach,
            leaderless_by_design,
        }
    }

    /// Synchronous mode: clients start committing once the leader's
    /// synchronous_standby_names is in force; invariants 6–8 (`commits.rs`).
    fn check_commits(&mut self, key: Option<&str>, state: Option<&ClusterState>) {
        let found = {
            let mut w = lock(&self.world);
            if !w.ledger.terms.enabled {
                return;
            }
            let leader = key.and_then(|k| w.index_of(k));
            if !w.ledger.clients_on
                && leader.is_some_and(|l| {
                    w.running_primary(l)
                        && w.members[l].run.as_ref().is_some_and(|r| r.ssn.is_some())
                })
            {
                w.ledger.clients_on = true;
                let line = format!("{:>7} --- clients start committing", self.now);
                w.trace.push(line);
            }
            let mut found = std::mem::take(&mut w.ledger.found);
            if let Some(why) = leader.and_then(|l| w.leader_lacks(l)) {
                found.push((ViolationKind::AckedCommitLost, why));
            }
            let sync_problem = state
                .and_then(|s| s.sync.as_ref())
                .and_then(|k| w.sync_key_problem(&k.value.members(), k.value.quorum));
            if let Some(why) = sync_problem {
                found.push((ViolationKind::SyncKeyWrong, why));
            }
            found
        };
        for (kind, why) in found {
            let description = format!("{why}; {}", self.describe());
            if kind == ViolationKind::SyncKeyWrong && !self.cfg.check_sync_key {
                if self.sync_key_breach.is_none() {
                    self.log(format!("sync key wrong (run goes on): {description}"));
                    self.sync_key_breach = Some(Violation {
                        kind,
                        at: self.now,
                        seed: self.cfg.seed,
                        description,
                    });
                }
                continue;
            }
            self.violate(kind, description);
            return;
        }
    }

    /// Per member: its agent says failsafe mode is in force there (a leader on its members'
    /// acknowledgements, or a member that promised one within the last ttl).
    fn failsafe_active(&self) -> Vec<bool> {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        (0..self.members.len())
            .map(|m| {
                self.cfg.failsafe
                    && statuses
                        .get(m)
                        .and_then(|s| s.as_ref())
                        .is_some_and(|s| s.borrow().failsafe_active)
            })
            .collect()
    }

    /// Synchronous mode without a leader key: why staying leaderless is by design, if it is
    /// (the `sync` key names no member that has a data directory: nobody is known to hold
    /// every acknowledged commit).
    fn leaderless_by_design(&self, state: Option<&ClusterState>) -> Option<String> {
        let state = state?;
        if !lock(&self.world).ledger.terms.enabled || state.leader_name().is_some() {
            return None;
        }
        let key = state.sync.as_ref().map(|k| k.value.clone());
        let named = key.as_ref().map(|k| k.members()).unwrap_or_default();
        let with_data = {
            let w = lock(&self.world);
            named
                .iter()
                .any(|n| w.index_of(n).is_some_and(|i| w.members[i].data.is_some()))
        };
        if with_data {
            return None;
        }
        Some(format!(
            "no leader: the sync key (leader {:?}) names {}, so no member is known to hold every acknowledged commit",
            key.and_then(|k| k.leader),
            if named.is_empty() {
                "nobody".to_string()
            } else {
                format!("{} without a data directory", named.join(", "))
            }
        ))
    }

    /// Synchronous mode: member `m` may be promoted by the core's rules. Only the members
    /// the `sync` key names hold every acknowledged commit (and the leader that wrote it);
    /// in quorum mode a named member also needs `n - q + 1` of the named members (itself
    /// included) to answer it, to be sure it is not behind an acknowledged commit.
    fn may_promote_synchronous(&self, m: usize, state: Option<&ClusterState>) -> bool {
        let Some(key) = state.and_then(|s| s.sync.as_ref()).map(|k| &k.value) else {
            return false;
        };
        let name = &self.members[m].name;
        if key.leader.as_deref() == Some(name.as_str()) {
            return true;
        }
        let named = key.members();
        if !named.contains(name) {
            return false;
        }
        let Some(q) = key.quorum else {
            return true;
        };
        let needed = named.len().saturating_sub(q as usize) + 1;
        // A named member answers when the candidate can ask it: its member document is in
        // the DCS (where the candidate finds its REST API), its agent runs and is linked.
        let listed = |n: &String| state.is_some_and(|s| s.members.contains_key(n));
        let w = lock(&self.world);
        let answering = 1 + named
            .iter()
            .filter(|n| listed(n))
            .filter_map(|n| w.index_of(n))
            .filter(|&p| {
                p != m
                    && w.linked(m, p)
                    && w.members[p].agent_alive
                    && !w.members[p].agent_frozen
                    && w.members[p].run.is_some()
            })
            .count();
        answering >= needed
    }

    fn happened(&mut self, h: Happening) {
        lock(&self.world).happenings.push(h);
    }

    fn violate(&mut self, kind: ViolationKind, description: String) {
        self.log(format!("VIOLATION {kind:?}: {description}"));
        self.violations.push(Violation {
            kind,
            at: self.now,
            seed: self.cfg.seed,
            description,
        });
    }

    /// PostgreSQL becomes a primary (promoted, or started as one) only while its member
    /// holds the leader key, read in the store the moment it happens. Bootstrap excepted:
    /// initdb's primary runs before its member takes the key (the `initialize` key guards
    /// it), so nobody has taken a key yet.
    fn check_new_primaries(&mut self) {
        let new = std::mem::take(&mut lock(&self.world).new_primaries);
        if self.takings.load(Ordering::SeqCst) == 0 {
            return;
        }
        for (at, member, holder) in new {
            if holder.as_deref() != Some(member.as_str()) {
                let description = format!(
                    "{member} became a primary at {at} ms while the leader key was {holder:?}; {}",
                    self.describe()
                );
                self.violate(ViolationKind::PrimaryWithoutLease, description);
                return;
            }
        }
    }

    /// Never two primaries accepting writes at once.
    fn check_safety(&mut self) {
        let primaries: Vec<String> = {
            let w = lock(&self.world);
            (0..w.members.len())
                .filter(|&m| w.running_primary(m))
                .map(|m| w.members[m].name.clone())
                .collect()
        };
        if primaries.len() > 1 {
            let description = format!(
                "{} accept writes at once; {}",
                primaries.join(" and "),
                self.describe()
            );
            self.violate(ViolationKind::TwoPrimaries, description);
        }
    }

    /// Promise 4: no leaderless window longer than `ttl + loop_wait + 2 s` while a healthy
    /// candidate exists. The leader: the member holding the key and running a writable
    /// primary. The clock runs while there is none (after the first) and some member is a
    /// healthy candidate, without interruption and without the key changing hands: its agent
    /// runs (alive, not stopped) and reaches the DCS, its PostgreSQL runs as a replica that
    /// answers, on the last leader's history (not diverged from its data as it led). Not
    /// while a `failover` key holds the election (a switchover under way).
    fn check_leaderless(
        &mut self,
        key: Option<&str>,
        failover_key: bool,
        state: Option<&ClusterState>,
    ) {
        let bound = self.cfg.ttl_s * 1000 + 1000 + 2000;
        let failsafe = self.failsafe_active();
        let leading = {
            let w = lock(&self.world);
            key.and_then(|k| w.index_of(k))
                .filter(|&l| w.running_primary(l))
                // Failsafe mode: a primary running on its members' acknowledgements leads.
                .or_else(|| (0..w.members.len()).find(|&m| w.running_primary(m) && failsafe[m]))
                .map(|l| w.members[l].data.clone())
        };
        if let Some(data) = leading {
            self.leader_data = data;
            self.window = None;
            return;
        }
        let Some(mut last) = self.leader_data.clone() else {
            return;
        };
        // A member promoted since, even if it was lost before the check saw it lead: its
        // timeline is the cluster's newest history.
        if let Some(newer) = lock(&self.world)
            .newest_primary
            .clone()
            .filter(|d| d.system_id == last.system_id && d.timeline > last.timeline)
        {
            last = newer;
        }
        let sync = lock(&self.world).ledger.terms.enabled;
        // Failsafe mode: a member bound by its promise to a failsafe leader, or outside the
        // `failsafe` key's topology, may not race (by design).
        let in_topology = |name: &str| {
            !self.cfg.failsafe
                || state
                    .and_then(|s| s.failsafe.as_ref())
                    .is_none_or(|k| k.contains_key(name))
        };
        let allowed: Vec<bool> = (0..self.members.len())
            .map(|m| {
                (!sync || self.may_promote_synchronous(m, state))
                    && !failsafe[m]
                    && in_topology(&self.members[m].name)
            })
            .collect();
        let candidates: Vec<String> = {
            let w = lock(&self.world);
            (0..w.members.len())
                .filter(|&m| allowed[m])
                .filter(|&m| {
                    let member = &w.members[m];
                    // In time: etcd up, no partition, and no message-delay fault (whose
                    // round trips may outlast retry_timeout).
                    let reaches_dcs = self.members[m].partitioned == 0
                        && self.outage == 0
                        && self.members[m].delays.is_empty();
                    let replica = member
                        .run
                        .as_ref()
                        .is_some_and(|r| !r.primary && r.answering);
                    // On an older timeline, it must be behind where that timeline ended,
                    // and the cluster must know that point: the `history` key records it
                    // (a leader lost right after its promotion, before writing the key,
                    // leaves the members on the old timeline unable to tell whether they
                    // are behind or diverged: they wait for it, by design, as Patroni's do).
                    let recorded = |t: u32, lsn: u64| {
                        state.is_some_and(|s| {
                            s.history.iter().any(|h| h.timeline == t && lsn <= h.lsn)
                        })
                    };
                    let on_history = member.data.as_ref().is_some_and(|d| {
                        d.system_id == last.system_id
                            && (d.timeline == last.timeline && d.lsn <= last.lsn
                                || last.history.iter().any(|&(t, end)| {
                                    t == d.timeline && d.lsn <= end && recorded(t, d.lsn)
                                }))
                    });
                    member.agent_alive
                        && !member.agent_frozen
                        && reaches_dcs
                        && replica
                        && on_history
                })
                .map(|m| w.members[m].name.clone())
                .collect()
        };
        let now = self.now;
        let takings = self.takings.load(Ordering::SeqCst);
        let window = self.window.get_or_insert(Window {
            opened_at: now,
            key: key.map(str::to_string),
            counting_since: None,
            takings,
        });
        // The key changed hands, or was taken again (a restarted agent adopting its
        // lease): a member that takes the key and fails again before it runs a primary
        // costs another bound, each failure bounded on its own.
        if window.key.as_deref() != key || window.takings != takings {
            window.key = key.map(str::to_string);
            window.takings = takings;
            window.counting_since = None;
        }
        if candidates.is_empty() || failover_key {
            window.counting_since = None;
            return;
        }
        let since = *window.counting_since.get_or_insert(now);
        self.longest_leaderless_ms = self.longest_leaderless_ms.max(now - since);
        if now - since > bound {
            let opened_at = window.opened_at;
            let description = format!(
                "leaderless since {opened_at} ms, {} ms of it (over {bound} ms) while {} could lead; {}",
                now - since,
                candidates.join(", "),
                self.describe()
            );
            self.violate(ViolationKind::Leaderless, description);
        }
    }

    /// Every member recovers, also while faults go on elsewhere: a member that could follow
    /// the leader streams from it within `FOLLOW_BOUND_MS`. It could while the leader holds
    /// the key and runs its primary, and the member's agent runs and reaches the DCS, its
    /// PostgreSQL has its connections to the leader and nothing cuts its replication.
    fn check_following(&mut self, key: Option<&str>) {
        let now = self.now;
        let stuck: Vec<(usize, Millis, String)> = {
            let w = lock(&self.world);
            let leader = key
                .and_then(|k| w.index_of(k))
                .filter(|&l| w.running_primary(l));
            let mut stuck = Vec::new();
            for m in 0..w.members.len() {
                let member = &w.members[m];
                let could = leader.is_some_and(|l| {
                    l != m
                        && member.agent_alive
                        && !member.agent_frozen
                        && self.members[m].partitioned == 0
                        && self.outage == 0
                        // Reaches the DCS in time: no message-delay fault (round trips past
                        // retry_timeout hold its every cycle up), as for a candidate.
                        && self.members[m].delays.is_empty()
                        && w.linked(m, l)
                        && !member.streaming_cut
                });
                let follows = leader.is_some_and(|l| {
                    member.run.as_ref().is_some_and(|r| {
                        !r.primary
                            && r.answering
                            && r.streaming
                            && r.upstream.as_deref() == Some(w.members[l].name.as_str())
                    })
                });
                if !could || follows {
                    self.not_following_since[m] = None;
                    continue;
                }
                let since = *self.not_following_since[m].get_or_insert(now);
                self.longest_not_following_ms = self.longest_not_following_ms.max(now - since);
                if now - since > FOLLOW_BOUND_MS {
                    let leader = key.unwrap_or_default().to_string();
                    stuck.push((m, since, leader));
                }
            }
            stuck
        };
        if let Some((m, since, leader)) = stuck.into_iter().next() {
            let description = format!(
                "{} could follow {leader} since {since} ms but does not after {} ms; {}",
                self.members[m].name,
                now - since,
                self.describe()
            );
            self.violate(ViolationKind::NotLive, description);
        }
    }

    /// One leader running its primary, every other member a replica streaming from it on
    /// its timeline.
    fn health(&self, leader: Option<&str>) -> Result<(), String> {
        let w = lock(&self.world);
        let leader = leader.ok_or("no leader key")?;
        let l = w.index_of(leader).ok_or("unknown leader")?;
        if !w.running_primary(l) {
            return Err(format!("{leader} holds the key but runs no primary"));
        }
        let timeline = w.members[l].data.as_ref().map(|d| d.timeline);
        for (m, member) in w.members.iter().enumerate() {
            if m == l {
                continue;
            }
            let ok = member.run.as_ref().is_some_and(|r| {
                !r.primary && r.answering && r.streaming && r.upstream.as_deref() == Some(leader)
            }) && member.data.as_ref().map(|d| d.timeline) == timeline;
            if !ok {
                return Err(format!("{} does not stream from {leader}", member.name));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let w = lock(&self.world);
        w.members
            .iter()
            .map(|m| {
                let pg = match &m.run {
                    Some(r) if r.primary => "primary".to_string(),
                    Some(r) => format!("replica of {:?}", r.upstream),
                    None => "stopped".to_string(),
                };
                let tl = m.data.as_ref().map(|d| (d.timeline, d.lsn));
                let agent = match (m.agent_alive, m.agent_frozen) {
                    (false, _) => "agent dead",
                    (true, true) => "agent stopped",
                    (true, false) => "agent runs",
                };
                format!("{}: {pg} {tl:?}, {agent}", m.name)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn leader(&self) -> Option<String> {
        let state = self.operator.load().await.ok()?;
        state.leader_name().map(str::to_string)
    }

    /// Member `name`'s configuration: the template `local up`, the tests and the chaos suite
    /// use, with the simulation's addresses (the member's name is its host), timings,
    /// synchronous and failsafe settings, ranks (`RealConfig::ranked`) and re-cloning.
    fn member_yaml(&self, name: &str) -> String {
        let dir = format!("/nonexistent/sim/{name}");
        let mut member = MemberYaml::loopback("sim", name, dir, 5432, 8008, 9);
        member.host = name.to_string();
        member.ttl = Some(self.cfg.ttl_s as f64);
        member.loop_wait = Some(1.0);
        member.retry_timeout = Some(1.5);
        member.failsafe_mode = self.cfg.failsafe;
        if let Some(sync) = self.cfg.synchronous.filter(|s| s.mode != SyncMode::Off) {
            member.synchronous = match sync.mode {
                SyncMode::Quorum => Synchronous::Quorum,
                _ => Synchronous::On,
            };
            member.synchronous_strict = sync.strict;
            member.synchronous_node_count = Some(sync.count);
        }
        if self.cfg.ranked {
            let priority: u32 = name.trim_start_matches('m').parse().unwrap_or(1);
            member
                .extra_tags
                .push(("failover_priority".into(), priority.to_string()));
        }
        member.pgbaton_keys = vec![
            ("reclone_interval".into(), "5".into()),
            ("auto_reclone".into(), self.cfg.auto_reclone.to_string()),
        ];
        member.render()
    }

    fn start_agent(&mut self, m: usize) {
        let name = self.members[m].name.clone();
        let incarnation = {
            let mut w = lock(&self.world);
            let member = &mut w.members[m];
            member.incarnation += 1;
            member.agent_alive = true;
            member.agent_frozen = false;
            let incarnation = member.incarnation;
            w.log(m, "agent starts");
            incarnation
        };
        let cfg = pgbaton_config::parse_str(&self.member_yaml(&name), "<sim>")
            .expect("the simulated member's configuration parses")
            .value;
        let dynamic = cfg.bootstrap.dcs.clone();
        let ha = settings::ha_config(&cfg, &dynamic);
        let link = Arc::new(dcs::Link::new(StdRng::seed_from_u64(
            self.cfg.seed ^ ((m as u64) << 40) ^ (incarnation << 20),
        )));
        let dcs = dcs::SimDcs {
            inner: MemoryDcs::new(
                &self.store,
                self.path.clone(),
                &name,
                Duration::from_millis(ha.ttl_ms),
            ),
            link: link.clone(),
            takings: self.takings.clone(),
            lease_from_answer: self.cfg.flaws.contains(&RealFlaw::LeaseFromAnswerTime),
            agent: SimPostgres {
                world: self.world.clone(),
                m,
                incarnation,
            },
        };
        self.members[m].link = Some(link);
        self.update_dcs_switches();
        let (status_tx, status_rx) = watch::channel(NodeStatus::starting("sim", &name, ha.ttl_ms));
        self.statuses.lock().unwrap_or_else(|p| p.into_inner())[m] = Some(status_rx);
        let ports = Ports {
            dcs,
            peers: SimPeers {
                world: self.world.clone(),
                statuses: self.statuses.clone(),
                endpoints: self.endpoints.clone(),
                me: m,
            },
            pg: SimPostgres {
                world: self.world.clone(),
                m,
                incarnation,
            },
            host: SimHost {
                start: self.start,
                world: self.world.clone(),
                m,
                incarnation,
            },
        };
        let agent_flaws = self
            .cfg
            .flaws
            .iter()
            .filter_map(|f| match f {
                RealFlaw::Agent(flaw) => Some(*flaw),
                _ => None,
            })
            .collect();
        let mut agent =
            Agent::with_ports(cfg, dynamic, ha, status_tx, ports).with_flaws(agent_flaws);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (commands, local_rx) = agent.commands(Duration::from_millis(1_500));
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())[m] = Some(Arc::new(commands));
        let world = self.world.clone();
        let span = tracing::info_span!("member", name = %name);
        let run = tracing::Instrument::instrument(
            async move {
                let _ = agent.run(shutdown_rx, local_rx).await;
            },
            span,
        );
        let handle = tokio::spawn(Stoppable {
            world,
            m,
            incarnation,
            inner: Box::pin(run),
        });
        self.members[m].agent = Some(AgentTask {
            handle,
            _shutdown: shutdown_tx,
        });
    }

    /// SIGKILL of the agent: its loop ends where it is. What it spawned (jobs, background
    /// rounds) finds its PostgreSQL port dead; its lease guard keeps enforcing the last
    /// deadline until the next start of the agent, as `pgbaton lease-guard` does.
    fn kill_agent(&mut self, m: usize) {
        if let Some(task) = self.members[m].agent.take() {
            task.handle.abort();
            let mut w = lock(&self.world);
            w.members[m].agent_alive = false;
            w.members[m].agent_frozen = false;
            w.log(m, "agent killed");
        }
        self.statuses.lock().unwrap_or_else(|p| p.into_inner())[m] = None;
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())[m] = None;
    }

    /// A `mid_cycle` SIGSTOP: it hits between the agent's decision on its next read of the
    /// cluster that shows it holding the leader key and the rest of its actions
    /// (`dcs::Link::stop_stage`), if that comes before the fault ends.
    fn arm_stop_as_key_holder(&mut self, m: usize, armed: bool) {
        if let Some(link) = &self.members[m].link {
            let stage = if armed {
                dcs::STOP_ARMED
            } else {
                dcs::STOP_NONE
            };
            link.stop_stage.store(stage, Ordering::SeqCst);
        }
    }

    fn set_frozen(&mut self, m: usize, frozen: bool) {
        let mut w = lock(&self.world);
        let member = &mut w.members[m];
        if !member.agent_alive {
            return;
        }
        if member.agent_frozen == frozen {
            return;
        }
        member.agent_frozen = frozen;
        if !frozen {
            if let Some(waker) = member.waker.take() {
                waker.wake();
            }
        }
        w.log(
            m,
            if frozen {
                "agent stopped (SIGSTOP)"
            } else {
                "agent continues (SIGCONT)"
            },
        );
    }

    fn update_dcs_switches(&self) {
        for member in &self.members {
            if let Some(link) = &member.link {
                link.cut
                    .store(member.partitioned > 0 || self.outage > 0, Ordering::SeqCst);
                let delay = member.delays.iter().copied().max().unwrap_or(0);
                link.max_delay_ms.store(delay, Ordering::SeqCst);
            }
        }
    }

    async fn resolve(&mut self, target: Target) -> usize {
        let n = self.members.len();
        let leader = self
            .leader()
            .await
            .and_then(|l| self.members.iter().position(|m| m.name == l));
        match target {
            Target::Member(i) => i.min(n - 1),
            Target::Leader => leader.unwrap_or_else(|| self.rng.random_range(0..n)),
            Target::SyncStandby if !self.sync_named().await.is_empty() => {
                let named = self.sync_named().await;
                self.members
                    .iter()
                    .position(|m| m.name == named[0])
                    .unwrap_or(0)
            }
            Target::Replica | Target::SyncStandby => {
                let others: Vec<usize> = (0..n).filter(|&m| Some(m) != leader).collect();
                others[self.rng.random_range(0..others.len())]
            }
        }
    }

    /// The members the `sync` key names now.
    async fn sync_named(&self) -> Vec<String> {
        let state = self.operator.load().await.ok();
        state
            .and_then(|s| s.sync.map(|k| k.value.members()))
            .unwrap_or_default()
    }

    async fn start_fault(&mut self, idx: usize) {
        let fault = self.faults[idx];
        let m = self.resolve(fault.target).await;
        self.fault_members[idx] = Some(m);
        let name = self.members[m].name.clone();
        self.log(format!("fault starts on {name}: {}", fault.kind));
        let lsns = {
            let w = lock(&self.world);
            w.members
                .iter()
                .filter_map(|x| x.data.as_ref().map(|d| (x.name.clone(), d.lsn)))
                .collect()
        };
        self.happened(Happening::Positions { at: self.now, lsns });
        self.happened(Happening::FaultStarted {
            at: self.now,
            member: name.clone(),
            fault: fault.kind.to_string(),
        });
        match fault.kind {
            FaultKind::CrashMember { .. } => {
                self.members[m].down += 1;
                self.kill_agent(m);
                lock(&self.world).crash(m, "node crash");
            }
            FaultKind::KillPostmaster => lock(&self.world).crash(m, "SIGKILL"),
            FaultKind::KillAgent { .. } => {
                self.members[m].down += 1;
                self.kill_agent(m);
            }
            FaultKind::PartitionFromDcs { .. } => {
                self.members[m].partitioned += 1;
                self.update_dcs_switches();
            }
            FaultKind::DcsOutage { .. } => {
                self.outage += 1;
                self.update_dcs_switches();
            }
            FaultKind::StallAgent { mid_cycle, .. } => {
                self.members[m].stalled += 1;
                if mid_cycle {
                    self.arm_stop_as_key_holder(m, true);
                } else {
                    self.set_frozen(m, true);
                }
            }
            FaultKind::IsolateFromMembers { .. } => {
                self.members[m].isolated += 1;
                lock(&self.world).members[m].isolated = true;
            }
            FaultKind::StopStreaming { .. } => {
                self.members[m].stream_cut += 1;
                lock(&self.world).members[m].streaming_cut = true;
            }
            FaultKind::Switchover {
                candidate,
                scheduled_in_ms,
            } => self.request_switchover(candidate, scheduled_in_ms).await,
            FaultKind::DelayMessages { max_delay_ms, .. } => {
                self.members[m].delays.push(max_delay_ms);
                self.update_dcs_switches();
            }
            FaultKind::SlowStandby { .. } => {
                self.members[m].slow += 1;
                lock(&self.world).members[m].slow = true;
            }
        }
    }

    fn heal_fault(&mut self, idx: usize) {
        let fault = self.faults[idx];
        let Some(m) = self.fault_members[idx] else {
            return;
        };
        let name = self.members[m].name.clone();
        self.happened(Happening::FaultHealed {
            at: self.now,
            member: name.clone(),
            fault: fault.kind.to_string(),
        });
        match fault.kind {
            FaultKind::CrashMember { .. } | FaultKind::KillAgent { .. } => {
                self.members[m].down -= 1;
                if self.members[m].down == 0 {
                    self.log(format!("heals on {name}: {}", fault.kind));
                    self.start_agent(m);
                }
            }
            FaultKind::PartitionFromDcs { .. } => {
                self.members[m].partitioned -= 1;
                self.update_dcs_switches();
                self.log(format!("heals on {name}: {}", fault.kind));
            }
            FaultKind::DcsOutage { .. } => {
                self.outage -= 1;
                self.update_dcs_switches();
                self.log(format!("heals: {}", fault.kind));
            }
            FaultKind::StallAgent { mid_cycle, .. } => {
                self.members[m].stalled -= 1;
                if mid_cycle {
                    self.arm_stop_as_key_holder(m, false);
                }
                if self.members[m].stalled == 0 {
                    self.set_frozen(m, false);
                }
            }
            FaultKind::IsolateFromMembers { .. } => {
                self.members[m].isolated -= 1;
                let isolated = self.members[m].isolated > 0;
                lock(&self.world).members[m].isolated = isolated;
                self.log(format!("heals on {name}: {}", fault.kind));
            }
            FaultKind::StopStreaming { .. } => {
                self.members[m].stream_cut -= 1;
                let cut = self.members[m].stream_cut > 0;
                lock(&self.world).members[m].streaming_cut = cut;
            }
            FaultKind::DelayMessages { max_delay_ms, .. } => {
                let delays = &mut self.members[m].delays;
                if let Some(i) = delays.iter().position(|&d| d == max_delay_ms) {
                    delays.remove(i);
                }
                self.update_dcs_switches();
                self.log(format!("heals on {name}: {}", fault.kind));
            }
            FaultKind::SlowStandby { .. } => {
                self.members[m].slow -= 1;
                let slow = self.members[m].slow > 0;
                lock(&self.world).members[m].slow = slow;
            }
            FaultKind::KillPostmaster | FaultKind::Switchover { .. } => {}
        }
    }

    /// The operator writes the `failover` key, as `pgbaton ctl switchover` does.
    async fn request_switchover(&mut self, candidate: Candidate, scheduled_in_ms: Option<Millis>) {
        let Some(leader) = self.leader().await else {
            self.log("switchover not requested: no leader");
            return;
        };
        let others: Vec<String> = self
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| *n != leader)
            .collect();
        let named = self.sync_named().await;
        let member = match candidate {
            Candidate::Any => None,
            Candidate::Member(i) => self.members.get(i).map(|m| m.name.clone()),
            Candidate::SyncStandby if !named.is_empty() => named.first().cloned(),
            Candidate::AsyncReplica if !named.is_empty() => {
                others.iter().find(|n| !named.contains(n)).cloned()
            }
            Candidate::Replica | Candidate::SyncStandby | Candidate::AsyncReplica => {
                Some(others[self.rng.random_range(0..others.len())].clone())
            }
        };
        let scheduled_at = scheduled_in_ms.map(|ms| {
            let unix = peers::UNIX_MS_AT_START + self.now + ms;
            chrono::DateTime::from_timestamp_millis(unix as i64)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        });
        let doc = FailoverDoc {
            leader: Some(leader.clone()),
            member: member.clone(),
            scheduled_at,
            extra: BTreeMap::new(),
        };
        let written = self.operator.set_failover(&doc, None).await;
        if matches!(written, Ok(true)) {
            self.happened(Happening::SwitchoverRequested {
                at: self.now,
                leader: Some(leader.clone()),
                candidate: member.clone(),
            });
        }
        self.log(format!(
            "switchover requested: {leader} -> {member:?}: {written:?}"
        ));
    }
}

/// How long a member that could follow the leader may take to stream from it (a rewind or
/// a clone and a start, retried after a failure).
const FOLLOW_BOUND_MS: Millis = 30_000;

/// A leaderless window (promise 4).
struct Window {
    opened_at: Millis,
    /// The leader key's holder (one that does not run a primary), if any.
    key: Option<String>,
    /// Since when a healthy candidate has existed without interruption.
    counting_since: Option<Millis>,
    /// `Driver::takings` when the clock last started.
    takings: u64,
}

/// An agent's loop that a SIGSTOP fault can hold: while the member's agent is stopped the
/// loop is not polled; the driver wakes it on SIGCONT.
struct Stoppable {
    world: pg::Shared,
    m: usize,
    incarnation: u64,
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for Stoppable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut w = lock(&self.world);
            let member = &mut w.members[self.m];
            if member.incarnation == self.incarnation && member.agent_frozen {
                member.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}

/// Log timestamps in virtual milliseconds since the run began.
struct VirtualTime(Instant);

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>7}", self.0.elapsed().as_millis())
    }
}

fn fnv1a(lines: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
