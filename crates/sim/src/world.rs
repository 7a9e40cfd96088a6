//! The simulated cluster and its event loop: one virtual clock, one seeded random number
//! generator, one queue of timed events. Every event is handled to completion, then the
//! safety invariants are checked; after the last fault healed, liveness is tracked.
//! Same seed, same sequence of events, same trace.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pgbaton_core::{HaConfig, Millis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::agent::Agent;
use crate::dcs::{Dcs, LeaseId};
use crate::faults::{random_schedule, ScriptedFault};
use crate::jobs::Job;
use crate::net::Net;
use crate::postgres::Pg;
use crate::report::{Happening, SimReport, Trace, Violation, ViolationKind};
use crate::SimConfig;

/// The wall clock at virtual time 0 (2023-11-14).
const UNIX_MS_AT_START: u64 = 1_700_000_000_000;

/// One member: its PostgreSQL, its agent and the background operation the agent started.
#[derive(Debug)]
pub(crate) struct Member {
    pub name: String,
    pub cfg: HaConfig,
    pub pg: Pg,
    pub agent: Agent,
    pub job: Option<Job>,
    /// Active faults that keep the agent process down (crash, kill).
    pub agent_down: u32,
    /// PostgreSQL has run as a primary since a moment its agent was dead or stopped and
    /// the agent has not since confirmed it holds the lease: nobody could demote it, so
    /// invariant 2 does not count it (SAFETY.md: the honest scope without a watchdog).
    pub tainted: bool,
    /// PostgreSQL was a running primary after the previous event (for happenings).
    pub was_running_primary: bool,
    /// Client commits waiting for synchronous standbys on this member's primary.
    pub pending: Vec<crate::commits::Commit>,
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// PostgreSQL time passes: primaries take writes, replicas stream.
    Tick,
    AgentStart {
        m: usize,
    },
    /// The wake-up the core asked for (stale unless it is still the agent's `next_wake`).
    Wake {
        m: usize,
        incarnation: u64,
    },
    /// Watch event, job finished, postmaster died: run a cycle now.
    Trigger {
        m: usize,
        incarnation: u64,
    },
    /// A slow DCS read of a cycle returned (`ok`) or timed out.
    ReadDone {
        m: usize,
        incarnation: u64,
        ok: bool,
    },
    KeepaliveArrive {
        m: usize,
        incarnation: u64,
        lease: LeaseId,
        sent_at: Millis,
        /// The agent stops waiting for the answer then (its request timeout).
        gives_up_at: Millis,
        startup: bool,
    },
    KeepaliveAck {
        m: usize,
        incarnation: u64,
        lease: LeaseId,
        sent_at: Millis,
        gives_up_at: Millis,
        ok: bool,
        startup: bool,
    },
    /// A lease may expire now (expiry itself is done before every event).
    LeaseCheck,
    JobDone {
        m: usize,
        id: u64,
    },
    FaultStart {
        idx: usize,
    },
    FaultHeal {
        idx: usize,
    },
    StallEnd {
        m: usize,
        incarnation: u64,
    },
    /// The reload after a change of synchronous_standby_names takes effect.
    SsnReload {
        m: usize,
    },
}

struct Scheduled {
    at: Millis,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) struct World {
    pub now: Millis,
    pub seed: u64,
    pub rng: StdRng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub dcs: Dcs,
    pub net: Net,
    pub members: Vec<Member>,
    pub tick_ms: Millis,
    pub faults: Vec<ScriptedFault>,
    /// The member each fault hit, once started.
    pub fault_members: Vec<Option<usize>>,
    pub next_job_id: u64,
    pub trace: Trace,
    pub happenings: Vec<Happening>,
    pub violations: Vec<Violation>,
    pub leader_changes: u32,
    /// How many times a restarted agent adopted the leader lease it held before.
    pub leader_adoptions: u32,
    events_checked: u64,
    /// Liveness: from here on no fault is active.
    quiet_from: Millis,
    end_at: Millis,
    settle_ms: Millis,
    converged_since: Option<Millis>,
    pub diverged_replica_ms: Millis,
    pub flaw: Option<crate::Flaw>,
    pub ledger: crate::commits::Ledger,
    /// Longest time a reload of synchronous_standby_names takes to be in force.
    pub ssn_reload_max_ms: Millis,
    pub check_sync_key: bool,
    /// Invariant 7's first breach while `check_sync_key` is off.
    pub sync_key_breach: Option<Violation>,
    pub checkpoint_timeout_ms: Millis,
    pub timeline_model: crate::TimelineModel,
    /// Promise 4: the leaderless window being measured (`liveness.rs`).
    pub leaderless: crate::liveness::Clock,
    pub leaderless_windows: Vec<crate::LeaderlessWindow>,
    pub check_leaderless: bool,
}

