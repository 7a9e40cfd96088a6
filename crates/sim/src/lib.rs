//! A deterministic simulator of a pgbaton cluster that checks the safety promises on every
//! step.
//!
//! N members (PostgreSQL model + agent model) and one in-memory DCS run in virtual time,
//! single-threaded, from one seed. The agents drive the real [`pgbaton_core::decide`]
//! exactly as the real agent does; a random (or scripted) schedule of faults breaks nodes,
//! processes, networks and the DCS; after every event the invariants of `invariants.rs` are
//! checked, the cluster must never stay leaderless for long while a healthy candidate exists
//! (`liveness.rs`, promise 4), and after the last fault healed it must become healthy again
//! in time.
//! Any failing seed replays exactly: `PGBATON_SIM_SEED=<n> cargo test -p pgbaton-sim replay -- --nocapture`.
//!
//! Two simulations share the fault schedules (`faults.rs`): [`run`] drives this crate's own
//! model of the agent loop (below), and [`run_real`] drives the real runtime
//! (`pgbaton_agent::Agent`, every member) over simulated ports on a paused, current-thread
//! tokio runtime (`real/`: `mod.rs` the driver and its checks, `pg.rs` the PostgreSQL world
//! and port, `peers.rs` the peers' REST APIs and the host).
//!
//! Module map: `world` (clock, event queue, loop), `cycle` (one agent cycle: observe,
//! decide, act), `agent`, `postgres` (data directory, its timeline sources, postmaster),
//! `replication` (writes, streaming and checkpoints per tick), `syncrep`
//! (pg_stat_replication, which standbys commits wait for), `commits` (client commits,
//! acknowledgements, invariants 6–8), `jobs` (background operations), `dcs`, `failsafe`
//! (the `POST /failsafe` rounds of failsafe mode), `net`, `faults`, `invariants`,
//! `liveness` (no long leaderless window while a healthy candidate exists), `report`.
//!
//! Synchronous mode (`SimConfig::synchronous`): clients commit on every writable primary;
//! a commit is acknowledged when the standbys `synchronous_standby_names` makes PostgreSQL
//! wait for have flushed it; the promise checked is that no acknowledged commit is lost
//! across failovers and switchovers (`commits.rs`). A failing synchronous seed replays with
//! `PGBATON_SIM_SYNC=<label>` added (labels in `tests/common/mod.rs`).
//!
//! Where the agent model goes beyond "call decide, do the actions" it does what the real
//! agent must do, and each such duty has a test that removes it (`Flaw`) and shows the
//! invariants catch the result: count the lease from the keepalive's *send* time; check the
//! lease again right before Promote/StartPrimary; give up a DCS read in time to demote.

mod agent;
mod commits;
mod cycle;
mod dcs;
mod failsafe;
mod faults;
mod invariants;
mod jobs;
mod liveness;
mod net;
mod postgres;
mod real;
mod replication;
mod report;
mod syncrep;
mod world;

