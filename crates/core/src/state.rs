//! The member's own memory between two decisions, and the state word it publishes.
//!
//! Everything else a decision needs is observed afresh each cycle; these few fields are
//! what cannot be observed (when did the cluster lose its leader, since when does our
//! replica not stream, how long may we keep restarting a crashed primary).

use std::collections::BTreeMap;
use std::fmt;

use crate::observation::{JobKind, JobView, LocalPg};
use crate::{Lsn, Millis};

/// The node states of the member state machine (see docs/ARCHITECTURE.md for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Just started; nothing decided yet.
    Init,
    /// Won the `initialize` race: creating the cluster.
    Bootstrapping,
    /// Copying the leader's data directory (pg_basebackup).
    Cloning,
    /// Running pg_rewind against the leader.
    Rewinding,
    /// Following the leader (or waiting for one) as a replica.
    Replica,
    /// Raced for the leader key; promotion waits for observing the key as ours.
    Candidate,
    /// pg_promote() issued while holding the leader key and an unexpired lease.
    Promoting,
    /// Primary holding the leader key and an unexpired lease.
    Leader,
    /// Standby cluster: holding the leader key while running as a replica of the remote
    /// primary (the standby leader); the other members follow it.
    StandbyLeader,
    /// The leader's PostgreSQL stopped; restarting it in place while the lease holds.
    RestartingPrimary,
    /// Stopping a primary that may no longer accept writes.
    Demoting,
    /// Planned switchover: stopping cleanly, then giving the leader key to the candidate.
    HandingOver,
    /// Refusing to act (e.g. a data directory from another cluster); needs the operator.
    Halted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Phase::Init => "init",
            Phase::Bootstrapping => "bootstrapping",
            Phase::Cloning => "cloning",
            Phase::Rewinding => "rewinding",
            Phase::Replica => "replica",
            Phase::Candidate => "candidate",
            Phase::Promoting => "promoting",
            Phase::Leader => "leader",
            Phase::StandbyLeader => "standby leader",
            Phase::RestartingPrimary => "restarting primary",
            Phase::Demoting => "demoting",
            Phase::HandingOver => "handing over",
            Phase::Halted => "halted",
        };
        f.write_str(word)
    }
}

/// The member's memory. `decide` returns the next one; nothing else is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub phase: Phase,
    /// When this member first saw the cluster without a leader (for the lag grace rule).
    pub leaderless_since: Option<Millis>,
    /// Since when every DCS read found no leader key, none failing in between: a leader
    /// may have come and gone unseen across a failed read. A quorum candidate counts a
    /// peer's position read since then (`election.rs`).
    pub no_leader_read_since: Option<Millis>,
    /// Leader whose PostgreSQL stopped: give the leader key up if it is not running by then.
    pub restart_deadline: Option<Millis>,
    /// Replica: since when the WAL receiver does not stream from a running leader.
    pub not_streaming_since: Option<Millis>,
    /// Replica stopped because it could not stream: rewind before starting it again.
    pub rewind_needed: bool,
    /// The stopped data directory was just prepared as a replica by a clone or a rewind
    /// (pg_control of a fresh clone still says "in production"): start it as a replica.
    pub prepared_as_replica: bool,
    /// Set at promotion: the timeline and position we promoted from, for `history`.
    pub promoted_from: Option<(u32, Lsn)>,
    /// Why the member halted, for the operator.
    pub halted_because: Option<String>,
    /// Leader in synchronous mode: the WAL position when the synchronous standby names last
    /// changed. A new synchronous standby enters the `sync` key only once it has flushed past
    /// it (so it holds every commit acknowledged before it became synchronous).
    pub sync_changed_at: Option<Lsn>,
    /// Leader: when it last saw the member key of each member that streams from it. A
    /// member whose key disappeared keeps its physical slot until `member_slots_ttl` after this.
    pub slot_members_seen: BTreeMap<String, Millis>,
    /// Replica not streaming: its position and since when it has not moved.
    pub not_streaming_position: Option<(Lsn, Millis)>,
    /// A rewind ran (and did not fail) against this leader on this timeline of its, and the
    /// replica has not streamed since: rewinding again cannot help (pg_rewind's "no rewind
    /// required" is no cure for missing WAL).
    pub rewound_for: Option<(String, Option<u32>)>,
    /// Stopped because the WAL it needs is gone: move the data directory aside and re-clone.
    pub reclone_pending: bool,
    /// Stopping for an operator's reinitialize: move the data directory aside and clone.
    pub reinit_pending: bool,
    /// When this member last moved its data directory aside for an automatic re-clone.
    pub last_reclone_at: Option<Millis>,
    /// The WAL this replica needs is gone from its upstream (published as `WAL missing` until
    /// it streams again).
    pub wal_missing: bool,
    /// Leader with a switchover due: the `failover` key revision it is for and when the
    /// leader started waiting for the routers to pause (`switchover_drain_timeout` runs from it).
    pub drain_started: Option<(i64, Millis)>,
    /// Bootstraps of this member that failed since its agent started; at
    /// [`MAX_BOOTSTRAP_ATTEMPTS`] it no longer races for `initialize` (each failure moves a
    /// data directory aside, and a bootstrap that fails for a lasting cause would fill the
    /// disk with them). Restarting the agent is the operator's "try again".
    pub bootstrap_failures: u32,
    /// The revision of the `config` key whose dynamic configuration is in force here (`None`:
    /// the `bootstrap.dcs` section, until the first read of the key).
    pub config_revision_applied: Option<i64>,
}

