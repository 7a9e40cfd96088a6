//! What a simulation run returns: violations of the promises, notable happenings (for
//! scenario tests), counters and the tail of the trace.

use std::fmt;

use pgbaton_core::{Lsn, Millis};

/// An acknowledged commit, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: u64,
    pub at: Millis,
    /// The primary that acknowledged it.
    pub member: String,
    pub timeline: u32,
    pub lsn: Lsn,
    /// False when that primary's agent was not in control: recorded, not promised.
    pub promised: bool,
}

/// How the agent's PostgreSQL adapter derives a member's timeline (the simulator can put the
/// old adapter back, to show that the liveness check finds what it caused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineModel {
    /// The fixed adapter: [`pgbaton_core::member_timeline`] fed with the replay timeline
    /// (`IDENTIFY_SYSTEM`), the WAL receiver's timeline while it streams and the control
    /// file's only as a last resort.
    #[default]
    Fixed,
    /// The old adapter: a replica's timeline is the WAL receiver's while it streams, else the
    /// control file's checkpoint timeline — which, right after a timeline switch, still
    /// names the old timeline until the next restartpoint.
    ControlFileWhenNotStreaming,
}

/// Which promise was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two PostgreSQL servers accepting writes at once.
    TwoPrimaries,
    /// PostgreSQL became a primary (promoted, started as one) while its member did not hold
    /// the leader key.
    PrimaryWithoutLease,
    /// Not healthy in time after the faults (one leader running a writable primary, every
    /// other member streaming from it), or a member that could follow the leader did not
    /// within the bound.
    NotLive,
    /// Promise 4: leaderless for longer than ttl + loop_wait + 2 s while a healthy candidate
    /// existed, at any moment of the run.
    Leaderless,
    /// Invariant 6: a member became (or runs as the leader's) primary without an acknowledged commit.
    AckedCommitLost,
    /// Invariant 7: the `sync` key names members that lack an acknowledged commit.
    SyncKeyWrong,
    /// Invariant 8: strict mode, and a commit was acknowledged with no synchronous standby.
    StrictAckedAlone,
}

/// One broken promise, with everything needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// Virtual time (ms).
    pub at: Millis,
    pub seed: u64,
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at {} ms: {:?}: {}",
            self.seed, self.at, self.kind, self.description
        )
    }
}

/// Notable things that happened, in order, for scenario tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    FaultStarted {
        at: Millis,
        member: String,
        fault: String,
    },
    FaultHealed {
        at: Millis,
        member: String,
        fault: String,
    },
    LeaderKeyTaken {
        at: Millis,
        member: String,
    },
    /// The leader key went away: released (`expired == false`) or its lease expired.
    LeaderKeyGone {
        at: Millis,
        member: String,
        expired: bool,
    },
    /// PostgreSQL of `member` began accepting writes (bootstrap, start as primary, promote).
    BecamePrimary {
        at: Millis,
        member: String,
        timeline: u32,
    },
    /// A writable PostgreSQL stopped accepting writes (stop, crash, kill).
    PrimaryStopped {
        at: Millis,
        member: String,
    },
    Rewound {
        at: Millis,
        member: String,
    },
    Cloned {
        at: Millis,
        member: String,
    },
    /// pg_rewind discarded WAL: the directory went back from `from` to `to`.
    WalDiscarded {
        at: Millis,
        member: String,
        from: Lsn,
        to: Lsn,
    },
    /// The WAL position of every member with a data directory when a fault started.
    Positions {
        at: Millis,
        lsns: Vec<(String, Lsn)>,
    },
    /// A leader wrote the `sync` key.
    SyncKeyWritten {
        at: Millis,
        leader: String,
        members: Vec<String>,
        quorum: Option<u32>,
    },
    /// A failsafe leader without the DCS sent a round of `POST /failsafe`; `acked`: every
    /// member of the topology accepted.
    FailsafeRound {
        at: Millis,
        member: String,
        acked: bool,
    },
    /// The `failover` key was written (a switchover request).
    SwitchoverRequested {
        at: Millis,
        leader: Option<String>,
        candidate: Option<String>,
    },
    /// The `failover` key was deleted by `member`.
    FailoverCleared {
        at: Millis,
        member: String,
    },
}
