//! The PostgreSQL model of one member: a data directory with its timeline history and WAL
//! position, and a postmaster that is stopped, starting or running (as primary or replica).
//!
//! What it keeps from reality: a replica streams only if its timeline history is a prefix
//! of its upstream's and its WAL does not go past the point where the upstream left the
//! replica's timeline (otherwise it has diverged, as real PostgreSQL refuses); promotion
//! starts a new timeline; pg_rewind cuts the data directory back to the divergence point;
//! a crashed primary keeps `was_primary`. What it drops: WAL content (a branch is known only
//! by its (timeline, switch point) history), checkpoint positions, slots, configuration files.
//!
//! Timelines: PostgreSQL has several sources of "the timeline" of a server, and right after
//! a timeline switch they disagree. The model keeps each as it is:
//! - the data directory's history (its history files): where each earlier timeline ended;
//! - the replay timeline: the timeline of the last replayed record (what a walsender on a
//!   standby answers to `IDENTIFY_SYSTEM`) — the data directory's current timeline, which a
//!   standby enters when it replays past the switch point;
//! - the WAL receiver's `received_tli`: only while the receiver streams from an upstream it
//!   can follow (none once that upstream is gone);
//! - pg_control's checkpoint timeline (`pg_control_checkpoint()`, pg_controldata): written
//!   only by a checkpoint or restartpoint — every `checkpoint_timeout` of a running server,
//!   at a clean shutdown, and after a promotion by the spread checkpoint it requests
//!   (`checkpoint_completion_target` 0.9 of `checkpoint_timeout` later); never at the switch
//!   itself. Simplification: a restartpoint records the replay timeline (a real one records
//!   the timeline of the last replayed checkpoint record, which is the new timeline once the
//!   new primary's first checkpoint was replayed).
//!
//! What the agent is shown is what the real adapter (crates/postgres/src/status.rs) reads,
//! through [`pgbaton_core::member_timeline`]: see [`Pg::observe`] and [`TimelineModel`].

use pgbaton_core::{member_timeline, LocalPg, Lsn, Millis, RunningPg, SyncStandbyNames};

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
    /// pg_control's latest checkpoint (or restartpoint) timeline. Lags `timeline()` after a
    /// switch until the next checkpoint or restartpoint.
    pub checkpoint_timeline: u32,
}

impl DataDir {
    /// What initdb plus a first start as primary leaves.
    pub fn new_cluster(system_id: u64) -> Self {
        DataDir {
            system_id,
            history: Vec::new(),
            lsn: 16_777_216,
            was_primary: true,
            checkpoint_timeline: 1,
        }
    }

    /// The current timeline: the one of the newest WAL the directory holds (for a running
    /// standby, the timeline of the last replayed record).
    pub fn timeline(&self) -> u32 {
        self.history.len() as u32 + 1
    }

    /// Where `timeline` ended according to this directory's history files.
    pub fn switch_point(&self, timeline: u32) -> Option<Lsn> {
        self.history
            .iter()
            .find(|(t, _)| *t == timeline)
            .map(|(_, s)| *s)
    }

