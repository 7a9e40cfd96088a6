//! The write-unavailability window of one crash, computed from the client's acknowledged
//! writes: from the last acknowledgement before the crash to the first one after it.

use std::time::{Duration, Instant};

use crate::writer::Ack;

/// What one crash cost the writing client.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// Last acknowledged write before the crash to the first one after it.
    pub gap: Duration,
    /// The crash (the kill signals sent) to the first acknowledged write after it.
    pub crash_to_write: Duration,
    /// The member that acknowledged the last write before the crash.
    pub member_before: String,
    /// The member that acknowledged the first write after the crash.
    pub member_after: String,
    /// Sequence numbers acknowledged before the crash (to check which survived).
    pub acked_before: Vec<i64>,
}

/// None until there is an acknowledged write on each side of `crash`. A write belongs to
/// the side its attempt began on: one sent before the crash whose acknowledgement was
/// already on its way counts as before (the old primary did accept it).
pub fn measure(acks: &[Ack], crash: Instant) -> Option<Gap> {
    let before = || acks.iter().filter(|a| a.sent < crash);
    let last_before = before().max_by_key(|a| a.at)?;
    let first_after = acks
        .iter()
        .filter(|a| a.sent >= crash)
        .min_by_key(|a| a.at)?;
    Some(Gap {
        gap: first_after.at - last_before.at,
        crash_to_write: first_after.at - crash,
        member_before: last_before.member.clone(),
        member_after: first_after.member.clone(),
        acked_before: before().map(|a| a.seq).collect(),
    })
}

/// The longest interval between consecutive acknowledgements, from the last one before
/// `event` on. This is the window a planned switchover costs: the old leader keeps taking
/// writes for a while after the command starts (it checkpoints first), so the first write
/// after the event says nothing; the hole comes later. For a crash it equals
/// [`measure`]'s gap unless writes stall again afterwards, which also counts.
pub fn longest_gap(acks: &[Ack], event: Instant) -> Option<Duration> {
    let start = acks.iter().filter(|a| a.sent < event).map(|a| a.at).max()?;
    let mut times: Vec<Instant> = acks.iter().map(|a| a.at).filter(|t| *t >= start).collect();
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).max()
}

/// The acknowledgement that ends [`longest_gap`]: the first write after the hole.
pub fn after_longest_gap(acks: &[Ack], event: Instant) -> Option<&Ack> {
    let start = acks.iter().filter(|a| a.sent < event).map(|a| a.at).max()?;
    let mut later: Vec<&Ack> = acks.iter().filter(|a| a.at >= start).collect();
    later.sort_by_key(|a| a.at);
    later
        .windows(2)
        .max_by_key(|w| w[1].at - w[0].at)
        .map(|w| w[1])
}

/// True when the last `n` acknowledged writes all went to `member` and the newest is at
/// most `fresh` old: the client writes steadily to the leader.
pub fn steady_on(acks: &[Ack], member: &str, n: usize, fresh: Duration) -> bool {
    if acks.len() < n {
        return false;
    }
    let tail = &acks[acks.len() - n..];
    tail.iter().all(|a| a.member == member) && tail.last().is_some_and(|a| a.at.elapsed() <= fresh)
}

