//! The PostgreSQL model of one member: a data directory with its timeline history and WAL
//! position, and a postmaster that is stopped, starting or running (as primary or replica).
//!
//! What it keeps from reality: a replica streams only if its timeline history is a prefix
//! of its upstream's and its WAL does not go past the point where the upstream left the
//! replica's timeline (otherwise it has diverged, as real PostgreSQL refuses); promotion
//! starts a new timeline; pg_rewind cuts the data directory back to the divergence point;
//! a crashed primary keeps `was_primary`. What it drops: WAL content (a branch is known only
//! by its (timeline, switch point) history), checkpoints, slots, configuration files.

use pgbaton_core::{LocalPg, Lsn, RunningPg, SyncStandbyNames};

/// A data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub system_id: u64,
    /// Entry `i` is `(i + 1, switch)`: timeline `i + 1` ended at `switch` and the next began.
    pub history: Vec<(u32, Lsn)>,
    /// End of the WAL this directory holds.
    pub lsn: Lsn,
    /// pg_control says it last ran as a primary (clean shutdown or crash).
    pub was_primary: bool,
}

impl DataDir {
    /// What initdb plus a first start as primary leaves.
    pub fn new_cluster(system_id: u64) -> Self {
        DataDir {
            system_id,
            history: Vec::new(),
            lsn: 16_777_216,
            was_primary: true,
        }
    }

    pub fn timeline(&self) -> u32 {
        self.history.len() as u32 + 1
    }

    /// True when this directory holds the WAL up to `lsn` written on timeline
    /// `history.len() + 1` of system `system_id` after the timeline switches `history`:
    /// the branch of a commit, with the commit's position on it.
    pub fn holds(&self, system_id: u64, history: &[(u32, Lsn)], lsn: Lsn) -> bool {
        if self.system_id != system_id
            || self.history.len() < history.len()
            || self.history[..history.len()] != history[..]
        {
            return false;
        }
        self.end_of(history.len() as u32 + 1) >= lsn
    }

    /// Where timeline `tl` ends in this directory (its current position for the last one).
    fn end_of(&self, tl: u32) -> Lsn {
        self.history
            .get(tl as usize - 1)
            .map_or(self.lsn, |(_, s)| *s)
    }

    /// Real PostgreSQL's rule for a standby: it can replay `upstream`'s WAL iff it is the same
    /// system, its history is a prefix of the upstream's, and it did not write past the point
    /// where the upstream left its timeline (a standby ahead on the same timeline waits).
    pub fn can_follow(&self, upstream: &DataDir) -> bool {
        if self.system_id != upstream.system_id || self.history.len() > upstream.history.len() {
            return false;
        }
        if self.history[..] != upstream.history[..self.history.len()] {
            return false;
        }
        self.lsn <= upstream.end_of(self.timeline())
    }

    /// True when this directory holds WAL that `leader` never had: it must be rewound.
    pub fn diverged_from(&self, leader: &DataDir) -> bool {
        let shared_tl = self.common_timelines(leader) as u32 + 1;
        if self.timeline() > shared_tl {
            // We switched to a timeline the leader does not have (or at another point).
            return true;
        }
        leader.timeline() > shared_tl && self.lsn > leader.end_of(shared_tl)
    }

    /// How many leading history entries two directories share.
    fn common_timelines(&self, other: &DataDir) -> usize {
        self.history
            .iter()
            .zip(&other.history)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Streaming: take the upstream's WAL up to `new_lsn` and the timeline switches it crossed.
    pub fn replay_from(&mut self, upstream: &DataDir, new_lsn: Lsn) {
        let crossed = upstream
            .history
            .iter()
            .take_while(|(_, s)| *s < new_lsn)
            .count();
        self.history = upstream.history[..crossed.max(self.history.len())].to_vec();
        self.lsn = self.lsn.max(new_lsn);
    }

    /// pg_promote(): a new timeline that starts at the current position.
    pub fn promote(&mut self) {
        self.history.push((self.timeline(), self.lsn));
        self.was_primary = true;
    }

    /// pg_rewind from `leader`: back to the divergence point, on the leader's history. A
    /// directory that did not diverge is left as it is (pg_rewind: "no rewind required").
    pub fn rewind_to(&mut self, leader: &DataDir) {
        self.was_primary = false;
        if self.can_follow(leader) {
            return;
        }
        let common = self.common_timelines(leader);
        let shared_tl = common as u32 + 1;
        let fork = self.end_of(shared_tl).min(leader.end_of(shared_tl));
        let keep = leader
            .history
            .iter()
            .take_while(|(_, s)| *s < fork)
            .count()
            .max(common);
        self.history = leader.history[..keep].to_vec();
        self.lsn = fork;
    }
}

/// The postmaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Stopped,
    /// Started, not answering yet (the start job finishes it).
    Starting,
    Running {
        primary: bool,
    },
}

/// PostgreSQL of one member.
#[derive(Debug, Clone)]
pub struct Pg {
    pub data: Option<DataDir>,
    pub process: Process,
    /// primary_conninfo: the member a replica streams from.
    pub upstream: Option<String>,
    /// The WAL receiver got WAL in the last tick.
    pub streaming: bool,
    /// `synchronous_standby_names` in postgresql.conf (the agent writes it when it sets
    /// the names and at every start).
    pub ssn_conf: Option<SyncStandbyNames>,
    /// `synchronous_standby_names` in force in the running server (loaded at start and at
    /// reload); it governs commits once the server is a primary.
    pub ssn: Option<SyncStandbyNames>,
}

