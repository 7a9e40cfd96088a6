//! The read checker: from the readers' reads, the writers' history and the final leader's ids
//! it finds (a) stale primary reads — a read from a member that said it was not in recovery
//! and did not see a write acknowledged before the read was invoked (linearizability would
//! require it); (b) non-monotonic reads — on one reader's leader path (across its
//! reconnections: the guarantee a client gets from the cluster, not from one server), a read
//! that sees, for some writing client, a smaller largest id than an earlier read did; and
//! (c) how stale replica reads were (the oldest acknowledged write not yet visible: seconds and
//! number of ids). Reads from members in recovery are replica reads whatever path chose them:
//! a demoted old leader is a replica and may lag.
//!
//! Losses are told apart from violations with the final state: a missing write that the final
//! leader does not have either was lost (async mode; in sync mode it is already counted as
//! `lost`), so a read missing it is "stale from loss", not a stale read; a decrease whose
//! earlier id is absent at the end is "from loss" (the earlier read saw a write the cluster
//! later lost — acknowledged or never acknowledged), and the session's baseline restarts from
//! the later read. Without a readable final state every missing write counts as present.
//! Relies on each writing client being sequential: its ids and completion times grow together.
//! Pure: no I/O.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Op, Outcome, Read, ReadPath};

pub struct ReadInputs<'a> {
    pub reads: &'a [Read],
    pub ops: &'a [Op],
    /// Ids on the final leader, if it could be read.
    pub final_ids: Option<&'a HashSet<i64>>,
}

/// A read from a writable member that missed acknowledged writes the cluster kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleRead {
    pub member: usize,
    pub invoke: f64,
    /// Acknowledged (before the read was invoked) writes it did not see.
    pub missing: usize,
    /// How long before the read the oldest of them was acknowledged.
    pub age_s: f64,
}

/// A leader-path read that saw less than an earlier read of the same reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub reader: u16,
    pub member: usize,
    pub invoke: f64,
    pub client: usize,
    /// The largest id of `client` seen earlier, and the one this read saw.
    pub earlier: i64,
    pub now: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ReadVerdict {
    /// Leader-path reads answered by a member not in recovery.
    pub leader_reads: usize,
    /// Reads answered by a member in recovery (either path).
    pub replica_reads: usize,
    pub stale_primary: Vec<StaleRead>,
    /// Reads from a writable member missing only writes the run lost.
    pub stale_from_loss: usize,
    pub nonmonotonic: Vec<Regression>,
    /// Decreases after a read had seen an acknowledged write that was lost.
    pub decrease_from_acked_loss: usize,
    /// Decreases after a read had seen a write never acknowledged that was lost.
    pub decrease_from_unacked_loss: usize,
    /// The stalest replica read: (seconds, member, at).
    pub replica_max_stale_s: Option<(f64, usize, f64)>,
    /// Most acknowledged writes one replica read did not see.
    pub replica_max_stale_ids: usize,
}

/// One client's acknowledged writes, by id: (id, acknowledged at, kept by the final leader).
type Acked = Vec<(i64, f64, bool)>;

fn acked_by_client(ops: &[Op], final_ids: Option<&HashSet<i64>>) -> BTreeMap<usize, Acked> {
    let mut by: BTreeMap<usize, Acked> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let kept = final_ids.is_none_or(|ids| ids.contains(&o.id));
        by.entry(usize::from(o.client))
            .or_default()
            .push((o.id, o.complete, kept));
    }
    for list in by.values_mut() {
        list.sort_by_key(|(id, _, _)| *id);
    }
    by
}

/// Acknowledged writes a read should have seen and did not: (kept ones, lost ones, the
/// earliest acknowledgement among the kept ones).
fn missing(read: &Read, acked: &BTreeMap<usize, Acked>) -> (usize, usize, Option<f64>) {
    let (mut kept, mut lost, mut oldest) = (0, 0, None::<f64>);
    for (client, list) in acked {
        let visible = read.max_ids.get(*client).copied().unwrap_or(0);
        let after = list.partition_point(|(id, _, _)| *id <= visible);
        for (_, at, was_kept) in list[after..]
            .iter()
            .take_while(|(_, at, _)| *at < read.invoke)
        {
            if *was_kept {
                kept += 1;
                oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
            } else {
                lost += 1;
            }
        }
    }
    (kept, lost, oldest)
}

