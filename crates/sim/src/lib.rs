//! A deterministic simulator of a pgbaton cluster that runs the real agent runtime and checks
//! the promises on every step.
//!
//! N real `pgbaton_agent::Agent`s, every member's, run over simulated ports on a paused,
//! current-thread tokio runtime (`real/`): an in-memory DCS behind links that faults cut or
//! slow down (`real/dcs.rs`), a simulated PostgreSQL that behaves as PostgreSQL does —
//! timeline sources, restartpoints, WAL retention and slots, synchronous replication's
//! release rules (`syncrep.rs`), operations that fail now and then (`real/pg.rs`) — and the
//! peers' REST APIs and the host (`real/peers.rs`). A random (or scripted) schedule of faults
//! (`faults.rs`) crashes nodes, kills postmasters and agents, stops agents (SIGSTOP), cuts and
//! slows the DCS, isolates members, cuts streaming and asks for switchovers. Every tick the
//! driver checks: never two primaries accepting writes; PostgreSQL becomes a primary only
//! while its member holds the leader key; no acknowledged commit lost in synchronous mode
//! (`real/commits.rs`); never leaderless for longer than ttl + loop_wait + 2 s while a healthy
//! candidate exists; every member follows the leader again in time; and after the last fault
//! healed the cluster becomes healthy again.
//!
//! One seed gives one trace. A failing seed replays with its trace:
//! `PGBATON_SIM_REAL_SEED=<n> cargo test -p pgbaton-sim --test real_runtime real_replay --
//! --nocapture` (synchronous: `--test real_sync_mode real_sync_replay` with
//! `PGBATON_SIM_SYNC=<label>`; failsafe: `--test real_failsafe`, see its header).
//!
//! Checks of the checker switch a duty off (`RealFlaw`: a port's, or the agent's own through
//! `pgbaton_agent::flaws`) and show the checks catch what follows (`tests/real_checker.rs`,
//! `tests/real_runtime.rs`, `tests/real_failsafe.rs`).

mod faults;
mod real;
mod report;
mod syncrep;

pub use faults::{
    random_dcs_schedule, random_quick_succession, random_schedule, Candidate, FaultKind,
    ScriptedFault, Target,
};
pub use pgbaton_core::{HaConfig, Millis, SyncConfig, SyncMode};
pub use real::{run_real, RealConfig, RealFlaw, RealReport};
pub use report::{Ack, Happening, TimelineModel, Violation, ViolationKind};

/// The name of member `i` (0-based): `m1`, `m2`, ...
pub fn member_name(i: usize) -> String {
    format!("m{}", i + 1)
}