impl Pg {
    pub fn empty() -> Self {
        Pg {
            data: None,
            process: Process::Stopped,
            upstream: None,
            streaming: false,
            ssn_conf: None,
            ssn: None,
        }
    }

    pub fn is_running_primary(&self) -> bool {
        self.process == Process::Running { primary: true }
    }

    pub fn is_running_replica(&self) -> bool {
        self.process == Process::Running { primary: false }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.process, Process::Running { .. })
    }

    /// The postmaster goes away (stop finished, crash, kill). The data directory stays.
    pub fn halt(&mut self) {
        self.process = Process::Stopped;
        self.streaming = false;
    }

    /// What the agent sees of it.
    pub fn observe(&self) -> LocalPg {
        match (&self.data, self.process) {
            (None, _) => LocalPg::NoData,
            (Some(d), Process::Stopped) => LocalPg::Stopped {
                system_id: d.system_id,
                was_primary: d.was_primary,
                timeline: d.timeline(),
                lsn: d.lsn,
            },
            (Some(_), Process::Starting) => LocalPg::Starting,
            (Some(d), Process::Running { primary }) => LocalPg::Running(RunningPg {
                system_id: d.system_id,
                in_recovery: !primary,
                timeline: d.timeline(),
                lsn: d.lsn,
                streaming: !primary && self.streaming,
                replicas: Vec::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(history: &[(u32, Lsn)], lsn: Lsn) -> DataDir {
        DataDir {
            system_id: 1,
            history: history.to_vec(),
            lsn,
            was_primary: false,
        }
    }

    #[test]
    fn an_old_primary_that_wrote_past_the_switch_point_cannot_follow() {
        let new_leader = dir(&[(1, 900)], 1_200);
        assert!(dir(&[], 900).can_follow(&new_leader));
        assert!(dir(&[], 850).can_follow(&new_leader));
        assert!(!dir(&[], 901).can_follow(&new_leader));
        assert!(dir(&[], 901).diverged_from(&new_leader));
        assert!(!dir(&[], 850).diverged_from(&new_leader));
    }

    #[test]
    fn same_timeline_number_on_another_branch_cannot_follow() {
        let a = dir(&[(1, 900)], 1_000);
        let b = dir(&[(1, 880)], 1_100);
        assert!(!a.can_follow(&b));
        assert!(a.diverged_from(&b));
    }

    #[test]
    fn a_replica_ahead_on_the_same_timeline_waits_but_has_not_diverged() {
        let leader = dir(&[], 1_000);
        assert!(!dir(&[], 1_001).can_follow(&leader));
        assert!(!dir(&[], 1_000).diverged_from(&leader));
    }

    #[test]
    fn rewind_makes_a_diverged_directory_followable() {
        let leader = dir(&[(1, 900), (2, 1_500)], 2_000);
        let mut old = dir(&[], 1_000);
        old.was_primary = true;
        old.rewind_to(&leader);
        assert!(old.can_follow(&leader));
        assert_eq!(old.lsn, 900);
        assert!(!old.was_primary);

        let mut other_branch = dir(&[(1, 900)], 1_300);
        other_branch.rewind_to(&dir(&[(1, 800)], 1_000));
        assert!(other_branch.can_follow(&dir(&[(1, 800)], 1_000)));
    }

    #[test]
    fn streaming_follows_timeline_switches_once_past_them() {
        let upstream = dir(&[(1, 900)], 1_200);
        let mut replica = dir(&[], 800);
        replica.replay_from(&upstream, 900);
        assert_eq!(replica.timeline(), 1);
        replica.replay_from(&upstream, 1_000);
        assert_eq!(replica.timeline(), 2);
        assert_eq!(replica.lsn, 1_000);
        assert!(replica.can_follow(&upstream));
    }

    #[test]
    fn a_commit_is_held_only_on_its_branch_up_to_its_position() {
        // Written at 950 on timeline 2, which began at 900.
        let branch = [(1, 900)];
        assert!(dir(&[(1, 900)], 950).holds(1, &branch, 950));
        assert!(!dir(&[(1, 900)], 949).holds(1, &branch, 950));
        assert!(!dir(&[(1, 880)], 2_000).holds(1, &branch, 950));
        assert!(!dir(&[], 2_000).holds(1, &branch, 950));
        assert!(dir(&[(1, 900), (2, 960)], 2_000).holds(1, &branch, 950));
        assert!(!dir(&[(1, 900), (2, 940)], 2_000).holds(1, &branch, 950));
        // Written on timeline 1 at 800: held by every branch that left timeline 1 after it.
        assert!(dir(&[(1, 900)], 1_000).holds(1, &[], 800));
        assert!(!dir(&[(1, 700)], 1_000).holds(1, &[], 800));
        assert!(!dir(&[], 1_000).holds(2, &[], 800));
    }

    #[test]
    fn promotion_starts_a_timeline() {
        let mut d = dir(&[], 500);
        d.promote();
        assert_eq!(d.timeline(), 2);
        assert_eq!(d.history, vec![(1, 500)]);
        assert!(d.was_primary);
    }
}
