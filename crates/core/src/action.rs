//! What the core asks the agent to do. Actions are verbs; the agent carries them out in the
//! order given and reports the outcome only through the next observation.

use std::fmt;

use crate::observation::SyncStandbyNames;
use crate::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: disconnect clients, checkpoint, stop.
    Fast,
    /// SIGQUIT: stop at once (crash recovery on the next start). Used when the lease is about to expire.
    Immediate,
    /// CHECKPOINT while still running, then a fast stop: the planned handover of a switchover
    /// (the shutdown checkpoint is then short and every byte of WAL reaches the replicas).
    CheckpointThenFast,
}

/// What the core asks for, in typed groups: the agent carries out each group in its own
/// place (`Dcs` through the DCS port, `Agent` in its loop, `Pg` inline on PostgreSQL, `Job`
/// in the background), every match on them exhaustive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Dcs(DcsAction),
    Agent(AgentAction),
    Pg(PgAction),
    Job(JobAction),
}

/// Requests to the DCS (the agent sends them to etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcsAction {
    /// Keep this member's lease alive (and with it the member key and, for the leader, the leader key).
    RenewLease,
    /// Publish `members/<name>` (the agent builds the document from the observation and the
    /// decision's published state).
    PublishMember,
    /// Create `initialize` with our claim, iff absent: the bootstrap race.
    ClaimInitialize,
    /// Replace our claim in `initialize` by the system identifier of the new cluster.
    WriteInitialize { system_id: u64 },
    /// Give the bootstrap race back (our bootstrap failed).
    CancelInitialize,
    /// Write the bootstrap dynamic configuration to `config` iff absent.
    WriteBootstrapConfig,
    /// Take the `leader` key iff absent, attached to our lease.
    AcquireLeader,
    /// Delete the `leader` key iff it holds our name.
    ReleaseLeader,
    /// Leader: publish its current WAL position in `status`.
    WriteStatus { optime: Lsn },
    /// Leader: write `history` as its own timeline history says: the row for the timeline
    /// it promoted from (`lsn`: where it saw that timeline end, 0 when unknown; the history
    /// file is authoritative) and the rows before it, replacing rows of another branch.
    AppendHistory { timeline: u32, lsn: Lsn },
    /// Leader: write the `sync` key (compare-and-swap on its revision).
    WriteSync {
        members: Vec<String>,
        quorum: Option<u32>,
    },
    /// Delete the `failover` key (done, refused, or stale).
    ClearFailover,
    /// Leader in failsafe mode: write the `failsafe` key naming these members (the agent
    /// adds each member's `api_url`).
    WriteFailsafe { members: Vec<String> },
}

/// The agent's own settings and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAction {
    /// Put the dynamic configuration of the `config` key just read in force (HA timing and
    /// rules; PostgreSQL parameters, rewritten and reloaded when they changed). Decided when
    /// the key's revision is not the one in force (`MemberState::config_revision_applied`).
    ApplyDynamicConfig,
    /// Failsafe leader whose DCS read failed: ask every member of the failsafe topology, in
    /// parallel and within a short bound, to accept it (`POST /failsafe`); when every one
    /// does, the round's send time is the next observation's `failsafe_acked_at`.
    FailsafeRound,
}

/// PostgreSQL operations the agent does inline, within the cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgAction {
    /// Leader: put `synchronous_standby_names` in force (`None`: asynchronous) and reload.
    SetSyncStandbyNames { names: Option<SyncStandbyNames> },
    /// Leader: keep one physical slot per other member, drop the slots of members that left.
    SyncSlots { members: Vec<String> },
    /// Leader: make the publications and subscriptions of the dynamic configuration
    /// (`logical:`) what it declares, drop those it names for dropping, and report their
    /// state (the agent does it in the background, at most one round at a time).
    ApplyLogical,
    /// Replica: point primary_conninfo at another upstream (or none) and reload.
    Repoint { upstream: Option<String> },
    /// Rename the data directory aside (never delete it).
    MoveDataAside { reason: &'static str },
    /// Before promoting from timeline `after` while the cluster has used timelines up to
    /// `through` on another branch (their leader was lost before this member streamed from
    /// it): put a history file for each of `after + 1 ..= through` into `pg_wal` (rows: the
    /// timelines `ended` records before it, from the `history` key), so that PostgreSQL's
    /// promotion picks `through + 1`. Without them it takes `after + 1` again: a second
    /// branch under an id another member's data is on, which nothing could tell apart and
    /// which that member could never follow. When the files cannot be written, this cycle's
    /// `Promote` is not done.
    ReserveTimelines {
        after: u32,
        through: u32,
        ended: Vec<(u32, Lsn)>,
    },
}

/// PostgreSQL operations run in the background, one at a time (their outcome is seen as
/// `JobView`); `Stop` and `InstallSlotCopies` start a stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    /// initdb, write configuration, start as the new cluster's primary, create users.
    Bootstrap,
    /// pg_basebackup from a member, then the data directory is a stopped replica.
    Clone { from: String },
    /// pg_rewind from the leader.
    Rewind { from: String },
    /// Start PostgreSQL as a replica (standby.signal) streaming from `upstream`.
    StartReplica { upstream: Option<String> },
    /// Start PostgreSQL as the primary. Only ever decided while holding an unexpired lease.
    StartPrimary,
    /// Stop PostgreSQL; an immediate stop preempts any other running operation.
    Stop { mode: StopMode },
    /// Replica: stop PostgreSQL (fast) and install the copies of the leader's logical slots
    /// that are ready; it is started again as a replica afterwards.
    InstallSlotCopies,
    /// pg_promote(). Only ever decided after observing ourselves as holder of the leader key.
    Promote,
}

impl Action {
    /// True for requests to the DCS.
    pub fn is_dcs(&self) -> bool {
        matches!(self, Action::Dcs(_))
    }

    /// True for operations the agent runs in the background (one at a time).
    pub fn is_job(&self) -> bool {
        matches!(self, Action::Job(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Dcs(request) => write!(f, "{request:?}"),
            Action::Agent(step) => write!(f, "{step:?}"),
            Action::Pg(operation) => operation.fmt(f),
            Action::Job(job) => job.fmt(f),
        }
    }
}

impl fmt::Display for PgAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgAction::Repoint { upstream: Some(u) } => write!(f, "repoint replication to {u}"),
            PgAction::Repoint { upstream: None } => write!(f, "repoint replication to nothing"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl fmt::Display for JobAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobAction::Clone { from } => write!(f, "clone from {from}"),
            JobAction::Rewind { from } => write!(f, "rewind from {from}"),
            JobAction::StartReplica { upstream: Some(u) } => write!(f, "start as replica of {u}"),
            JobAction::StartReplica { upstream: None } => write!(f, "start as replica"),
            other => write!(f, "{other:?}"),
        }
    }
}
