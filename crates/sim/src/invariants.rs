//! The promises, checked after every event (safety) and once the faults are over (liveness).
//!
//! 1. Never two running primaries whose live, running agents both believe they hold an
//!    unexpired lease as leader.
//! 2. Never two running primaries among members whose agents are in control (alive, not
//!    stopped, and not "tainted": a PostgreSQL that ran as a primary while its agent was dead
//!    or stopped cannot be demoted by anyone until that agent runs again — SAFETY.md's honest
//!    scope; a watchdog would close it).
//! 3. (Checked where the action is carried out, in `cycle.rs`.) PostgreSQL becomes a primary
//!    only under an unexpired lease that holds the leader key, bootstrap excepted.
//! 4. (Weak form, measured in `world.rs`.) Time replicas spend diverged and not streaming.
//! 5. Liveness: after the last fault healed, one leader runs a writable primary and every
//!    other member streams from it (directly or through another replica). In synchronous
//!    mode a cluster whose `sync` key names no member with a data directory may stay
//!    leaderless: that is by design (nobody is known to hold every acknowledged commit), and
//!    reported as such rather than as a violation.
//!
//! Invariants 6–8 (synchronous replication: no acknowledged commit is lost) are in `commits.rs`;
//! SAFETY.md's promise 4 (never leaderless for long while a healthy candidate exists, at any
//! moment of the run, not only after the faults) is in `liveness.rs`.

use std::fmt::Write;

use crate::report::ViolationKind;
use crate::world::World;

impl World {
    pub(crate) fn check_safety(&mut self) {
        if !self.violations.is_empty() {
            // Found while handling the event (an acknowledgement, a key write, a promotion).
            return;
        }
        let now = self.now;
        for member in &mut self.members {
            if !member.pg.is_running_primary() {
                member.tainted = false;
            } else if !member.agent.running() {
                member.tainted = true;
            }
        }
        let believers: Vec<&str> = self
            .members
            .iter()
            .filter(|x| x.pg.is_running_primary() && x.agent.believes_leader(now))
            .map(|x| x.name.as_str())
            .collect();
        if believers.len() > 1 {
            let description = format!(
                "{} all run a primary and believe they hold the lease; {}",
                believers.join(" and "),
                self.describe_members()
            );
            self.violate(ViolationKind::TwoLeaseHolders, description);
            return;
        }
        let in_control: Vec<&str> = self
            .members
            .iter()
            .filter(|x| x.pg.is_running_primary() && x.agent.running() && !x.tainted)
            .map(|x| x.name.as_str())
            .collect();
        if in_control.len() > 1 {
            let description = format!(
                "{} all run a writable primary; {}",
                in_control.join(" and "),
                self.describe_members()
            );
            self.violate(ViolationKind::TwoPrimaries, description);
            return;
        }
        self.check_commits();
    }

    /// Synchronous mode, not live: why staying without a leader is by design, if it is (no
    /// leader key, and the `sync` key names no member that has a data directory).
    pub(crate) fn leaderless_by_design(&self) -> Option<String> {
        let sync_mode = self.members.iter().any(|m| m.cfg.synchronous.enabled());
        if !sync_mode || self.dcs.leader.is_some() {
            return None;
        }
        let named: Vec<String> = self
            .dcs
            .sync
            .as_ref()
            .map(|k| k.members.clone())
            .unwrap_or_default();
        let with_data: Vec<&String> = named
            .iter()
            .filter(|n| {
                self.index_of(n)
                    .is_some_and(|i| self.members[i].pg.data.is_some())
            })
            .collect();
        if !with_data.is_empty() {
            return None;
        }
        Some(format!(
            "no leader: the sync key (leader {:?}) names {}, so no member is known to hold every acknowledged commit",
            self.dcs.sync.as_ref().and_then(|k| k.leader.clone()),
            if named.is_empty() {
                "nobody".to_string()
            } else {
                format!("{} without a data directory", named.join(", "))
            }
        ))
    }

    /// `Ok(leader)` when the cluster is healthy, else why not.
    pub(crate) fn cluster_health(&self) -> Result<usize, String> {
        let Some(key) = &self.dcs.leader else {
            return Err("no leader key".into());
        };
        let Some(l) = self.index_of(&key.name) else {
            return Err(format!("unknown leader {}", key.name));
        };
        let leader = &self.members[l];
        if !leader.agent.running()
            || leader.agent.state.phase != pgbaton_core::Phase::Leader
            || !leader.pg.is_running_primary()
        {
            return Err(format!(
                "leader {} is not a running primary in phase leader",
                leader.name
            ));
        }
        for (i, member) in self.members.iter().enumerate() {
            if i == l {
                continue;
            }
            if !member.agent.running() {
                return Err(format!("agent of {} is not running", member.name));
            }
            if !member.pg.is_running_replica() {
                return Err(format!("{} is not a running replica", member.name));
            }
            // Follow the replication chain up to the leader.
            let mut hop = i;
            for _ in 0..self.members.len() {
                let pg = &self.members[hop].pg;
                if !pg.streaming {
                    return Err(format!("{} does not stream", self.members[hop].name));
                }
                match pg.upstream.as_deref().and_then(|u| self.index_of(u)) {
                    Some(up) if up == l => break,
                    Some(up) => hop = up,
                    None => return Err(format!("{} has no upstream", self.members[hop].name)),
                }
            }
        }
        Ok(l)
    }

    /// One line per member and the DCS, for violation reports.
    pub(crate) fn describe_members(&self) -> String {
        let mut out = format!(
            "leader key {:?}, sync key {:?}",
            self.dcs.leader, self.dcs.sync
        );
        for x in &self.members {
            let a = &x.agent;
            let _ = write!(
                out,
                "; {}: agent {} phase {} lease {:?} (dcs expiry {:?}) valid until {:?}{}, pg {:?} {:?} upstream {:?} streaming {} ssn {:?}, job {:?}",
                x.name,
                if !a.alive { "dead" } else if a.stalled_until.is_some() { "stopped" } else { "running" },
                a.state.phase,
                a.lease,
                a.lease.and_then(|l| self.dcs.lease_expiry(l)),
                a.lease_valid_until,
                if x.tainted { " (tainted)" } else { "" },
                x.pg.process,
                x.pg.data.as_ref().map(|d| (d.timeline(), d.lsn, d.was_primary)),
                x.pg.upstream,
                x.pg.streaming,
                x.pg.ssn.as_ref().map(|n| n.to_setting()),
                x.job.as_ref().map(|j| (j.kind, j.finishes_at)),
            );
        }
        out
    }
}