/// Sequence numbers acknowledged before the crash that the new primary does not hold.
pub fn lost(acked_before: &[i64], stored: &[i64]) -> Vec<i64> {
    let stored: std::collections::HashSet<i64> = stored.iter().copied().collect();
    acked_before
        .iter()
        .copied()
        .filter(|s| !stored.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(t0: Instant, ms: u64, member: &str, seq: i64) -> Ack {
        Ack {
            sent: t0 + Duration::from_millis(ms.saturating_sub(2)),
            at: t0 + Duration::from_millis(ms),
            member: member.into(),
            seq,
            port: None,
        }
    }

    #[test]
    fn gap_spans_last_ack_before_to_first_after() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, "node1", 1),
            ack(t0, 50, "node1", 2),
            ack(t0, 4100, "node2", 80),
            ack(t0, 4150, "node2", 81),
        ];
        let crash = t0 + Duration::from_millis(70);
        let gap = measure(&acks, crash).expect("acks on both sides");
        assert_eq!(gap.gap, Duration::from_millis(4050));
        assert_eq!(gap.crash_to_write, Duration::from_millis(4030));
        assert_eq!(gap.member_before, "node1");
        assert_eq!(gap.member_after, "node2");
        assert_eq!(gap.acked_before, vec![1, 2]);
    }

    #[test]
    fn longest_gap_finds_the_hole_after_the_event() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, "node1", 1),
            ack(t0, 50, "node1", 2),
            // The switchover starts at 60 ms; the old leader still takes writes...
            ack(t0, 100, "node1", 3),
            ack(t0, 150, "node1", 4),
            // ...then hands over: nothing for 300 ms.
            ack(t0, 450, "node2", 10),
            ack(t0, 500, "node2", 11),
        ];
        let event = t0 + Duration::from_millis(60);
        assert_eq!(longest_gap(&acks, event), Some(Duration::from_millis(300)));
        let first = measure(&acks, event).expect("both sides");
        assert_eq!(first.gap, Duration::from_millis(50));
        assert_eq!(longest_gap(&acks[..2], event), None);
    }

    #[test]
    fn the_write_after_the_hole_names_who_took_over() {
        let t0 = Instant::now();
        let acks = vec![
            ack(t0, 0, "node2", 1),
            // Begun just as the kill went out, still answered by the dying leader.
            ack(t0, 53, "node2", 2),
            ack(t0, 31000, "node1", 3),
            ack(t0, 31050, "node1", 4),
        ];
        let event = t0 + Duration::from_millis(50);
        assert_eq!(
            after_longest_gap(&acks, event).map(|a| a.seq),
            Some(3),
            "not the write that slipped in at the kill"
        );
        assert_eq!(
            measure(&acks, event).map(|g| g.member_after),
            Some("node2".into())
        );
        assert!(after_longest_gap(&acks[..1], event).is_none());
    }

    #[test]
    fn no_gap_without_a_write_after_the_crash() {
        let t0 = Instant::now();
        let acks = vec![ack(t0, 0, "node1", 1)];
        assert_eq!(measure(&acks, t0 + Duration::from_millis(10)), None);
    }

    #[test]
    fn a_write_sent_before_the_crash_counts_before_even_if_acked_after() {
        let t0 = Instant::now();
        let mut acks = vec![ack(t0, 0, "node1", 1), ack(t0, 52, "node1", 2)];
        acks[1].sent = t0 + Duration::from_millis(49);
        acks.push(ack(t0, 3000, "node2", 60));
        let gap = measure(&acks, t0 + Duration::from_millis(50)).expect("both sides");
        assert_eq!(gap.gap, Duration::from_millis(2948));
        assert_eq!(gap.acked_before, vec![1, 2]);
    }

    #[test]
    fn steady_needs_recent_acks_all_on_the_member() {
        let now = Instant::now();
        let acks: Vec<Ack> = (0..10).map(|i| ack(now, 0, "node1", i)).collect();
        assert!(steady_on(&acks, "node1", 10, Duration::from_secs(1)));
        assert!(!steady_on(&acks, "node2", 10, Duration::from_secs(1)));
        assert!(!steady_on(&acks, "node1", 11, Duration::from_secs(1)));
        let mut mixed = acks.clone();
        mixed.push(ack(now, 0, "node2", 10));
        assert!(!steady_on(&mixed, "node1", 10, Duration::from_secs(1)));
    }

    #[test]
    fn lost_lists_acked_writes_missing_on_the_new_primary() {
        assert_eq!(lost(&[1, 2, 3, 4], &[1, 2, 5]), vec![3, 4]);
        assert!(lost(&[1, 2], &[1, 2, 3]).is_empty());
    }
}