/// Failed bootstraps after which a member stops racing for `initialize` until its agent
/// restarts.
pub const MAX_BOOTSTRAP_ATTEMPTS: u32 = 3;

impl MemberState {
    pub fn new() -> Self {
        MemberState {
            phase: Phase::Init,
            leaderless_since: None,
            no_leader_read_since: None,
            restart_deadline: None,
            not_streaming_since: None,
            rewind_needed: false,
            prepared_as_replica: false,
            promoted_from: None,
            halted_because: None,
            sync_changed_at: None,
            slot_members_seen: BTreeMap::new(),
            not_streaming_position: None,
            rewound_for: None,
            reclone_pending: false,
            reinit_pending: false,
            last_reclone_at: None,
            wal_missing: false,
            drain_started: None,
            bootstrap_failures: 0,
            config_revision_applied: None,
        }
    }
}

impl Default for MemberState {
    fn default() -> Self {
        Self::new()
    }
}

/// The `state` word of the member document (Patroni's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedState {
    Running,
    Starting,
    Stopped,
    Stopping,
    CreatingReplica,
    InitializingNewCluster,
    Rewinding,
    Promoting,
    Halted,
    /// A replica whose upstream no longer has the WAL it needs (pgbaton's word: it is
    /// re-cloned, or waits for the archive, see the agent's log).
    WalMissing,
}

impl PublishedState {
    /// What to publish for a local PostgreSQL and background operation.
    pub fn derive(phase: Phase, pg: &LocalPg, job: &JobView) -> Self {
        if phase == Phase::Halted {
            return PublishedState::Halted;
        }
        match job {
            JobView::Running(JobKind::Bootstrap) => return PublishedState::InitializingNewCluster,
            JobView::Running(JobKind::Clone) => return PublishedState::CreatingReplica,
            JobView::Running(JobKind::Rewind) => return PublishedState::Rewinding,
            JobView::Running(JobKind::Start) => return PublishedState::Starting,
            JobView::Running(JobKind::Stop) => return PublishedState::Stopping,
            JobView::Running(JobKind::Promote) => return PublishedState::Promoting,
            _ => {}
        }
        match pg {
            LocalPg::Running(_) => PublishedState::Running,
            LocalPg::Starting => PublishedState::Starting,
            LocalPg::Stopped { .. } | LocalPg::NoData => PublishedState::Stopped,
        }
    }

    /// [`PublishedState::derive`] for a member, saying `WAL missing` instead of running,
    /// starting or stopped while the WAL its replica needs is gone.
    pub fn of_member(state: &MemberState, pg: &LocalPg, job: &JobView) -> Self {
        let word = Self::derive(state.phase, pg, job);
        match word {
            PublishedState::Running | PublishedState::Starting | PublishedState::Stopped
                if state.wal_missing =>
            {
                PublishedState::WalMissing
            }
            other => other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PublishedState::Running => "running",
            PublishedState::Starting => "starting",
            PublishedState::Stopped => "stopped",
            PublishedState::Stopping => "stopping",
            PublishedState::CreatingReplica => "creating replica",
            PublishedState::InitializingNewCluster => "initializing new cluster",
            PublishedState::Rewinding => "running pg_rewind",
            PublishedState::Promoting => "promoting",
            PublishedState::Halted => "halted",
            PublishedState::WalMissing => "WAL missing",
        }
    }

    /// Every word, for parsing and tests.
    pub const ALL: [PublishedState; 10] = [
        PublishedState::Running,
        PublishedState::Starting,
        PublishedState::Stopped,
        PublishedState::Stopping,
        PublishedState::CreatingReplica,
        PublishedState::InitializingNewCluster,
        PublishedState::Rewinding,
        PublishedState::Promoting,
        PublishedState::Halted,
        PublishedState::WalMissing,
    ];

    /// The word back (`None`: not one pgbaton publishes).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

/// The `state` word of another member's document, as decisions read it: a word pgbaton
/// publishes, or another one (Patroni's `crashed`, `restart failed`, ...), kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocState {
    Known(PublishedState),
    Other(String),
}

impl DocState {
    pub fn parse(word: &str) -> Self {
        PublishedState::parse(word)
            .map_or_else(|| DocState::Other(word.to_string()), DocState::Known)
    }

    /// PostgreSQL runs there (`running`).
    pub fn is_running(&self) -> bool {
        *self == DocState::Known(PublishedState::Running)
    }
}

impl From<&str> for DocState {
    fn from(word: &str) -> Self {
        DocState::parse(word)
    }
}

impl std::fmt::Display for DocState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocState::Known(s) => f.write_str(s.as_str()),
            DocState::Other(word) => f.write_str(word),
        }
    }
}

#[cfg(test)]
mod doc_state_tests {
    use super::*;

    #[test]
    fn every_published_word_reads_back_and_others_are_kept() {
        for s in PublishedState::ALL {
            assert_eq!(PublishedState::parse(s.as_str()), Some(s));
            assert_eq!(DocState::parse(s.as_str()), DocState::Known(s));
        }
        assert!(DocState::parse("running").is_running());
        let crashed = DocState::parse("crashed");
        assert_eq!(crashed, DocState::Other("crashed".into()));
        assert!(!crashed.is_running());
        assert_eq!(crashed.to_string(), "crashed");
    }
}