impl World {
    pub fn new(cfg: &SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let members: Vec<Member> = (0..cfg.members)
            .map(|i| {
                let name = crate::member_name(i);
                let mut ha = (cfg.ha)(&name);
                if let Some(sync) = cfg.synchronous {
                    ha.synchronous = sync;
                }
                Member {
                    cfg: ha,
                    name,
                    pg: Pg::empty(),
                    agent: Agent::dead(),
                    job: None,
                    agent_down: 0,
                    tainted: false,
                    was_running_primary: false,
                    pending: Vec::new(),
                }
            })
            .collect();
        let ttl = members.first().map_or(4_000, |m| m.cfg.ttl_ms);
        let faults = match &cfg.scripted {
            Some(list) => list.clone(),
            None => {
                let mut faults = random_schedule(
                    &mut rng,
                    cfg.members,
                    ttl,
                    cfg.fault_window_start_ms,
                    cfg.duration_ms,
                    cfg.fault_rate,
                );
                // From their own generator: the schedules above stay what they were.
                faults.extend(crate::faults::random_quick_succession(
                    cfg.seed,
                    cfg.members,
                    cfg.fault_window_start_ms,
                    cfg.duration_ms,
                    cfg.quick_succession_rate,
                ));
                faults.sort_by_key(|f| f.at_ms);
                faults
            }
        };
        let last_heal = faults
            .iter()
            .map(|f| f.at_ms + f.kind.length())
            .max()
            .unwrap_or(0);
        let quiet_from = last_heal.max(cfg.duration_ms);
        let mut world = World {
            now: 0,
            seed: cfg.seed,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            dcs: Dcs::default(),
            net: Net::new(cfg.members),
            fault_members: vec![None; faults.len()],
            faults,
            members,
            tick_ms: cfg.tick_ms.max(1),
            next_job_id: 0,
            trace: Trace::new(cfg.trace_lines),
            happenings: Vec::new(),
            violations: Vec::new(),
            leader_changes: 0,
            leader_adoptions: 0,
            events_checked: 0,
            quiet_from,
            end_at: quiet_from + cfg.liveness_bound_ms,
            settle_ms: cfg.settle_ms,
            converged_since: None,
            diverged_replica_ms: 0,
            flaw: cfg.flaw,
            ledger: crate::commits::Ledger::default(),
            ssn_reload_max_ms: cfg.ssn_reload_max_ms,
            check_sync_key: cfg.check_sync_key,
            sync_key_breach: None,
            checkpoint_timeout_ms: cfg.checkpoint_timeout_ms,
            timeline_model: cfg.timeline_model,
            leaderless: crate::liveness::Clock::default(),
            leaderless_windows: Vec::new(),
            check_leaderless: cfg.check_leaderless,
        };
        world.schedule(0, Event::Tick);
        for m in 0..cfg.members {
            let at = world.rng.random_range(0..=200);
            world.schedule(at, Event::AgentStart { m });
        }
        for idx in 0..world.faults.len() {
            world.schedule(world.faults[idx].at_ms, Event::FaultStart { idx });
        }
        world
    }

