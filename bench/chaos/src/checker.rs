//! The checker: from the history of operations, the monitor's rounds and the final state,
//! it computes what the run proves — acknowledged writes lost, writes present although they
//! failed, intervals with two writable primaries (seen by the monitor and confirmed by
//! acknowledged writes on both; and, from the servers, two members acknowledging writes on
//! one timeline), writes acknowledged on a branch the final history abandoned, and the
//! longest window without a successful write. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::converge::History;
use crate::history::{DualRound, Op, Outcome};

/// Two monitor rounds closer than this belong to one interval.
const MERGE_S: f64 = 0.25;
/// A write overlaps an interval when its [invoke, complete] comes within this of it.
const SLACK_S: f64 = 0.1;

pub struct Inputs<'a> {
    pub ops: &'a [Op],
    pub dual_rounds: &'a [DualRound],
    /// The ids on the final leader (the reference), if it could be read.
    pub final_ids: Option<&'a HashSet<i64>>,
    /// The ids on every member, if it could be read.
    pub member_ids: &'a [Option<HashSet<i64>>],
    pub history: Option<&'a History>,
    /// When the workload started and stopped (seconds on the run clock).
    pub workload: (f64, f64),
}

/// An interval in which two or more members were writable at once.
#[derive(Debug, Clone, PartialEq)]
pub struct DualInterval {
    pub start: f64,
    pub end: f64,
    pub members: Vec<usize>,
    /// Members among them that acknowledged a write overlapping the interval.
    pub acked_on: Vec<usize>,
}

impl DualInterval {
    pub fn confirmed(&self) -> bool {
        self.acked_on.len() > 1
    }
}

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Acknowledged, absent on the final leader.
    pub lost: Vec<i64>,
    /// Failed, present on the final leader (not an error: reported).
    pub failed_present: Vec<i64>,
    /// Unknown outcome, present on the final leader.
    pub unknown_present: usize,
    /// Every interval the monitor saw two writable members in.
    pub dual_intervals: Vec<DualInterval>,
    /// Timelines on which two or more members acknowledged writes.
    pub timeline_conflicts: Vec<(i32, Vec<usize>)>,
    /// Acknowledged on a timeline branch the final leader's history does not contain.
    pub dead_branch_acks: Vec<i64>,
    /// (member, acknowledged ids present on the final leader but missing on it).
    pub member_missing: Vec<(usize, usize)>,
    /// The longest window without an acknowledged write: (from, to).
    pub max_gap: (f64, f64),
}

impl Verdict {
    /// Confirmed dual-primary intervals plus timeline conflicts.
    pub fn dual_primary(&self) -> usize {
        self.dual_intervals.iter().filter(|d| d.confirmed()).count() + self.timeline_conflicts.len()
    }

    pub fn max_gap_s(&self) -> f64 {
        self.max_gap.1 - self.max_gap.0
    }
}

pub fn check(i: &Inputs<'_>) -> Verdict {
    let mut v = Verdict::default();
    for op in i.ops {
        match op.outcome {
            Outcome::Ok => v.acked += 1,
            Outcome::Fail => v.failed += 1,
            Outcome::Unknown => v.unknown += 1,
        }
    }
    if let Some(present) = i.final_ids {
        for op in i.ops {
            let here = present.contains(&op.id);
            match op.outcome {
                Outcome::Ok if !here => v.lost.push(op.id),
                Outcome::Fail if here => v.failed_present.push(op.id),
                Outcome::Unknown if here => v.unknown_present += 1,
                _ => {}
            }
        }
        for (k, ids) in i.member_ids.iter().enumerate() {
            if let Some(ids) = ids {
                let missing = i
                    .ops
                    .iter()
                    .filter(|o| {
                        o.outcome == Outcome::Ok && present.contains(&o.id) && !ids.contains(&o.id)
                    })
                    .count();
                if missing > 0 {
                    v.member_missing.push((k, missing));
                }
            }
        }
    }
    v.dual_intervals = dual_intervals(i.dual_rounds, i.ops);
    v.timeline_conflicts = timeline_conflicts(i.ops);
    if let Some(h) = i.history {
        v.dead_branch_acks = dead_branch_acks(i.ops, h);
    }
    v.max_gap = max_gap(i.ops, i.workload);
    v
}

/// Merge consecutive dual rounds; note which of their members acknowledged a write then.
pub fn dual_intervals(rounds: &[DualRound], ops: &[Op]) -> Vec<DualInterval> {
    let mut merged: Vec<DualInterval> = Vec::new();
    for r in rounds {
        match merged.last_mut() {
            Some(last) if r.start - last.end <= MERGE_S => {
                last.end = last.end.max(r.end);
                for m in &r.writable {
                    if !last.members.contains(m) {
                        last.members.push(*m);
                    }
                }
            }
            _ => merged.push(DualInterval {
                start: r.start,
                end: r.end,
                members: r.writable.clone(),
                acked_on: Vec::new(),
            }),
        }
    }
    for d in &mut merged {
        d.members.sort_unstable();
        let acked: BTreeSet<usize> = ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && d.members.contains(&o.member))
            .filter(|o| o.invoke <= d.end + SLACK_S && o.complete >= d.start - SLACK_S)
            .map(|o| o.member)
            .collect();
        d.acked_on = acked.into_iter().collect();
    }
    merged
}

/// Timelines on which writes were acknowledged by more than one member.
pub fn timeline_conflicts(ops: &[Op]) -> Vec<(i32, Vec<usize>)> {
    let mut by_tl: BTreeMap<i32, BTreeSet<usize>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if let Some(tl) = o.timeline {
            by_tl.entry(tl).or_default().insert(o.member);
        }
    }
    by_tl
        .into_iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(tl, m)| (tl, m.into_iter().collect()))
        .collect()
}

