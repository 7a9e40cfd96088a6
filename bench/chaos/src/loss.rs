//! Async loss in WAL bytes, per failover, against `maximum_lag_on_failover`. Every timeline
//! switch in the final leader's history is a failover (or switchover): the old timeline ended
//! at the switch point the history file gives, and the acknowledged writes of the old timeline
//! the final leader lacks were lost. The bytes lost are the distance from that switch point to
//! the last acknowledged write's WAL position on the old timeline (the writers record
//! `pg_current_wal_lsn()` with each insert, i.e. just before its commit record: a slight
//! underestimate). Timelines outside the final history (a branch abandoned as a whole) are
//! listed with their lost writes, without bytes.
//!
//! A loss above the bound is reported, not failed: the bound is checked by the candidate
//! against the leader's *last published* WAL position (`/optime/leader`, written once per
//! loop_wait, and not at all while the leader cannot reach etcd), so the leader may have
//! acknowledged more than the bound past the position the candidate compared itself with.
//! Pure: no I/O.

use std::collections::{BTreeMap, HashSet};

use crate::converge::History;
use crate::history::{Op, Outcome};

/// One timeline switch of the final history.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The timeline that ended, and where.
    pub timeline: i32,
    pub switch_point: u64,
    /// The last acknowledged write's WAL position on that timeline.
    pub last_acked_lsn: Option<u64>,
    /// Acknowledged writes of that timeline the final leader lacks.
    pub lost: usize,
    /// `last_acked_lsn - switch_point` when past it, else 0.
    pub lost_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AsyncLoss {
    pub failovers: Vec<Failover>,
    /// Timelines with acknowledged writes that are neither the final one nor in its history:
    /// (timeline, acknowledged writes on it the final leader lacks).
    pub abandoned: Vec<(i32, usize)>,
    /// Every acknowledged write the final leader lacks.
    pub lost: usize,
    pub bound: u64,
}

impl AsyncLoss {
    pub fn max_lost_bytes(&self) -> u64 {
        self.failovers
            .iter()
            .map(|f| f.lost_bytes)
            .max()
            .unwrap_or(0)
    }

    pub fn within_bound(&self) -> bool {
        self.max_lost_bytes() <= self.bound
    }

    /// `async loss: failovers=N lost=N max_lost_bytes=N bound=N within_bound=true|false`.
    pub fn line(&self) -> String {
        format!(
            "async loss: failovers={} lost={} max_lost_bytes={} bound={} within_bound={}",
            self.failovers.len(),
            self.lost,
            self.max_lost_bytes(),
            self.bound,
            self.within_bound()
        )
    }
}

pub fn async_loss(ops: &[Op], final_ids: &HashSet<i64>, h: &History, bound: u64) -> AsyncLoss {
    // Per timeline: (last acknowledged LSN, acknowledged writes lost).
    let mut per_tl: BTreeMap<i32, (Option<u64>, usize)> = BTreeMap::new();
    let mut lost = 0;
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let gone = !final_ids.contains(&o.id);
        lost += usize::from(gone);
        if let Some(tl) = o.timeline {
            let e = per_tl.entry(tl).or_insert((None, 0));
            e.0 = e.0.max(o.lsn);
            e.1 += usize::from(gone);
        }
    }
    let failovers = h
        .ended
        .iter()
        .map(|(tl, switch_point)| {
            let (last, lost) = per_tl.get(tl).copied().unwrap_or((None, 0));
            Failover {
                timeline: *tl,
                switch_point: *switch_point,
                last_acked_lsn: last,
                lost,
                lost_bytes: last.map_or(0, |l| l.saturating_sub(*switch_point)),
            }
        })
        .collect();
    let abandoned = per_tl
        .iter()
        .filter(|(tl, _)| **tl != h.timeline && !h.ended.iter().any(|(t, _)| t == *tl))
        .map(|(tl, (_, lost))| (*tl, *lost))
        .collect();
    AsyncLoss {
        failovers,
        abandoned,
        lost,
        bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: i64, tl: i32, lsn: u64) -> Op {
        Op {
            id,
            client: 0,
            member: 0,
            invoke: id as f64,
            complete: id as f64 + 0.01,
            outcome: Outcome::Ok,
            timeline: Some(tl),
            lsn: Some(lsn),
            error: None,
        }
    }

    #[test]
    fn bytes_past_the_switch_point_are_counted_per_failover() {
        let h = History {
            timeline: 3,
            ended: vec![(1, 1_000), (2, 5_000)],
        };
        let ops = vec![
            ok(1, 1, 900),
            // Acked on timeline 1 past its end: lost, 1 500 bytes.
            ok(2, 1, 2_000),
            ok(3, 1, 2_500),
            ok(4, 2, 4_000),
            ok(5, 3, 6_000),
            // A timeline the final history does not contain.
            ok(6, 7, 100),
        ];
        let kept: HashSet<i64> = [1, 4, 5].into();
        let l = async_loss(&ops, &kept, &h, 1_000);
        assert_eq!(
            l.failovers,
            vec![
                Failover {
                    timeline: 1,
                    switch_point: 1_000,
                    last_acked_lsn: Some(2_500),
                    lost: 2,
                    lost_bytes: 1_500
                },
                Failover {
                    timeline: 2,
                    switch_point: 5_000,
                    last_acked_lsn: Some(4_000),
                    lost: 0,
                    lost_bytes: 0
                }
            ]
        );
        assert_eq!(l.abandoned, vec![(7, 1)]);
        assert_eq!(l.lost, 3);
        assert!(!l.within_bound());
        assert_eq!(
            l.line(),
            "async loss: failovers=2 lost=3 max_lost_bytes=1500 bound=1000 within_bound=false"
        );
    }

    #[test]
    fn no_failover_means_no_loss_within_the_bound() {
        let h = History {
            timeline: 1,
            ended: vec![],
        };
        let ops = vec![ok(1, 1, 10)];
        let l = async_loss(&ops, &[1].into(), &h, 1_048_576);
        assert_eq!(
            l.line(),
            "async loss: failovers=0 lost=0 max_lost_bytes=0 bound=1048576 within_bound=true"
        );
    }
}