    pub fn run(mut self) -> SimReport {
        let mut converged_at = None;
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            if at > self.end_at {
                break;
            }
            self.now = at;
            self.expire_leases();
            self.handle(event);
            self.events_checked += 1;
            self.note_primary_changes();
            self.check_safety();
            if self.violations.is_empty() {
                self.check_leaderless();
            }
            if !self.violations.is_empty() {
                break;
            }
            if self.now >= self.quiet_from {
                match self.cluster_health() {
                    Ok(_) => {
                        let since = *self.converged_since.get_or_insert(self.now);
                        converged_at = Some(since);
                        if self.now - since >= self.settle_ms {
                            break;
                        }
                    }
                    Err(_) => self.converged_since = None,
                }
                if self.leaderless_by_design().is_some() {
                    // Nobody can ever be promoted again: no need to wait for the deadline.
                    break;
                }
            }
        }
        self.close_leaderless_window(false);
        let settled = self
            .converged_since
            .is_some_and(|s| self.now - s >= self.settle_ms);
        let leaderless_by_design = if settled || !self.violations.is_empty() {
            None
        } else {
            self.leaderless_by_design()
        };
        if self.violations.is_empty() && !settled && leaderless_by_design.is_none() {
            let why = self
                .cluster_health()
                .err()
                .unwrap_or_else(|| "healthy, but only just".to_string());
            let description = format!(
                "no single healthy leader with every member streaming within {} ms after the last fault healed (at {} ms): {why}; {}",
                self.end_at - self.quiet_from,
                self.quiet_from,
                self.describe_members()
            );
            self.violate(ViolationKind::NotLive, description);
        }
        SimReport {
            seed: self.seed,
            violations: self.violations,
            leader_changes: self.leader_changes,
            events_checked: self.events_checked,
            end_ms: self.now,
            converged_at: if settled { converged_at } else { None },
            diverged_replica_ms: self.diverged_replica_ms,
            leaderless_by_design,
            sync_key_breach: self.sync_key_breach,
            acks: self.ledger.acks,
            leaderless_windows: self.leaderless_windows,
            happenings: self.happenings,
            trace: self.trace.lines(),
            trace_digest: self.trace.digest(),
        }
    }

    pub fn schedule(&mut self, at: Millis, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick(),
            Event::AgentStart { m } => self.start_agent(m),
            Event::Wake { m, incarnation } => {
                let a = &self.members[m].agent;
                if a.running() && a.incarnation == incarnation && a.next_wake == self.now {
                    self.run_cycle(m);
                }
            }
            Event::Trigger { m, incarnation } => {
                let a = &self.members[m].agent;
                if a.running() && a.incarnation == incarnation {
                    self.run_cycle(m);
                }
            }
            Event::ReadDone { m, incarnation, ok } => {
                let a = &mut self.members[m].agent;
                if a.alive && a.incarnation == incarnation && a.reading {
                    a.reading = false;
                    // A stopped agent drops the cycle; it decides afresh when it resumes.
                    if a.running() {
                        self.finish_cycle(m, ok);
                    }
                }
            }
            Event::KeepaliveArrive {
                m,
                incarnation,
                lease,
                sent_at,
                gives_up_at,
                startup,
            } => {
                if self.dcs.up() && self.net.reaches_dcs(m) {
                    let ok = self.dcs.keepalive(lease, self.now);
                    if let Some(expiry) = self.dcs.lease_expiry(lease) {
                        self.schedule(expiry, Event::LeaseCheck);
                    }
                    let at = self.now + self.delay(m);
                    self.schedule(
                        at,
                        Event::KeepaliveAck {
                            m,
                            incarnation,
                            lease,
                            sent_at,
                            gives_up_at,
                            ok,
                            startup,
                        },
                    );
                }
            }
            Event::KeepaliveAck {
                m,
                incarnation,
                lease,
                sent_at,
                gives_up_at,
                ok,
                startup,
            } => {
                if self.now > gives_up_at {
                    // The agent stopped waiting (its request timed out): the answer counts
                    // for nothing, as in the real agent (`execute.rs`, a bounded keepalive).
                    // etcd extended the lease all the same.
                    let agent = &self.members[m].agent;
                    if startup && agent.running() && agent.incarnation == incarnation {
                        self.run_cycle(m);
                    }
                    return;
                }
                self.keepalive_answered(m, incarnation, lease, sent_at, ok, startup)
            }
            Event::LeaseCheck => {}
            Event::JobDone { m, id } => self.finish_job(m, id),
            Event::FaultStart { idx } => self.start_fault(idx),
            Event::FaultHeal { idx } => self.heal_fault(idx),
            Event::StallEnd { m, incarnation } => {
                let a = &mut self.members[m].agent;
                if a.alive
                    && a.incarnation == incarnation
                    && a.stalled_until.is_some_and(|u| u <= self.now)
                {
                    a.stalled_until = None;
                    self.log(m, "agent resumes (SIGCONT)".to_string());
                    self.resume(m);
                }
            }
            Event::SsnReload { m } => {
                let pg = &mut self.members[m].pg;
                if pg.is_running() {
                    pg.ssn = pg.ssn_conf.clone();
                }
            }
        }
    }

    /// A new agent process: it remembers nothing, but adopts its leader lease if the leader
    /// key still names this member and the lease is alive (as the real agent does), then
    /// decides once the adopting keepalive is answered.
    fn start_agent(&mut self, m: usize) {
        self.members[m].agent.start();
        let cfg = &self.members[m].cfg;
        if cfg.failsafe_mode {
            // It may have promised a failsafe leader before it died, and forgot.
            self.members[m].agent.failsafe_promised_until = Some(self.now + cfg.ttl_ms);
        }
        let name = self.members[m].name.clone();
        let adopt = match &self.dcs.leader {
            Some(k)
                if self.dcs_reachable(m)
                    && k.name == name
                    && self.dcs.lease_alive(k.lease, self.now) =>
            {
                Some(k.lease)
            }
            _ => None,
        };
        match adopt {
            Some(lease) => {
                self.log(m, format!("agent starts; adopting leader lease {lease}"));
                self.leader_adoptions += 1;
                self.members[m].agent.lease = Some(lease);
                let timeout = self.members[m].cfg.retry_timeout_ms;
                self.send_keepalive(m, lease, true, timeout);
                let wake = self.now + self.members[m].cfg.retry_timeout_ms;
                self.wake_at(m, wake);
            }
            None => {
                self.log(m, "agent starts".to_string());
                self.trigger(m);
            }
        }
    }

    fn keepalive_answered(
        &mut self,
        m: usize,
        incarnation: u64,
        lease: LeaseId,
        sent_at: Millis,
        ok: bool,
        startup: bool,
    ) {
        let ttl = self.members[m].cfg.ttl_ms;
        let reachable = self.net.reaches_dcs(m);
        let a = &mut self.members[m].agent;
        if !reachable || !a.alive || a.incarnation != incarnation || a.lease != Some(lease) {
            return;
        }
        if ok {
            let base = if self.flaw == Some(crate::Flaw::LeaseFromAnswerTime) {
                self.now
            } else {
                sent_at
            };
            a.lease_valid_until = Some(a.lease_valid_until.unwrap_or(0).max(base + ttl));
        } else {
            a.lease = None;
            a.lease_valid_until = None;
            self.log(m, format!("lease {lease} not found at the DCS"));
        }
        if startup && self.members[m].agent.running() {
            self.run_cycle(m);
        }
    }

    /// Send a keepalive; its answer counts only if it comes back within `timeout` (the
    /// agent's bound on the request).
    pub fn send_keepalive(&mut self, m: usize, lease: LeaseId, startup: bool, timeout: Millis) {
        let incarnation = self.members[m].agent.incarnation;
        let at = self.now + self.delay(m);
        self.schedule(
            at,
            Event::KeepaliveArrive {
                m,
                incarnation,
                lease,
                sent_at: self.now,
                gives_up_at: self.now + timeout,
                startup,
            },
        );
    }

    /// Run a cycle of member `m` after a watch/notification delivery delay.
    pub fn trigger(&mut self, m: usize) {
        // 1–10 ms normally; slower under a message-delay fault.
        let max = (self.net.max_delay(m) / 3).max(10);
        let at = self.now + self.rng.random_range(1..=max);
        let incarnation = self.members[m].agent.incarnation;
        self.schedule(at, Event::Trigger { m, incarnation });
    }

    pub fn wake_at(&mut self, m: usize, at: Millis) {
        let incarnation = self.members[m].agent.incarnation;
        self.members[m].agent.next_wake = at;
        self.schedule(at, Event::Wake { m, incarnation });
    }

    /// One-way delay of a DCS message of member `m`.
    pub fn delay(&mut self, m: usize) -> Millis {
        let max = self.net.max_delay(m);
        self.rng.random_range(0..=max)
    }

    pub fn dcs_reachable(&self, m: usize) -> bool {
        self.dcs.up() && self.net.reaches_dcs(m)
    }

    /// The leader key changed: every agent that can reach the DCS hears it.
    pub fn notify_watchers(&mut self) {
        for m in 0..self.members.len() {
            if self.members[m].agent.alive && self.dcs_reachable(m) {
                self.trigger(m);
            }
        }
    }

    fn expire_leases(&mut self) {
        if let Some(name) = self.dcs.expire_due(self.now).leader {
            self.happenings.push(Happening::LeaderKeyGone {
                at: self.now,
                member: name.clone(),
                expired: true,
            });
            self.log_global(format!("leader key of {name} deleted: its lease expired"));
            self.notify_watchers();
        }
    }

    /// Wall-clock time for the core's scheduled switchovers (virtual time from a fixed epoch).
    pub fn unix_now_ms(&self) -> u64 {
        UNIX_MS_AT_START + self.now
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    pub fn log(&mut self, m: usize, what: String) {
        let line = format!("{:>7} {:<3} {what}", self.now, self.members[m].name);
        self.trace.push(line);
    }

    pub fn log_global(&mut self, what: String) {
        let line = format!("{:>7} --- {what}", self.now);
        self.trace.push(line);
    }

    pub fn violate(&mut self, kind: ViolationKind, description: String) {
        self.log_global(format!("VIOLATION {kind:?}: {description}"));
        self.violations.push(Violation {
            kind,
            at: self.now,
            seed: self.seed,
            description,
        });
    }

    /// Record PostgreSQL becoming or ceasing to be a writable primary.
    fn note_primary_changes(&mut self) {
        for m in 0..self.members.len() {
            let now_primary = self.members[m].pg.is_running_primary();
            if now_primary == self.members[m].was_running_primary {
                continue;
            }
            self.members[m].was_running_primary = now_primary;
            let member = self.members[m].name.clone();
            if now_primary {
                let timeline = self.members[m].pg.data.as_ref().map_or(0, |d| d.timeline());
                self.happenings.push(Happening::BecamePrimary {
                    at: self.now,
                    member,
                    timeline,
                });
                self.check_new_primary(m);
            } else {
                self.happenings.push(Happening::PrimaryStopped {
                    at: self.now,
                    member,
                });
            }
        }
    }
}