pub use commits::Ack;
pub use faults::{
    random_dcs_schedule, random_quick_succession, random_schedule, Candidate, FaultKind,
    ScriptedFault, Target,
};
pub use pgbaton_core::{HaConfig, Millis, SyncConfig, SyncMode};
pub use postgres::TimelineModel;
pub use real::{run_real, RealConfig, RealFlaw, RealReport};
pub use report::{Happening, LeaderlessWindow, SimReport, Violation, ViolationKind};

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of members (3 by default).
    pub members: usize,
    pub seed: u64,
    /// Random faults start in `[fault_window_start_ms, duration_ms)`; liveness is judged
    /// from the later of `duration_ms` and the last heal.
    pub duration_ms: Millis,
    pub fault_window_start_ms: Millis,
    /// The HA configuration of a member, from its name.
    pub ha: fn(&str) -> HaConfig,
    /// Expected random faults per virtual minute (0: none).
    pub fault_rate: f64,
    /// A fixed schedule instead of the random one.
    pub scripted: Option<Vec<ScriptedFault>>,
    /// After the faults, the cluster must be healthy within this long (invariant 5)...
    pub liveness_bound_ms: Millis,
    /// ...and stay so for this long; the run then ends.
    pub settle_ms: Millis,
    /// PostgreSQL granularity: writes and streaming advance once per tick.
    pub tick_ms: Millis,
    /// How many trace lines the report keeps.
    pub trace_lines: usize,
    /// A deliberate mistake in the agent model, to show the invariants catch it (`None`
    /// in every real run).
    pub flaw: Option<Flaw>,
    /// Replaces the synchronous replication settings `ha` gives every member.
    pub synchronous: Option<SyncConfig>,
    /// A changed synchronous_standby_names is in force after a reload of up to this long
    /// (0: at once, as the real agent sees it: it waits for the reload before going on).
    pub ssn_reload_max_ms: Millis,
    /// Invariant 7 (the `sync` key names only members holding every acknowledged commit)
    /// stops the run. Off: its first breach is only noted (`SimReport::sync_key_breach`) and
    /// the run goes on, to see whether the wrong key really loses a commit (invariant 6).
    pub check_sync_key: bool,
    /// PostgreSQL's `checkpoint_timeout`: a running server checkpoints (a standby: makes a
    /// restartpoint) this often, which is when pg_control's timeline catches up.
    pub checkpoint_timeout_ms: Millis,
    /// How the agent's adapter reads a member's timeline (the old one on purpose, to show
    /// the liveness check catches what it caused).
    pub timeline_model: TimelineModel,
    /// A leaderless window longer than the bound while a healthy candidate exists stops the
    /// run with `ViolationKind::Leaderless` (`liveness.rs`). Off: the windows are only
    /// measured (`SimReport::leaderless_windows`).
    pub check_leaderless: bool,
    /// Expected quick-succession sequences per virtual minute added to the random schedule
    /// (switchover then the new leader lost 1–5 s later; a failover and another ~10 s later;
    /// two switchovers without candidate a few seconds apart), drawn from their own
    /// generator: see [`random_quick_succession`]. Ignored with `scripted`.
    pub quick_succession_rate: f64,
}

/// Deliberate agent mistakes (checks of the checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Count the lease from when a keepalive's answer arrived instead of when it was sent.
    LeaseFromAnswerTime,
    /// After a stop between deciding and acting, carry out Promote / StartPrimary without
    /// checking again that the lease is still certainly valid.
    NoRecheckBeforePrimary,
    /// A leader waits for a slow DCS read as long as `retry_timeout` even when its demotion
    /// deadline comes earlier.
    UncappedDcsTimeout,
    /// Failsafe mode: a member accepts a leader's `POST /failsafe` but does not keep its
    /// promise (it races for the leader key and promotes as if it had not answered).
    FailsafeForgetsPromise,
}

impl SimConfig {
    /// Three members with pgbaton's default timing (ttl 4 s, loop_wait 1 s), 60 s of random
    /// faults at about 6 per minute.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            members: 3,
            seed,
            duration_ms: 60_000,
            fault_window_start_ms: 3_000,
            ha: HaConfig::with_defaults,
            fault_rate: 6.0,
            scripted: None,
            liveness_bound_ms: 60_000,
            settle_ms: 5_000,
            tick_ms: 20,
            trace_lines: 200,
            flaw: None,
            synchronous: None,
            ssn_reload_max_ms: 0,
            check_sync_key: true,
            checkpoint_timeout_ms: 300_000,
            timeline_model: TimelineModel::Fixed,
            check_leaderless: true,
            quick_succession_rate: 1.0,
        }
    }

    /// `new(seed)` with synchronous replication.
    pub fn synchronous(seed: u64, sync: SyncConfig) -> Self {
        SimConfig {
            synchronous: Some(sync),
            ..SimConfig::new(seed)
        }
    }

    /// No random faults; these happen instead.
    pub fn scripted(seed: u64, duration_ms: Millis, faults: Vec<ScriptedFault>) -> Self {
        SimConfig {
            duration_ms,
            scripted: Some(faults),
            ..SimConfig::new(seed)
        }
    }
}

/// The name of member `i` (0-based): `m1`, `m2`, ...
pub fn member_name(i: usize) -> String {
    format!("m{}", i + 1)
}

/// Run one simulation to its end (healthy and settled, first safety violation, or the
/// liveness deadline).
pub fn run(cfg: &SimConfig) -> SimReport {
    world::World::new(cfg).run()
}
