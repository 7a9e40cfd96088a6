//! The pure HA decision core of pgbaton.
//!
//! One function, [`decide`], maps what a member observes (its local PostgreSQL, one
//! snapshot of the cluster state in the DCS, the freshest positions of its peers, the
//! monotonic time) and its own small state to a [`Decision`]: the next state, the actions
//! to carry out, a reason in plain words and when to look again. Nothing in this crate
//! does I/O or reads a clock; the agent (real) and the simulator (virtual) feed it and
//! carry out its actions. Decisions are level-triggered: each comes from one complete
//! snapshot, and no action is assumed to have worked until a later observation shows it.
//!
//! The states and transitions are documented in `docs/ARCHITECTURE.md`; the safety
//! promises (at most one writable primary, a returning old primary never serves writes)
//! are checked by `pgbaton-sim` on every simulated step.

mod action;
mod command;
mod config;
mod decide;
mod election;
pub mod failsafe;
mod observation;
pub mod pg_text;
mod reason;
mod state;
mod switchover;
mod sync;
mod timeline;
pub mod watchdog;

pub use action::{Action, AgentAction, DcsAction, JobAction, PgAction, StopMode};
pub use command::{CommandVerdict, MemberCommand};
pub use config::{HaConfig, SyncConfig, SyncMode};
pub use decide::{decide, Decision, PEERS_RECHECK_MS};
pub use election::{evaluate_candidacy, Candidacy};
pub use observation::{
    DcsView, FailoverRequest, Initialize, JobKind, JobView, LocalPg, MemberView, Observation,
    PeerView, ReplicaConnection, RunningPg, SyncKey, SyncStandbyNames,
};
pub use reason::{MissingWal, Reason};
pub use state::{DocState, MemberState, Phase, PublishedState};
pub use switchover::{candidate_refusal, CandidateFacts};
pub use timeline::{member_timeline, TimelineSource};
pub use watchdog::{WatchdogRefusal, WatchdogState};

/// Monotonic time in milliseconds (the agent's `Instant` since start, or the simulator's clock).
pub type Millis = u64;

/// A WAL position as a plain byte offset (PostgreSQL's `pg_lsn`).
pub type Lsn = u64;