    /// A checkpoint or restartpoint completes: pg_control records the current timeline.
    pub fn checkpoint(&mut self) {
        self.checkpoint_timeline = self.timeline();
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
    /// pg_rewind writes the source's pg_control into the target (`source_checkpoint_timeline`:
    /// the source's checkpoint timeline, as the agent leaves it, see `Pg::copy_source`).
    pub fn rewind_to(&mut self, leader: &DataDir, source_checkpoint_timeline: u32) {
        self.was_primary = false;
        if self.can_follow(leader) {
            return;
        }
        self.checkpoint_timeline = source_checkpoint_timeline;
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
    /// The WAL receiver streams: it got WAL from an upstream it can follow in the last tick.
    pub streaming: bool,
    /// When the running server's next checkpoint (primary) or restartpoint (standby)
    /// completes and updates pg_control's timeline.
    pub next_checkpoint_at: Option<Millis>,
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
            next_checkpoint_at: None,
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
        self.next_checkpoint_at = None;
    }

    /// The postmaster is up: the checkpointer's timer starts.
    pub fn started(&mut self, primary: bool, now: Millis, checkpoint_timeout: Millis) {
        self.process = Process::Running { primary };
        self.streaming = false;
        self.next_checkpoint_at = Some(now + checkpoint_timeout);
    }

    /// pg_promote(): a new timeline; pg_control keeps the old one until the checkpoint the
    /// promotion requests completes (a spread one: 0.9 × `checkpoint_timeout`).
    pub fn promoted(&mut self, now: Millis, checkpoint_timeout: Millis) {
        if let Some(d) = self.data.as_mut() {
            d.promote();
        }
        self.process = Process::Running { primary: true };
        self.streaming = false;
        self.upstream = None;
        self.next_checkpoint_at = Some(now + checkpoint_timeout * 9 / 10);
    }

    /// A clean shutdown ends with a shutdown checkpoint (a standby: a restartpoint).
    pub fn shut_down_cleanly(&mut self) {
        if let Some(d) = self.data.as_mut() {
            d.checkpoint();
        }
        self.halt();
    }

    /// Time passes: a checkpoint or restartpoint completes when it is due.
    pub fn checkpoint_if_due(&mut self, now: Millis, checkpoint_timeout: Millis) {
        let Some(at) = self.next_checkpoint_at.filter(|at| *at <= now) else {
            return;
        };
        if let Some(d) = self.data.as_mut() {
            d.checkpoint();
        }
        self.next_checkpoint_at = Some(at + checkpoint_timeout.max(1));
    }

    /// pg_control's checkpoint timeline as a copy of this running server leaves it (the
    /// source of pg_basebackup or pg_rewind): a primary's backup or rewind source is
    /// checkpointed first (pg_basebackup's start checkpoint; the agent's CHECKPOINT before
    /// pg_rewind when pg_control lags), a standby's only restarts at its last restartpoint.
    pub fn copy_source_checkpoint_timeline(&self) -> Option<u32> {
        let d = self.data.as_ref()?;
        Some(if self.is_running_primary() {
            d.timeline()
        } else {
            d.checkpoint_timeline
        })
    }

    /// The WAL receiver's `received_tli`, while a receiver streams.
    fn receiver_timeline(&self) -> Option<u32> {
        let d = self.data.as_ref()?;
        (self.is_running_replica() && self.streaming).then(|| d.timeline())
    }

    /// What the agent sees of it, read as the adapter reads it (see [`TimelineModel`]). A
    /// stopped directory is read with pg_controldata: its timeline is pg_control's (its
    /// position stays the end of its WAL: checkpoint positions are not modelled).
    pub fn observe(&self, model: TimelineModel) -> LocalPg {
        match (&self.data, self.process) {
            (None, _) => LocalPg::NoData,
            (Some(d), Process::Stopped) => LocalPg::Stopped {
                system_id: d.system_id,
                was_primary: d.was_primary,
                timeline: d.checkpoint_timeline,
                lsn: d.lsn,
            },
            (Some(_), Process::Starting) => LocalPg::Starting,
            (Some(d), Process::Running { primary }) => {
                let primary_wal_timeline = primary.then(|| d.timeline());
                // IDENTIFY_SYSTEM over a replication connection: the replay timeline (the
                // old adapter did not ask).
                let replay_timeline =
                    (!primary && model == TimelineModel::Fixed).then(|| d.timeline());
                let (timeline, _) = member_timeline(
                    primary_wal_timeline,
                    replay_timeline,
                    self.receiver_timeline(),
                    d.checkpoint_timeline,
                );
                LocalPg::Running(RunningPg {
                    system_id: d.system_id,
                    in_recovery: !primary,
                    timeline,
                    lsn: d.lsn,
                    streaming: !primary && self.streaming,
                    replicas: Vec::new(),
                })
            }
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
            checkpoint_timeline: history.len() as u32 + 1,
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
        old.rewind_to(&leader, 3);
        assert!(old.can_follow(&leader));
        assert_eq!(old.lsn, 900);
        assert!(!old.was_primary);

        let mut other_branch = dir(&[(1, 900)], 1_300);
        other_branch.rewind_to(&dir(&[(1, 800)], 1_000), 2);
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

    fn running_replica(data: DataDir, streaming: bool) -> Pg {
        let mut pg = Pg::empty();
        pg.data = Some(data);
        pg.started(false, 0, 300_000);
        pg.streaming = streaming;
        pg
    }

    fn reported(pg: &Pg, model: TimelineModel) -> u32 {
        pg.observe(model).running().map_or(0, |r| r.timeline)
    }

    #[test]
    fn a_replica_past_a_switch_keeps_the_old_timeline_in_pg_control_until_a_restartpoint() {
        // Streamed across the switch at 900: replayed WAL is on timeline 2, pg_control says 1.
        let upstream = dir(&[(1, 900)], 1_200);
        let mut data = dir(&[], 800);
        data.replay_from(&upstream, 1_000);
        assert_eq!((data.timeline(), data.checkpoint_timeline), (2, 1));
        let mut pg = running_replica(data, true);
        // While it streams, both adapters see timeline 2 (the receiver's).
        assert_eq!(reported(&pg, TimelineModel::Fixed), 2);
        assert_eq!(reported(&pg, TimelineModel::ControlFileWhenNotStreaming), 2);
        // The new leader is gone: no receiver. The old adapter falls back on pg_control.
        pg.streaming = false;
        assert_eq!(reported(&pg, TimelineModel::Fixed), 2);
        assert_eq!(reported(&pg, TimelineModel::ControlFileWhenNotStreaming), 1);
        // No restartpoint before checkpoint_timeout...
        pg.checkpoint_if_due(299_999, 300_000);
        assert_eq!(reported(&pg, TimelineModel::ControlFileWhenNotStreaming), 1);
        // ...then pg_control catches up.
        pg.checkpoint_if_due(300_000, 300_000);
        assert_eq!(reported(&pg, TimelineModel::ControlFileWhenNotStreaming), 2);
        assert_eq!(pg.next_checkpoint_at, Some(600_000));
    }

    #[test]
    fn promotion_leaves_pg_control_on_the_old_timeline_until_its_spread_checkpoint() {
        let mut pg = running_replica(dir(&[], 500), false);
        pg.promoted(1_000, 300_000);
        let d = pg.data.as_ref().unwrap();
        assert_eq!((d.timeline(), d.checkpoint_timeline), (2, 1));
        // A primary reports its current WAL file's timeline, whatever pg_control says.
        assert_eq!(reported(&pg, TimelineModel::ControlFileWhenNotStreaming), 2);
        // Crashed before the checkpoint: pg_controldata of the stopped directory says 1.
        pg.halt();
        assert!(matches!(
            pg.observe(TimelineModel::Fixed),
            LocalPg::Stopped { timeline: 1, .. }
        ));
        // A clean shutdown writes a shutdown checkpoint.
        pg.started(false, 2_000, 300_000);
        pg.shut_down_cleanly();
        assert_eq!(pg.data.as_ref().unwrap().checkpoint_timeline, 2);
    }

    #[test]
    fn a_copy_of_a_standby_gets_its_last_restartpoint_a_copy_of_a_primary_its_current_timeline() {
        let mut standby = dir(&[], 800);
        standby.replay_from(&dir(&[(1, 900)], 1_200), 1_000);
        let standby = running_replica(standby, true);
        assert_eq!(standby.copy_source_checkpoint_timeline(), Some(1));
        let mut primary = running_replica(dir(&[(1, 900)], 1_200), false);
        primary.process = Process::Running { primary: true };
        assert_eq!(primary.copy_source_checkpoint_timeline(), Some(2));
    }

    #[test]
    fn the_history_files_give_the_switch_point() {
        let d = dir(&[(1, 900), (2, 1_500)], 2_000);
        assert_eq!(d.switch_point(1), Some(900));
        assert_eq!(d.switch_point(2), Some(1_500));
        assert_eq!(d.switch_point(3), None);
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
