//! The one definition of a member's timeline: used by the member to judge itself, reported
//! to its peers (REST API, member document), and modelled by the simulator.
//!
//! PostgreSQL has several timeline sources, and they disagree right after a timeline switch:
//! - a standby's control file names the timeline of its last restartpoint, so it keeps the
//!   old timeline until the next one (up to `checkpoint_timeout`);
//! - the WAL receiver's `received_tli` exists only while the receiver runs (not once the
//!   upstream is gone, which is exactly when an election needs it);
//! - a walsender on the standby answers `IDENTIFY_SYSTEM` with the timeline of the last
//!   replayed record (what it would serve a cascading standby);
//! - the history files in `pg_wal` say where each earlier timeline ended.

/// Which of PostgreSQL's timeline sources gave [`PgStatus::timeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineSource {
    /// A primary's current WAL file.
    CurrentWal,
    /// A replica's replay timeline (`IDENTIFY_SYSTEM`), or the WAL receiver's when newer.
    Replay,
    /// `IDENTIFY_SYSTEM` failed: the WAL receiver's timeline.
    Receiver,
    /// `IDENTIFY_SYSTEM` failed and no receiver runs: the control file's last checkpoint or
    /// restartpoint, which lags after a timeline switch.
    ControlFile,
}

/// The one definition of a member's timeline, used for itself and reported to its peers.
///
/// A primary: the timeline of its current WAL file. A replica: the newest of the timeline
/// of its last replayed record (what a walsender on it answers to `IDENTIFY_SYSTEM`) and the
/// timeline its WAL receiver is receiving on (received WAL is on the history the replica
/// follows and will be replayed). The control file's checkpoint timeline is only a last
/// resort: a standby updates it at restartpoints, so right after a timeline switch it still
/// names the old timeline.
pub fn member_timeline(
    primary_wal_timeline: Option<u32>,
    replay_timeline: Option<u32>,
    receiver_timeline: Option<u32>,
    checkpoint_timeline: u32,
) -> (u32, TimelineSource) {
    if let Some(tli) = primary_wal_timeline {
        return (tli, TimelineSource::CurrentWal);
    }
    let receiver = receiver_timeline.filter(|t| *t > 0);
    match (replay_timeline, receiver) {
        (Some(replay), receiver) => (replay.max(receiver.unwrap_or(0)), TimelineSource::Replay),
        (None, Some(receiver)) => (receiver, TimelineSource::Receiver),
        (None, None) => (checkpoint_timeline, TimelineSource::ControlFile),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_reports_its_current_wal_timeline() {
        assert_eq!(
            member_timeline(Some(4), Some(3), None, 2),
            (4, TimelineSource::CurrentWal)
        );
    }

    #[test]
    fn a_replica_after_a_switch_reports_its_replay_timeline_not_the_control_file() {
        // Streaming stopped (the new leader is gone) before any restartpoint: the control
        // file still says 1, the replayed records are on 2.
        assert_eq!(
            member_timeline(None, Some(2), None, 1),
            (2, TimelineSource::Replay)
        );
    }

    #[test]
    fn received_wal_on_a_newer_timeline_counts_before_it_is_replayed() {
        assert_eq!(
            member_timeline(None, Some(2), Some(3), 1),
            (3, TimelineSource::Replay)
        );
    }

    #[test]
    fn without_identify_system_the_receiver_then_the_control_file() {
        assert_eq!(
            member_timeline(None, None, Some(3), 1),
            (3, TimelineSource::Receiver)
        );
        assert_eq!(
            member_timeline(None, None, Some(0), 1),
            (1, TimelineSource::ControlFile)
        );
    }
}
