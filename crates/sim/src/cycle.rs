//! One HA cycle of a simulated agent, done the way the real agent does it: build the
//! observation (DCS read now, lease validity from the last acknowledged keepalive, peers'
//! reports only when there is no leader), call the real `pgbaton_core::decide`, carry out
//! the actions in order, sleep until `next_wake`.

use std::collections::BTreeMap;

use pgbaton_core::{
    decide, Action, DcsView, Decision, DocState, HaConfig, LocalPg, MemberView, Millis,
    Observation, PeerView, Phase, Reason, SyncKey, SyncStandbyNames,
};
use rand::Rng;

use crate::agent::Pending;
use crate::dcs::LeaderKey;
use crate::net::NORMAL_DELAY_MS;
use crate::report::{Happening, ViolationKind};
use crate::world::{Event, World};
use crate::Flaw;

/// What the cycle could do with the DCS.
#[derive(Debug, Clone, Copy)]
struct Reach {
    /// Messages can be sent (keepalives go out even if the answer will be slow).
    link: bool,
    /// Reads and writes complete within `retry_timeout`.
    in_time: bool,
}

impl World {
    /// Start a cycle: read the DCS (slow under a delay fault), then decide and act.
    pub(crate) fn run_cycle(&mut self, m: usize) {
        if self.members[m].agent.reading {
            self.members[m].agent.retrigger = true;
            return;
        }
        let cfg = self.members[m].cfg.clone();
        let link = self.dcs_reachable(m);
        if link && self.net.max_delay(m) <= NORMAL_DELAY_MS {
            // A normal read takes a few ms (not modelled).
            return self.finish_cycle(m, true);
        }
        // Slow answers, or none at all: a partition drops packets and etcd without quorum
        // does not answer, so the request hangs until the agent gives up.
        let round_trip = if link {
            self.delay(m) + self.delay(m)
        } else {
            Millis::MAX
        };
        let timeout = self.read_timeout(m, &cfg);
        let ok = round_trip <= timeout;
        let took = round_trip.min(timeout);
        if took == 0 {
            return self.finish_cycle(m, ok);
        }
        let agent = &mut self.members[m].agent;
        agent.reading = true;
        let incarnation = agent.incarnation;
        self.schedule(self.now + took, Event::ReadDone { m, incarnation, ok });
    }

    /// How long the agent waits for the DCS: `retry_timeout`, but a member that runs (or is
    /// about to run) a primary gives up in time to demote before its lease could expire.
    fn read_timeout(&self, m: usize, cfg: &HaConfig) -> Millis {
        let member = &self.members[m];
        let leading = matches!(
            member.agent.state.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary
        ) || member.pg.is_running_primary();
        let lease_left = member
            .agent
            .lease_valid_until
            .map(|until| until.saturating_sub(self.now + cfg.demote_margin_ms));
        // A failsafe leader also needs time for its round after the read: half of what is left.
        let failsafe_left = member
            .agent
            .failsafe_valid_until
            .filter(|_| cfg.failsafe_mode)
            .map(|until| until.saturating_sub(self.now + cfg.demote_margin_ms) / 2);
        match lease_left.max(failsafe_left) {
            Some(left) if leading && self.flaw != Some(Flaw::UncappedDcsTimeout) => {
                cfg.retry_timeout_ms.min(left)
            }
            _ => cfg.retry_timeout_ms,
        }
    }

