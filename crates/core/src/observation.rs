//! What a member observes at the start of a cycle: the input of [`crate::decide`].

use std::collections::BTreeMap;

use crate::{Lsn, Millis};

/// One complete snapshot, taken by the agent (or the simulator) before deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Monotonic now.
    pub now: Millis,
    /// Local PostgreSQL.
    pub pg: LocalPg,
    /// The long-running PostgreSQL operation the agent is carrying out, if any.
    pub job: JobView,
    /// The cluster as read from the DCS in this cycle; `None` when the DCS could not be read.
    pub dcs: Option<DcsView>,
    /// Until when this member's lease is certainly alive in the DCS: the send time of the last
    /// keepalive the DCS acknowledged, plus ttl. `None` when no keepalive was acknowledged.
    pub lease_valid_until: Option<Millis>,
    /// Fresh reports from the other members' REST APIs, gathered only when the cluster has
    /// no leader (to compare positions before racing for the leader key).
    pub peers: BTreeMap<String, PeerView>,
    /// The member the local replica is configured to stream from (what primary_conninfo
    /// names), as last written by the agent; `None` when unknown or none.
    pub configured_upstream: Option<String>,
}

/// Local PostgreSQL as seen from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalPg {
    /// No data directory (missing or empty).
    NoData,
    /// A data directory exists and PostgreSQL is not running.
    Stopped {
        system_id: u64,
        /// pg_control says the server last ran as a primary (shut down, or in production
        /// when it crashed): it may hold WAL that a newer leader never saw.
        was_primary: bool,
        timeline: u32,
        /// Latest checkpoint position.
        lsn: Lsn,
    },
    /// The postmaster runs but does not answer yet (starting up, crash recovery).
    Starting,
    /// Running and answering queries.
    Running(RunningPg),
}

/// A running, answering PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPg {
    pub system_id: u64,
    /// `pg_is_in_recovery()`: a replica. A primary is writable.
    pub in_recovery: bool,
    pub timeline: u32,
    /// Primary: current write position. Replica: the larger of received and replayed.
    pub lsn: Lsn,
    /// Replica: the WAL receiver is streaming.
    pub streaming: bool,
}

impl LocalPg {
    pub fn running(&self) -> Option<&RunningPg> {
        match self {
            LocalPg::Running(r) => Some(r),
            _ => None,
        }
    }

    /// Running as a primary (writable).
    pub fn is_primary(&self) -> bool {
        matches!(self, LocalPg::Running(r) if !r.in_recovery)
    }

    pub fn is_replica(&self) -> bool {
        matches!(self, LocalPg::Running(r) if r.in_recovery)
    }

    pub fn system_id(&self) -> Option<u64> {
        match self {
            LocalPg::Stopped { system_id, .. } => Some(*system_id),
            LocalPg::Running(r) => Some(r.system_id),
            _ => None,
        }
    }
}

/// The kinds of long-running operation on PostgreSQL the agent carries out in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Bootstrap,
    Clone,
    Rewind,
    Start,
    Stop,
    Promote,
}

/// State of the background operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobView {
    Idle,
    Running(JobKind),
    /// The last operation failed (kept until another one starts).
    Failed {
        kind: JobKind,
        error: String,
    },
}

/// The `initialize` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialize {
    /// Absent: the cluster was never bootstrapped.
    Absent,
    /// Claimed by a member that is running initdb (value names the member).
    ClaimedBy(String),
    /// Bootstrapped: the cluster's system identifier.
    SystemId(u64),
}

/// One snapshot of the cluster state in the DCS, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq)]
pub struct DcsView {
    pub initialize: Initialize,
    /// Holder of the `leader` key.
    pub leader: Option<String>,
    pub members: BTreeMap<String, MemberView>,
    /// The freshest leader position the DCS knows (`status` optime or the leader's document).
    pub leader_optime: Option<Lsn>,
    /// The highest timeline recorded in `history` (0 when empty).
    pub last_history_timeline: u32,
    /// The `config` key exists.
    pub config_present: bool,
}

/// A member's document in the DCS.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Patroni's state word (running, stopped, ...).
    pub state: String,
    pub is_primary: bool,
    pub lsn: Option<Lsn>,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    /// Tag `replicatefrom`: the member this one streams from (cascading).
    pub replicatefrom: Option<String>,
}

/// What a peer's REST API answered just now.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerView {
    /// Did not answer in time.
    Unreachable,
    Report {
        /// PostgreSQL runs as a replica.
        replica_running: bool,
        /// PostgreSQL runs as a primary (a leader that lost its key but still runs).
        primary_running: bool,
        lsn: Option<Lsn>,
        timeline: Option<u32>,
        nofailover: bool,
    },
}