pub fn check_reads(i: &ReadInputs<'_>) -> ReadVerdict {
    let mut v = ReadVerdict::default();
    let acked = acked_by_client(i.ops, i.final_ids);
    let was_acked: HashSet<i64> = i
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.id)
        .collect();
    let kept = |id: i64| i.final_ids.is_none_or(|ids| ids.contains(&id));

    for read in i.reads {
        let (kept_missing, lost_missing, oldest) = missing(read, &acked);
        if read.in_recovery {
            v.replica_reads += 1;
            if let Some(at) = oldest {
                let age = read.invoke - at;
                if v.replica_max_stale_s.is_none_or(|(s, _, _)| age > s) {
                    v.replica_max_stale_s = Some((age, read.member, read.invoke));
                }
            }
            v.replica_max_stale_ids = v.replica_max_stale_ids.max(kept_missing);
            continue;
        }
        if read.path == ReadPath::Leader {
            v.leader_reads += 1;
        }
        match oldest {
            Some(at) => v.stale_primary.push(StaleRead {
                member: read.member,
                invoke: read.invoke,
                missing: kept_missing,
                age_s: read.invoke - at,
            }),
            None if lost_missing > 0 => v.stale_from_loss += 1,
            None => {}
        }
    }

    // Monotonic reads, per reader, over its leader-path reads from writable members.
    let mut best: BTreeMap<u16, Vec<i64>> = BTreeMap::new();
    for read in i
        .reads
        .iter()
        .filter(|r| r.path == ReadPath::Leader && !r.in_recovery)
    {
        let seen = best.entry(read.reader).or_default();
        if seen.len() < read.max_ids.len() {
            seen.resize(read.max_ids.len(), 0);
        }
        let mut violation: Option<Regression> = None;
        let (mut acked_loss, mut unacked_loss) = (false, false);
        for (client, now) in read.max_ids.iter().enumerate() {
            let earlier = seen[client];
            if *now >= earlier {
                seen[client] = *now;
                continue;
            }
            if kept(earlier) {
                violation.get_or_insert(Regression {
                    reader: read.reader,
                    member: read.member,
                    invoke: read.invoke,
                    client,
                    earlier,
                    now: *now,
                });
            } else {
                // The earlier read saw a write the cluster lost: start again from here.
                if was_acked.contains(&earlier) {
                    acked_loss = true;
                } else {
                    unacked_loss = true;
                }
                seen[client] = *now;
            }
        }
        match violation {
            Some(r) => v.nonmonotonic.push(r),
            None if acked_loss => v.decrease_from_acked_loss += 1,
            None if unacked_loss => v.decrease_from_unacked_loss += 1,
            None => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: i64, client: u16, complete: f64, outcome: Outcome) -> Op {
        Op {
            id,
            client,
            member: 0,
            invoke: complete - 0.01,
            complete,
            outcome,
            timeline: None,
            lsn: None,
            error: None,
        }
    }

    fn read(reader: u16, path: ReadPath, rec: bool, at: f64, max_ids: &[i64]) -> Read {
        Read {
            reader,
            path,
            member: if rec { 1 } else { 0 },
            invoke: at,
            complete: at + 0.01,
            in_recovery: rec,
            timeline: Some(1),
            max_ids: max_ids.to_vec(),
        }
    }

    /// Client 0 writes 1, 3, 5 (acked at 1, 3, 5 s); client 1 writes 2, 4 (at 2, 4 s).
    fn ops() -> Vec<Op> {
        vec![
            write(1, 0, 1.0, Outcome::Ok),
            write(2, 1, 2.0, Outcome::Ok),
            write(3, 0, 3.0, Outcome::Ok),
            write(4, 1, 4.0, Outcome::Ok),
            write(5, 0, 5.0, Outcome::Ok),
        ]
    }

    fn check(reads: &[Read], ops: &[Op], final_ids: &HashSet<i64>) -> ReadVerdict {
        check_reads(&ReadInputs {
            reads,
            ops,
            final_ids: Some(final_ids),
        })
    }

    #[test]
    fn a_writable_member_missing_a_kept_acked_write_is_a_stale_read() {
        let ops = ops();
        let all: HashSet<i64> = (1..=5).collect();
        let reads = vec![
            // Sees everything acked before 4.5 s.
            read(0, ReadPath::Leader, false, 4.5, &[3, 4]),
            // Misses 3 (acked at 3 s) and 4 (at 4 s).
            read(0, ReadPath::Leader, false, 4.6, &[1, 2]),
            // Write 5 was acked after this read began: not required.
            read(1, ReadPath::Replica, false, 4.9, &[3, 4]),
        ];
        let v = check(&reads, &ops, &all);
        assert_eq!(v.leader_reads, 2);
        assert_eq!(
            v.stale_primary,
            vec![StaleRead {
                member: 0,
                invoke: 4.6,
                missing: 2,
                age_s: 4.6 - 3.0
            }]
        );
        assert_eq!(v.stale_from_loss, 0);
    }

    #[test]
    fn missing_only_lost_writes_is_a_consequence_of_loss() {
        let ops = ops();
        let kept: HashSet<i64> = [1, 2, 4].into();
        // Write 3 was lost in a failover (async): a read without it is not stale.
        let reads = vec![read(0, ReadPath::Leader, false, 4.5, &[1, 4])];
        let v = check(&reads, &ops, &kept);
        assert!(v.stale_primary.is_empty(), "{:?}", v.stale_primary);
        assert_eq!(v.stale_from_loss, 1);
    }

    #[test]
    fn a_later_leader_read_seeing_less_is_non_monotonic_unless_the_earlier_id_was_lost() {
        let mut ops = ops();
        ops.push(write(6, 1, 6.0, Outcome::Unknown));
        let kept: HashSet<i64> = [1, 2, 3, 4].into();
        let reads = vec![
            read(0, ReadPath::Leader, false, 5.5, &[5, 4]),
            // 5 was acked and lost: a decrease from loss; the baseline restarts at 3.
            read(0, ReadPath::Leader, false, 5.6, &[3, 4]),
            read(0, ReadPath::Leader, false, 5.7, &[3, 4]),
            // 6 was never acked and is gone at the end.
            read(0, ReadPath::Leader, false, 6.5, &[3, 6]),
            read(0, ReadPath::Leader, false, 6.6, &[3, 4]),
            // 3 is on the final leader: seeing 1 after it is a violation.
            read(0, ReadPath::Leader, false, 6.7, &[1, 4]),
            // Other readers, replica reads and reads from members in recovery have their own
            // baselines or none.
            read(1, ReadPath::Leader, false, 6.8, &[1, 2]),
            read(0, ReadPath::Replica, true, 6.9, &[0, 0]),
            read(0, ReadPath::Leader, true, 7.0, &[0, 0]),
        ];
        let v = check(&reads, &ops, &kept);
        assert_eq!(v.decrease_from_acked_loss, 1);
        assert_eq!(v.decrease_from_unacked_loss, 1);
        assert_eq!(
            v.nonmonotonic,
            vec![Regression {
                reader: 0,
                member: 0,
                invoke: 6.7,
                client: 0,
                earlier: 3,
                now: 1
            }]
        );
        assert_eq!(v.leader_reads, 7);
        assert_eq!(v.replica_reads, 2);
    }

    #[test]
    fn replica_reads_may_lag_and_the_largest_lag_is_reported() {
        let ops = ops();
        let all: HashSet<i64> = (1..=5).collect();
        let reads = vec![
            read(0, ReadPath::Replica, true, 3.5, &[3, 2]),
            // Misses 3, 4, 5: the oldest was acked at 3 s.
            read(0, ReadPath::Replica, true, 6.0, &[1, 2]),
            read(1, ReadPath::Replica, true, 6.5, &[5, 4]),
        ];
        let v = check(&reads, &ops, &all);
        assert_eq!(v.replica_reads, 3);
        assert!(v.stale_primary.is_empty() && v.nonmonotonic.is_empty());
        assert_eq!(v.replica_max_stale_ids, 3);
        assert_eq!(v.replica_max_stale_s, Some((3.0, 1, 6.0)));
    }

    #[test]
    fn without_a_final_state_nothing_counts_as_lost() {
        let ops = ops();
        let reads = vec![read(0, ReadPath::Leader, false, 4.5, &[1, 4])];
        let v = check_reads(&ReadInputs {
            reads: &reads,
            ops: &ops,
            final_ids: None,
        });
        assert_eq!(v.stale_primary.len(), 1);
        assert_eq!(v.stale_from_loss, 0);
    }
}