/// Acknowledged writes whose timeline/position is not on the final leader's history: on an
/// ancestor timeline at or past the point where it ended, or on a timeline not in it.
pub fn dead_branch_acks(ops: &[Op], h: &History) -> Vec<i64> {
    ops.iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter(|o| match (o.timeline, o.lsn) {
            (Some(tl), _) if tl == h.timeline => false,
            (Some(tl), Some(lsn)) => match h.ended.iter().find(|(t, _)| *t == tl) {
                Some((_, end)) => lsn >= *end,
                None => true,
            },
            _ => false,
        })
        .map(|o| o.id)
        .collect()
}

/// The longest stretch of the workload with no acknowledgement.
pub fn max_gap(ops: &[Op], (start, end): (f64, f64)) -> (f64, f64) {
    let mut acks: Vec<f64> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.complete)
        .filter(|t| *t >= start && *t <= end)
        .collect();
    acks.sort_by(f64::total_cmp);
    let mut points = vec![start];
    points.extend(acks);
    points.push(end);
    points
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        .unwrap_or((start, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: i64, member: usize, t: f64, outcome: Outcome, tl: i32, lsn: u64) -> Op {
        Op {
            id,
            client: 0,
            member,
            invoke: t,
            complete: t + 0.01,
            outcome,
            timeline: (outcome == Outcome::Ok).then_some(tl),
            lsn: (outcome == Outcome::Ok).then_some(lsn),
            error: None,
        }
    }

    fn inputs<'a>(ops: &'a [Op], rounds: &'a [DualRound], ids: &'a HashSet<i64>) -> Inputs<'a> {
        Inputs {
            ops,
            dual_rounds: rounds,
            final_ids: Some(ids),
            member_ids: &[],
            history: None,
            workload: (0.0, 10.0),
        }
    }

    #[test]
    fn lost_and_failed_present_are_counted_against_the_final_leader() {
        let ops = vec![
            op(1, 0, 1.0, Outcome::Ok, 1, 10),
            op(2, 0, 2.0, Outcome::Ok, 1, 20),
            op(3, 0, 3.0, Outcome::Fail, 1, 0),
            op(4, 0, 4.0, Outcome::Unknown, 1, 0),
        ];
        let ids: HashSet<i64> = [1, 3, 4].into();
        let v = check(&inputs(&ops, &[], &ids));
        assert_eq!((v.acked, v.failed, v.unknown), (2, 1, 1));
        assert_eq!(v.lost, vec![2]);
        assert_eq!(v.failed_present, vec![3]);
        assert_eq!(v.unknown_present, 1);
        assert_eq!(v.dual_primary(), 0);
    }

    #[test]
    fn the_longest_gap_includes_the_edges_of_the_workload() {
        let ops = vec![
            op(1, 0, 1.0, Outcome::Ok, 1, 0),
            op(2, 0, 2.0, Outcome::Unknown, 1, 0),
            op(3, 0, 6.0, Outcome::Ok, 1, 0),
        ];
        let (a, b) = max_gap(&ops, (0.0, 8.0));
        assert!(
            (a - 1.01).abs() < 1e-9 && (b - 6.01).abs() < 1e-9,
            "{a} {b}"
        );
        assert_eq!(max_gap(&[], (2.0, 5.0)), (2.0, 5.0));
    }

    #[test]
    fn two_writable_members_count_only_when_both_acknowledged_writes_then() {
        let rounds = vec![
            DualRound {
                start: 5.0,
                end: 5.05,
                writable: vec![0, 1],
            },
            DualRound {
                start: 5.1,
                end: 5.15,
                writable: vec![0, 1],
            },
            DualRound {
                start: 9.0,
                end: 9.05,
                writable: vec![1, 2],
            },
        ];
        let ops = vec![
            op(1, 0, 5.02, Outcome::Ok, 1, 0),
            op(2, 1, 5.12, Outcome::Ok, 2, 0),
            op(3, 2, 9.02, Outcome::Ok, 3, 0),
        ];
        let d = dual_intervals(&rounds, &ops);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].start, d[0].end), (5.0, 5.15));
        assert!(d[0].confirmed());
        assert_eq!(d[1].acked_on, vec![2]);
        assert!(!d[1].confirmed());
    }

    #[test]
    fn two_members_acknowledging_on_one_timeline_is_a_dual_primary() {
        let ops = vec![
            op(1, 0, 1.0, Outcome::Ok, 2, 0),
            op(2, 1, 2.0, Outcome::Ok, 2, 0),
            op(3, 1, 3.0, Outcome::Ok, 3, 0),
            op(4, 2, 4.0, Outcome::Fail, 3, 0),
        ];
        assert_eq!(timeline_conflicts(&ops), vec![(2, vec![0, 1])]);
        let ids: HashSet<i64> = [1, 2, 3].into();
        assert_eq!(check(&inputs(&ops, &[], &ids)).dual_primary(), 1);
    }

    #[test]
    fn writes_past_the_fork_of_their_timeline_are_on_a_dead_branch() {
        let h = History {
            timeline: 3,
            ended: vec![(1, 100), (2, 500)],
        };
        let ops = vec![
            op(1, 0, 1.0, Outcome::Ok, 1, 50),
            op(2, 0, 2.0, Outcome::Ok, 1, 120),
            op(3, 1, 3.0, Outcome::Ok, 2, 400),
            op(4, 2, 4.0, Outcome::Ok, 4, 900),
            op(5, 1, 5.0, Outcome::Ok, 3, 900),
        ];
        assert_eq!(dead_branch_acks(&ops, &h), vec![2, 4]);
    }
}
