//! The agent model of one member: what the real agent process keeps in memory between two
//! cycles (the core's `MemberState`, its lease, the last job failure) and whether the
//! process lives, runs or is stopped (SIGSTOP).

use pgbaton_core::{
    DcsView, Decision, JobKind, MemberState, Millis, Observation, Phase, SyncStandbyNames,
};

use crate::dcs::LeaseId;

#[derive(Debug, Clone)]
pub struct Agent {
    /// The process exists.
    pub alive: bool,
    /// Bumped at every kill and start, so that messages and wake-ups addressed to an
    /// earlier process are dropped.
    pub incarnation: u64,
    /// SIGSTOP: the process does nothing until then (PostgreSQL keeps running).
    pub stalled_until: Option<Millis>,
    /// The core's memory.
    pub state: MemberState,
    /// The lease this agent keeps alive (and attaches its keys to).
    pub lease: Option<LeaseId>,
    /// Send time of the last acknowledged keepalive of `lease` plus ttl.
    pub lease_valid_until: Option<Millis>,
    /// What primary_conninfo names, as last written by this process (unknown after a restart).
    pub configured_upstream: Option<String>,
    /// The synchronous_standby_names this process last put in force (unknown after a restart).
    pub configured_sync: Option<SyncStandbyNames>,
    /// Revision of the `sync` key in this process's last DCS read (its compare-and-swap base).
    pub sync_rev_seen: u64,
    /// The last background operation failed (kept until another one starts).
    pub last_failed: Option<(JobKind, String)>,
    /// When the core asked to be woken up; a wake event for another time is stale.
    pub next_wake: Millis,
    /// A mid-cycle stop fault waits for the next cycle: stop for this long after deciding.
    pub stall_in_next_cycle: Option<Millis>,
    /// Decided but not yet carried out when the process was stopped.
    pub pending: Option<Box<Pending>>,
    /// Waiting for a slow DCS read: the cycle continues when it returns or times out.
    pub reading: bool,
    /// A wake-up came while reading: cycle again right after.
    pub retrigger: bool,
    /// Failsafe mode: the cluster as this process last read it (whom a failsafe round asks).
    pub last_view: Option<DcsView>,
    /// Failsafe leader: send time of the last round every member acknowledged.
    pub failsafe_acked_at: Option<Millis>,
    /// Send time of that round plus ttl: the right it gives (for invariant 1).
    pub failsafe_valid_until: Option<Millis>,
    /// Member: the promise given to a failsafe leader (receipt + ttl); a new process starts
    /// with its start + ttl (it may have promised in its previous life).
    pub failsafe_promised_until: Option<Millis>,
    /// The reason of this process's last decision (for violation reports).
    pub last_reason: Option<String>,
    /// Since when this process's DCS reads have shown no leader key (what it measures a
    /// switchover's terms from).
    pub saw_leaderless_since: Option<Millis>,
}

/// A decision whose actions wait for the stopped agent to resume.
#[derive(Debug, Clone)]
pub struct Pending {
    pub observation: Observation,
    pub decision: Decision,
}

impl Agent {
    /// A process that does not exist yet.
    pub fn dead() -> Self {
        Agent {
            alive: false,
            incarnation: 0,
            stalled_until: None,
            state: MemberState::new(),
            lease: None,
            lease_valid_until: None,
            configured_upstream: None,
            configured_sync: None,
            sync_rev_seen: 0,
            last_failed: None,
            next_wake: 0,
            stall_in_next_cycle: None,
            pending: None,
            reading: false,
            retrigger: false,
            last_view: None,
            failsafe_acked_at: None,
            failsafe_valid_until: None,
            failsafe_promised_until: None,
            last_reason: None,
            saw_leaderless_since: None,
        }
    }

    /// A freshly started process: it remembers nothing.
    pub fn start(&mut self) {
        let incarnation = self.incarnation + 1;
        *self = Agent {
            alive: true,
            incarnation,
            ..Agent::dead()
        };
    }

    pub fn kill(&mut self) {
        self.alive = false;
        self.stalled_until = None;
        self.incarnation += 1;
    }

    /// Alive and not stopped: it can observe, decide and act.
    pub fn running(&self) -> bool {
        self.alive && self.stalled_until.is_none()
    }

    /// Invariant 1's notion: a live, running agent that believes it holds an unexpired
    /// lease (or failsafe right) as leader.
    pub fn believes_leader(&self, now: Millis) -> bool {
        let right = self.lease_valid_until.max(self.failsafe_valid_until);
        self.running()
            && right.is_some_and(|u| u > now)
            && matches!(
                self.state.phase,
                Phase::Leader | Phase::Promoting | Phase::RestartingPrimary
            )
    }
}