    /// The DCS read is over (`read_ok`: it answered in time): observe, decide, act. The
    /// decision's `now` is taken after the read, as the real agent must.
    pub(crate) fn finish_cycle(&mut self, m: usize, read_ok: bool) {
        let cfg = self.members[m].cfg.clone();
        let link = self.dcs_reachable(m);
        let reach = Reach {
            link,
            in_time: read_ok && link,
        };
        let obs = self.observe(m, reach);
        let decision = decide(&self.members[m].agent.state, &obs, &cfg);
        let actions: Vec<String> = decision
            .actions
            .iter()
            .filter(|a| **a != Action::RenewLease)
            .map(|a| a.to_string())
            .collect();
        self.log(
            m,
            format!(
                "[{}] {} | {}",
                decision.state.phase,
                decision.reason,
                actions.join(", ")
            ),
        );
        if decision.reason == Reason::LeaderHealthy {
            // The agent is in control of its primary again, with the lease.
            self.members[m].tainted = false;
            let settled = !decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::SetSyncStandbyNames { .. }));
            let member = &self.members[m];
            if settled && member.pg.ssn == member.agent.configured_sync {
                // The cluster is up with its replication settings in force: clients write.
                self.ledger.clients_on = true;
            }
        }
        self.members[m].agent.state = decision.state.clone();
        self.members[m].agent.last_reason = Some(decision.reason.to_string());
        let acts_on_postgres = decision.actions.iter().any(Action::is_job);
        if let Some(ms) = self.members[m]
            .agent
            .stall_in_next_cycle
            .filter(|_| acts_on_postgres)
        {
            // SIGSTOP between deciding and acting: the actions wait for SIGCONT.
            let agent = &mut self.members[m].agent;
            agent.stall_in_next_cycle = None;
            agent.stalled_until = Some(self.now + ms);
            agent.pending = Some(Box::new(Pending {
                observation: obs,
                decision,
            }));
            let incarnation = agent.incarnation;
            self.schedule(self.now + ms, Event::StallEnd { m, incarnation });
            self.log(m, format!("agent stopped for {ms} ms before acting"));
            return;
        }
        self.act(m, &obs, &decision, reach);
        if std::mem::take(&mut self.members[m].agent.retrigger) {
            self.trigger(m);
        }
    }

    /// SIGCONT: finish the interrupted cycle (its decision, carried out now), then decide afresh.
    pub(crate) fn resume(&mut self, m: usize) {
        if let Some(pending) = self.members[m].agent.pending.take() {
            let link = self.dcs_reachable(m);
            self.act(
                m,
                &pending.observation,
                &pending.decision,
                Reach {
                    link,
                    in_time: link,
                },
            );
        }
        self.run_cycle(m);
    }

    fn act(&mut self, m: usize, obs: &Observation, decision: &Decision, reach: Reach) {
        let cfg = self.members[m].cfg.clone();
        for action in &decision.actions {
            self.carry_out(m, action, reach, obs, decision, &cfg);
        }
        let wake = decision.next_wake.max(self.now + 1);
        self.wake_at(m, wake);
    }

    fn observe(&mut self, m: usize, reach: Reach) -> Observation {
        let view = reach.in_time.then(|| self.dcs.view());
        if view.is_some() {
            self.read_lease_left(m);
        }
        if let Some(v) = &view {
            let agent = &mut self.members[m].agent;
            agent.sync_rev_seen = self.dcs.sync_rev;
            agent.last_view = Some(v.clone());
            agent.saw_leaderless_since = match v.leader {
                Some(_) => None,
                None => Some(agent.saw_leaderless_since.unwrap_or(self.now)),
            };
        } else {
            self.failsafe_round(m);
        }
        let peers = match &view {
            Some(v) if v.leader.is_none() => self.peer_reports(m, v),
            _ => BTreeMap::new(),
        };
        let mut pg = self.members[m].pg.observe(self.timeline_model);
        if let LocalPg::Running(running) = &mut pg {
            running.replicas = self.pg_stat_replication(m);
        }
        let member = &self.members[m];
        Observation {
            now: self.now,
            pg,
            job: self.job_view(m),
            dcs: view,
            lease_valid_until: member.agent.lease_valid_until,
            peers,
            configured_upstream: member.agent.configured_upstream.clone(),
            follows_remote_primary: false,
            unix_now_ms: self.unix_now_ms(),
            configured_sync: member.agent.configured_sync.clone(),
            failsafe_acked_at: member.agent.failsafe_acked_at,
            failsafe_promised_until: member.agent.failsafe_promised_until,
            // WAL recycling is not modelled: no segment an upstream removed.
            missing_wal_segment: None,
            forked_from_upstream: false,
            slot_copies_ready: false,
            command: None,
            watchdog: Default::default(),
        }
    }

    /// The leader key names this member and hangs on its lease, which no renewal confirms
    /// now: ask etcd how long the lease still lives, as the agent does (`read_lease_left` in
    /// `crates/agent/src/observe.rs`): whole seconds, rounded up, less one second; a read, which does not
    /// extend the lease. (Answered with the cycle's DCS read.)
    fn read_lease_left(&mut self, m: usize) {
        let cfg = &self.members[m].cfg;
        let agent = &self.members[m].agent;
        let Some(lease) = agent.lease else { return };
        let ours = self
            .dcs
            .leader
            .as_ref()
            .is_some_and(|k| k.name == cfg.name && k.lease == lease);
        let certain = agent
            .lease_valid_until
            .is_some_and(|u| self.now + cfg.demote_margin_ms < u);
        if !ours || certain {
            return;
        }
        let Some(left) = self
            .dcs
            .lease_expiry(lease)
            .and_then(|at| at.checked_sub(self.now))
        else {
            return;
        };
        let secs = left.div_ceil(1000);
        if secs <= 1 {
            return;
        }
        let until = self.now + (secs - 1) * 1000;
        if agent.lease_valid_until.is_none_or(|u| u < until) {
            self.members[m].agent.lease_valid_until = Some(until);
            self.log(
                m,
                format!("etcd still holds lease {lease}: valid until {until}"),
            );
        }
    }

    /// What the other members' REST APIs answer (served by their agents: a dead or stopped
    /// agent does not answer). The agent asks the members the DCS lists (it finds their API
    /// addresses in their member documents, which expire with their leases), as the real
    /// agent does (`peer_api_urls`).
    fn peer_reports(&self, m: usize, view: &DcsView) -> BTreeMap<String, PeerView> {
        let mut peers = BTreeMap::new();
        for (j, peer) in self.members.iter().enumerate() {
            if j == m || !view.members.contains_key(&peer.name) {
                continue;
            }
            let view = if self.net.linked(m, j) && peer.agent.running() {
                // The peer's REST API reports what its agent reads, the same way.
                let running = peer.pg.observe(self.timeline_model).running().cloned();
                PeerView::Report {
                    replica_running: peer.pg.is_running_replica(),
                    primary_running: peer.pg.is_running_primary(),
                    lsn: running.as_ref().map(|r| r.lsn),
                    timeline: running.as_ref().map(|r| r.timeline),
                    nofailover: peer.cfg.nofailover,
                    failover_priority: peer.cfg.failover_priority,
                    // The model reads the peer's PostgreSQL live.
                    settled: true,
                }
            } else {
                PeerView::Unreachable
            };
            peers.insert(peer.name.clone(), view);
        }
        peers
    }

    fn carry_out(
        &mut self,
        m: usize,
        action: &Action,
        reach: Reach,
        obs: &Observation,
        decision: &Decision,
        cfg: &HaConfig,
    ) {
        let name = cfg.name.as_str();
        let now = self.now;
        if action.is_job() {
            if matches!(action, Action::Promote | Action::StartPrimary) {
                // The agent checks the lease again right before: time may have passed since
                // the decision (a stop between deciding and acting).
                let certain = self.members[m]
                    .agent
                    .lease_valid_until
                    .is_some_and(|u| u > now + cfg.demote_margin_ms);
                if !certain && self.flaw != Some(Flaw::NoRecheckBeforePrimary) {
                    self.log(
                        m,
                        format!(
                            "not carrying out {action}: the lease is no longer certainly valid"
                        ),
                    );
                    return;
                }
                self.check_primary_right(m, action, obs, decision);
            }
            self.start_job(m, action);
            return;
        }
        match action {
            Action::RenewLease => self.renew_lease(m, reach, cfg),
            Action::Repoint { upstream } => {
                self.members[m].agent.configured_upstream = upstream.clone();
                self.members[m].pg.upstream = upstream.clone();
            }
            Action::MoveDataAside { reason } => {
                let member = &mut self.members[m];
                if member.pg.process == crate::postgres::Process::Stopped && member.job.is_none() {
                    member.pg.data = None;
                } else {
                    self.log(m, format!("refused to move the data directory aside ({reason}): PostgreSQL or a job runs"));
                }
            }
            // Replication slots are not modelled.
            Action::SyncSlots { .. } | Action::ApplyLogical => {}
            Action::SetSyncStandbyNames { names } => self.set_sync_standby_names(m, names),
            // Everything else writes to the DCS and needs it to answer in time.
            _ if !reach.in_time => {}
            Action::PublishMember => {
                let Some(lease) = self.members[m].agent.lease else {
                    return;
                };
                let running = obs.pg.running();
                let doc = MemberView {
                    state: DocState::Known(decision.published),
                    is_primary: obs.pg.is_primary(),
                    is_standby_leader: false,
                    lsn: running.map(|r| r.lsn),
                    timeline: running.map(|r| r.timeline),
                    nofailover: cfg.nofailover,
                    replicatefrom: None,
                    nosync: false,
                    clonefrom: false,
                };
                self.dcs.put_member(name, doc, lease, now);
            }
            Action::ClaimInitialize => {
                self.dcs.claim_initialize(name);
            }
            Action::WriteInitialize { system_id } => {
                self.dcs.write_initialize(name, *system_id);
            }
            Action::CancelInitialize => {
                self.dcs.cancel_initialize(name);
            }
            Action::WriteBootstrapConfig => self.dcs.config_present = true,
            Action::AcquireLeader => {
                let Some(lease) = self.members[m].agent.lease else {
                    return;
                };
                if self.dcs.acquire_leader(name, lease, now) {
                    self.leader_changes += 1;
                    self.happenings.push(Happening::LeaderKeyTaken {
                        at: now,
                        member: name.to_string(),
                    });
                    self.log(m, format!("took the leader key (lease {lease})"));
                    self.notify_watchers();
                }
            }
            Action::ReleaseLeader => self.release_leader_key(m),
            Action::WriteStatus { optime } => self.dcs.status_optime = Some(*optime),
            Action::AppendHistory { timeline, lsn } => {
                // The real agent reads where the timeline ended from the new timeline's
                // history file; the position the decision saw is only its fallback.
                let switch = self.members[m]
                    .pg
                    .data
                    .as_ref()
                    .and_then(|d| d.switch_point(*timeline));
                if switch.is_some_and(|s| s != *lsn) {
                    self.log(
                        m,
                        format!(
                            "history: timeline {timeline} ended at {} (history file), not {lsn} (seen before promoting)",
                            switch.unwrap_or_default()
                        ),
                    );
                }
                // The whole key from the data directory's history, as the agent writes it
                // from its history file (rows of another branch replaced).
                let data_history = self.members[m]
                    .pg
                    .data
                    .as_ref()
                    .map(|d| d.history.clone())
                    .unwrap_or_default();
                if !data_history.is_empty() {
                    self.dcs.history = data_history.into_iter().collect();
                } else if *lsn != 0 {
                    self.dcs.history.retain(|t, _| *t < *timeline);
                    self.dcs.history.insert(*timeline, switch.unwrap_or(*lsn));
                }
            }
            Action::WriteSync { members, quorum } => {
                self.write_sync(m, members, *quorum);
            }
            Action::WriteFailsafe { members } => self.dcs.failsafe = Some(members.clone()),
            Action::ClearFailover if self.dcs.failover.is_some() => {
                self.dcs.failover = None;
                self.log(m, "deleted the failover key".to_string());
                self.happenings.push(Happening::FailoverCleared {
                    at: now,
                    member: name.to_string(),
                });
            }
            // Already gone.
            Action::ClearFailover => {}
            // Background operations were started above (`Action::is_job`).
            Action::Bootstrap
            | Action::Clone { .. }
            | Action::Rewind { .. }
            | Action::StartReplica { .. }
            | Action::StartPrimary
            | Action::Stop { .. }
            | Action::InstallSlotCopies
            | Action::Promote => {}
            // The model's PostgreSQL picks the next free timeline by itself.
            Action::ReserveTimelines { .. } => {}
        }
    }

    /// Write synchronous_standby_names to postgresql.conf and reload: in force at once, or
    /// after a short reload delay when the run models one.
    fn set_sync_standby_names(&mut self, m: usize, names: &Option<SyncStandbyNames>) {
        let setting = names.as_ref().map(|n| n.to_setting()).unwrap_or_default();
        self.log(m, format!("synchronous_standby_names = '{setting}'"));
        self.members[m].agent.configured_sync = names.clone();
        let pg = &mut self.members[m].pg;
        pg.ssn_conf = names.clone();
        if !pg.is_running() {
            return;
        }
        if self.ssn_reload_max_ms == 0 {
            pg.ssn = names.clone();
            return;
        }
        let delay = self.rng.random_range(0..=self.ssn_reload_max_ms);
        self.schedule(self.now + delay, Event::SsnReload { m });
    }

    /// The leader's compare-and-swap on the `sync` key, against the revision it last read.
    /// Invariant 7 is checked on every successful write.
    fn write_sync(&mut self, m: usize, members: &[String], quorum: Option<u32>) {
        let name = self.members[m].name.clone();
        let key = SyncKey {
            leader: Some(name.clone()),
            members: members.to_vec(),
            quorum,
        };
        let expected = self.members[m].agent.sync_rev_seen;
        if !self.dcs.write_sync(key, expected) {
            self.log(
                m,
                "sync key changed since it was read: not written".to_string(),
            );
            return;
        }
        self.members[m].agent.sync_rev_seen = self.dcs.sync_rev;
        self.log(m, format!("sync key: {members:?} quorum {quorum:?}"));
        self.happenings.push(Happening::SyncKeyWritten {
            at: self.now,
            leader: name.clone(),
            members: members.to_vec(),
            quorum,
        });
        if let Some(why) = self.sync_key_problem() {
            self.sync_key_wrong(format!("{name} wrote the sync key: {why}"));
        }
    }

    /// Delete the leader key iff it names member `m`, and tell the watchers.
    fn release_leader_key(&mut self, m: usize) {
        let name = self.members[m].name.clone();
        if !self.dcs.release_leader(&name) {
            return;
        }
        self.happenings.push(Happening::LeaderKeyGone {
            at: self.now,
            member: name,
            expired: false,
        });
        self.log(m, "released the leader key".to_string());
        self.notify_watchers();
    }

    /// Keep the lease alive. Without one: adopt the lease of a leader key that names us
    /// (the keys we hold must stay attached to the lease we believe in), else grant one.
    fn renew_lease(&mut self, m: usize, reach: Reach, cfg: &HaConfig) {
        if !reach.link {
            return;
        }
        // The agent bounds the keepalive like every DCS request (`dcs_timeout`).
        let timeout = self.read_timeout(m, cfg);
        if let Some(lease) = self.members[m].agent.lease {
            self.send_keepalive(m, lease, false, timeout);
            return;
        }
        if !reach.in_time {
            return;
        }
        let adopt = match &self.dcs.leader {
            Some(LeaderKey { name, lease })
                if *name == cfg.name && self.dcs.lease_alive(*lease, self.now) =>
            {
                Some(*lease)
            }
            _ => None,
        };
        if let Some(lease) = adopt {
            self.members[m].agent.lease = Some(lease);
            self.send_keepalive(m, lease, false, timeout);
            return;
        }
        let lease = self.dcs.grant(cfg.ttl_ms, self.now);
        let agent = &mut self.members[m].agent;
        agent.lease = Some(lease);
        agent.lease_valid_until = Some(self.now + cfg.ttl_ms);
        self.schedule(self.now + cfg.ttl_ms, Event::LeaseCheck);
        self.log(m, format!("granted lease {lease}"));
    }

    /// Invariant 3: PostgreSQL is made a primary (start as primary, promote) only by an agent
    /// that holds an unexpired lease and whose lease holds the leader key right now.
    fn check_primary_right(
        &mut self,
        m: usize,
        action: &Action,
        obs: &Observation,
        decision: &Decision,
    ) {
        let agent = &self.members[m].agent;
        let lease_ok = agent.lease_valid_until.is_some_and(|u| u > self.now);
        let key_ok = match (&self.dcs.leader, agent.lease) {
            (Some(k), Some(lease)) => k.name == self.members[m].name && k.lease == lease,
            _ => false,
        };
        if lease_ok && key_ok {
            return;
        }
        let description = format!(
            "{} decided {action} without the right: lease valid until {:?} (now {}), agent lease {:?}, leader key {:?}; observation: pg {:?}, job {:?}, dcs leader {:?}; decision: {} ({:?})",
            self.members[m].name,
            agent.lease_valid_until,
            self.now,
            agent.lease,
            self.dcs.leader,
            obs.pg,
            obs.job,
            obs.dcs.as_ref().map(|v| v.leader.clone()),
            decision.reason,
            decision.state.phase,
        );
        self.violate(ViolationKind::PrimaryWithoutLease, description);
    }
}
