//! The seeded random choices of a run: when the next fault comes, which kind, how long it
//! lasts, which host it hits. One `StdRng` seeded from `--seed` makes every draw repeatable
//! (the hosts a draw lands on still depend on who leads at that moment).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault_kind::FaultKind;

/// At most this many faults are active at once.
pub const MAX_ACTIVE: usize = 2;
/// Probability that a member fault hits the leader rather than a random member.
const LEADER_BIAS: f64 = 0.6;

pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    ttl: f64,
}

impl Schedule {
    pub fn new(seed: u64, kinds: Vec<FaultKind>, ttl: f64) -> Schedule {
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds,
            ttl,
        }
    }

    /// Seconds from one injection to the next: 1 to 2.5 x ttl.
    pub fn gap(&mut self) -> f64 {
        self.ttl * self.rng.random_range(1.0..2.5)
    }

    pub fn kind(&mut self) -> FaultKind {
        let i = self.rng.random_range(0..self.kinds.len());
        self.kinds[i]
    }

    /// How long a fault stays before it is healed, in seconds.
    pub fn duration(&mut self, kind: FaultKind) -> f64 {
        let (lo, hi) = match kind {
            // Healed by the agent itself; the host stays off limits for a while.
            FaultKind::KillPostgres => (1.5, 2.5),
            FaultKind::KillAgent => (1.0, 2.0),
            FaultKind::KillNode => (2.0, 4.0),
            // Counted from before the WAL burst (which takes seconds): the replica is away
            // for the whole burst, then comes back soon after.
            FaultKind::ReplicaAway => (2.0, 4.0),
            FaultKind::Pause => (2.0, 3.0),
            FaultKind::Partition | FaultKind::LeaderEtcd | FaultKind::LeaderReplicas => (1.5, 4.0),
            FaultKind::EtcdSplit => (2.0, 4.0),
            FaultKind::EtcdKill => (1.0, 3.0),
            FaultKind::Delay | FaultKind::Loss => (2.0, 4.0),
            // Staged faults: how long a killed host stays down before its agent is started.
            FaultKind::Switchover | FaultKind::SwitchoverThenKill | FaultKind::FailoverTwice => {
                (2.0, 4.0)
            }
        };
        self.ttl * self.rng.random_range(lo..hi)
    }

    /// A member to hit: the leader (when free) with probability 0.6, else any free member.
    pub fn member(&mut self, free: &[usize], leader: Option<usize>) -> Option<usize> {
        let bias = self.rng.random::<f64>();
        if let Some(l) = leader.filter(|l| free.contains(l)) {
            if bias < LEADER_BIAS {
                return Some(l);
            }
        }
        self.pick(free)
    }

    pub fn pick(&mut self, from: &[usize]) -> Option<usize> {
        if from.is_empty() {
            return None;
        }
        Some(from[self.rng.random_range(0..from.len())])
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// `switchover`: the candidate to name (half of the time, among `candidates`), or None
    /// for a switchover without one.
    pub fn switchover_candidate(&mut self, candidates: &[usize]) -> Option<usize> {
        if self.chance(0.5) {
            self.pick(candidates)
        } else {
            None
        }
    }

    /// `switchover-then-kill`: seconds from the new leader's appearance to its loss: 1-5 s.
    pub fn kill_after_switchover(&mut self) -> f64 {
        self.rng.random_range(1.0..5.0)
    }

    /// `failover-twice`: seconds from the new leader's appearance to its loss: 8-12 s.
    pub fn second_kill_after(&mut self) -> f64 {
        self.rng.random_range(8.0..12.0)
    }

    /// A delay in milliseconds for the `delay` fault: 100-500 ms.
    pub fn delay_ms(&mut self) -> u64 {
        self.rng.random_range(100..500)
    }

    /// A loss probability for the `loss` fault: 5-30 %.
    pub fn loss(&mut self) -> f64 {
        self.rng.random_range(0.05..0.30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(seed: u64) -> Vec<String> {
        let mut s = Schedule::new(seed, FaultKind::ALL.to_vec(), 4.0);
        (0..20)
            .map(|_| {
                let k = s.kind();
                format!(
                    "{k} {:.3} {:.3} {:?}",
                    s.gap(),
                    s.duration(k),
                    s.member(&[0, 1, 2], Some(1))
                )
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn durations_scale_with_ttl_and_stay_in_range() {
        let mut s = Schedule::new(1, vec![FaultKind::Pause], 4.0);
        for _ in 0..100 {
            let d = s.duration(FaultKind::Pause);
            assert!((8.0..12.0).contains(&d), "{d}");
            let g = s.gap();
            assert!((4.0..10.0).contains(&g), "{g}");
        }
    }

    #[test]
    fn members_are_only_picked_from_the_free_ones() {
        let mut s = Schedule::new(3, vec![FaultKind::KillNode], 4.0);
        let mut hit_leader = 0;
        for _ in 0..200 {
            let m = s.member(&[0, 2], Some(2)).unwrap();
            assert!(m == 0 || m == 2);
            hit_leader += usize::from(m == 2);
            assert_eq!(s.member(&[0], Some(2)), Some(0));
        }
        assert!(
            hit_leader > 100,
            "the leader was hit {hit_leader} of 200 times"
        );
        assert_eq!(s.member(&[], Some(1)), None);
    }

    #[test]
    fn switchovers_name_a_candidate_about_half_of_the_time() {
        let mut s = Schedule::new(5, vec![FaultKind::Switchover], 4.0);
        let named = (0..400)
            .filter(|_| s.switchover_candidate(&[0, 2]).is_some())
            .count();
        assert!((140..260).contains(&named), "{named} of 400");
        assert_eq!(s.switchover_candidate(&[]), None);
        for _ in 0..100 {
            assert!((1.0..5.0).contains(&s.kill_after_switchover()));
            assert!((8.0..12.0).contains(&s.second_kill_after()));
        }
    }
}
