//! What a simulation run returns: violations of the promises, notable happenings (for
//! scenario tests), counters and the tail of the trace.

use std::collections::VecDeque;
use std::fmt;

use pgbaton_core::{Lsn, Millis};

use crate::commits::Ack;

/// Which promise was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Invariant 1: two running primaries whose live agents both believe they hold the lease.
    TwoLeaseHolders,
    /// Invariant 2: two running primaries whose agents are alive and in control.
    TwoPrimaries,
    /// Invariant 3: StartPrimary or Promote without an unexpired lease on the leader key.
    PrimaryWithoutLease,
    /// Invariant 5: no single leader with every member streaming from it in time.
    NotLive,
    /// Promise 4 (`liveness.rs`): leaderless for longer than ttl + loop_wait + 2 s while a
    /// healthy candidate existed, at any moment of the run.
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
            "seed {} at {} ms: {:?}: {} (replay: PGBATON_SIM_SEED={} cargo test -p pgbaton-sim replay -- --nocapture)",
            self.seed, self.at, self.kind, self.description, self.seed
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

/// A stretch of time without a leader during which a healthy candidate existed (see
/// `liveness.rs`): how long the candidates waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderlessWindow {
    /// When the cluster lost its leader.
    pub start: Millis,
    /// How long it stayed without one (to the end of the run if it never got one back).
    pub length: Millis,
    /// The longest stretch in it during which a healthy candidate within
    /// `maximum_lag_on_failover` existed, without the leader key changing hands.
    pub candidate_ms: Millis,
    /// The same for any healthy candidate, lagging or not.
    pub lagging_candidate_ms: Millis,
    /// A new leader ended it (false: the run ended first).
    pub ended: bool,
}

/// The result of [`crate::run`].
#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    /// Empty when every promise held. The run stops at the first safety violation.
    pub violations: Vec<Violation>,
    /// How many times a member took the leader key.
    pub leader_changes: u32,
    /// Events processed; the invariants were checked after each.
    pub events_checked: u64,
    /// Virtual time when the run ended.
    pub end_ms: Millis,
    /// When the cluster last became healthy (one leader, everyone streaming) after the faults.
    pub converged_at: Option<Millis>,
    /// Invariant 4 (weak form): total time replicas ran diverged from the running leader.
    pub diverged_replica_ms: Millis,
    /// Synchronous mode: the run ended without a leader because the `sync` key names no
    /// member that could hold every acknowledged commit (by design, not a violation): why.
    pub leaderless_by_design: Option<String>,
    /// Invariant 7's first breach when `SimConfig::check_sync_key` is off (the run went on).
    pub sync_key_breach: Option<Violation>,
    /// Every acknowledged client commit (synchronous mode only), in order.
    pub acks: Vec<Ack>,
    /// Every leaderless window during which a healthy candidate existed, in order.
    pub leaderless_windows: Vec<LeaderlessWindow>,
    pub happenings: Vec<Happening>,
    /// The last lines of the trace.
    pub trace: Vec<String>,
    /// A digest of the whole trace (determinism checks).
    pub trace_digest: u64,
}

/// A bounded trace with a digest of everything that went through it.
#[derive(Debug)]
pub struct Trace {
    lines: VecDeque<String>,
    capacity: usize,
    digest: u64,
}

impl Trace {
    pub fn new(capacity: usize) -> Self {
        Trace {
            lines: VecDeque::with_capacity(capacity),
            capacity,
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    pub fn push(&mut self, line: String) {
        for b in line.bytes() {
            // FNV-1a
            self.digest ^= u64::from(b);
            self.digest = self.digest.wrapping_mul(0x0100_0000_01b3);
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}
