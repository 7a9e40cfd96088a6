//! The in-memory DCS (etcd) of the simulator: the keys pgbaton uses, leases with virtual
//! expiry, and the compare-and-swap operations the agent relies on.
//!
//! Simplifications: reads and writes are instantaneous (only keepalives travel with a delay,
//! modelled by the world); one lease per grant; `history` is reduced to its last timeline.
//! The `sync` and `failover` keys are permanent (no lease), as in Patroni.

use std::collections::BTreeMap;

use pgbaton_core::{DcsView, FailoverRequest, Initialize, Lsn, MemberView, Millis, SyncKey};

/// etcd lease identifier.
pub type LeaseId = u64;

/// A granted lease and when etcd will expire it.
#[derive(Debug, Clone)]
struct Lease {
    ttl_ms: Millis,
    /// The lease and every key attached to it disappear at this instant.
    expires_at: Millis,
}

/// The `leader` key: who holds it and the lease it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: String,
    pub lease: LeaseId,
}

/// A `members/<name>` document, attached to its member's lease.
#[derive(Debug, Clone)]
pub struct MemberDoc {
    pub view: MemberView,
    pub lease: LeaseId,
}

/// What a lease expiry removed (the world turns a leader-key deletion into watch events).
#[derive(Debug, Default)]
pub struct Expired {
    /// Holder of the leader key that was deleted with its lease.
    pub leader: Option<String>,
}

/// The whole DCS state of one cluster scope.
#[derive(Debug, Default)]
pub struct Dcs {
    pub initialize: Option<Initialize>,
    pub leader: Option<LeaderKey>,
    pub members: BTreeMap<String, MemberDoc>,
    pub status_optime: Option<Lsn>,
    /// The `history` key: each timeline that ended and where.
    pub history: BTreeMap<u32, Lsn>,
    pub config_present: bool,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// Number of active outage faults: while positive, etcd answers nobody and expires nothing.
    pub outages: u32,
    /// The `sync` key and its revision (0: never written).
    pub sync: Option<SyncKey>,
    pub sync_rev: u64,
    /// The `failover` key: a pending switchover.
    pub failover: Option<FailoverRequest>,
    /// The `failsafe` key: the failsafe topology the leader wrote (permanent, no lease).
    pub failsafe: Option<Vec<String>>,
}

impl Dcs {
    pub fn up(&self) -> bool {
        self.outages == 0
    }

    /// One snapshot as the agent's read returns it.
    pub fn view(&self) -> DcsView {
        let leader = self.leader.as_ref().map(|k| k.name.clone());
        let leader_doc_lsn = leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .and_then(|d| d.view.lsn);
        let leader_optime = match (self.status_optime, leader_doc_lsn) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        DcsView {
            initialize: self.initialize.clone().unwrap_or(Initialize::Absent),
            leader,
            members: self
                .members
                .iter()
                .map(|(k, d)| (k.clone(), d.view.clone()))
                .collect(),
            leader_optime,
            history: self.history.clone(),
            config_present: self.config_present,
            failover: self.failover.clone(),
            sync: self.sync.clone(),
            failsafe: self.failsafe.clone(),
            // WAL recycling is not modelled: the leader keeps every segment.
            leader_oldest_wal: None,
            routers: Default::default(),
        }
    }

    /// Write the `sync` key iff its revision is still `expected` (what the writer read).
    pub fn write_sync(&mut self, key: SyncKey, expected: u64) -> bool {
        if self.sync_rev != expected {
            return false;
        }
        self.sync = Some(key);
        self.sync_rev += 1;
        true
    }

    pub fn lease_alive(&self, id: LeaseId, now: Millis) -> bool {
        self.leases.get(&id).is_some_and(|l| l.expires_at > now)
    }

    pub fn lease_expiry(&self, id: LeaseId) -> Option<Millis> {
        self.leases.get(&id).map(|l| l.expires_at)
    }

    /// Grant a new lease that expires `ttl_ms` from now.
    pub fn grant(&mut self, ttl_ms: Millis, now: Millis) -> LeaseId {
        self.next_lease += 1;
        self.leases.insert(
            self.next_lease,
            Lease {
                ttl_ms,
                expires_at: now + ttl_ms,
            },
        );
        self.next_lease
    }

    /// A keepalive that reached etcd now: extends the lease to now + ttl. False when the
    /// lease is gone ("lease not found").
    pub fn keepalive(&mut self, id: LeaseId, now: Millis) -> bool {
        match self.leases.get_mut(&id) {
            Some(l) if l.expires_at > now => {
                l.expires_at = l.expires_at.max(now + l.ttl_ms);
                true
            }
            _ => false,
        }
    }

    /// Expire every lease whose time has come, with the keys attached to it.
    pub fn expire_due(&mut self, now: Millis) -> Expired {
        let mut out = Expired::default();
        if !self.up() {
            return out;
        }
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.leases.remove(&id);
            self.members.retain(|_, d| d.lease != id);
            if self.leader.as_ref().is_some_and(|k| k.lease == id) {
                out.leader = self.leader.take().map(|k| k.name);
            }
        }
        out
    }

    /// etcd came back: a new etcd leader resets every lease to its full ttl (this only
    /// makes leases last longer than their holders believe, which is safe).
    pub fn end_outage(&mut self, now: Millis) -> Vec<Millis> {
        self.leases
            .values_mut()
            .for_each(|l| l.expires_at = l.expires_at.max(now + l.ttl_ms));
        self.leases.values().map(|l| l.expires_at).collect()
    }

    /// Create `initialize` with our claim, iff absent.
    pub fn claim_initialize(&mut self, name: &str) -> bool {
        if self.initialize.is_some() {
            return false;
        }
        self.initialize = Some(Initialize::ClaimedBy(name.to_string()));
        true
    }

    /// Replace our own claim by the system identifier.
    pub fn write_initialize(&mut self, name: &str, system_id: u64) -> bool {
        if !self.claimed_by(name) {
            return false;
        }
        self.initialize = Some(Initialize::SystemId(system_id));
        true
    }

    /// Delete our own claim.
    pub fn cancel_initialize(&mut self, name: &str) -> bool {
        if !self.claimed_by(name) {
            return false;
        }
        self.initialize = None;
        true
    }

    fn claimed_by(&self, name: &str) -> bool {
        matches!(&self.initialize, Some(Initialize::ClaimedBy(who)) if who == name)
    }

    /// Take the leader key iff absent, attached to a live lease.
    pub fn acquire_leader(&mut self, name: &str, lease: LeaseId, now: Millis) -> bool {
        if self.leader.is_some() || !self.lease_alive(lease, now) {
            return false;
        }
        self.leader = Some(LeaderKey {
            name: name.to_string(),
            lease,
        });
        true
    }

    /// Delete the leader key iff it names us.
    pub fn release_leader(&mut self, name: &str) -> bool {
        if self.leader.as_ref().is_some_and(|k| k.name == name) {
            self.leader = None;
            return true;
        }
        false
    }

    /// Write `members/<name>` attached to a live lease (etcd refuses an unknown lease).
    pub fn put_member(
        &mut self,
        name: &str,
        view: MemberView,
        lease: LeaseId,
        now: Millis,
    ) -> bool {
        if !self.lease_alive(lease, now) {
            return false;
        }
        self.members
            .insert(name.to_string(), MemberDoc { view, lease });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> MemberView {
        MemberView {
            state: "running".into(),
            is_primary: true,
            is_standby_leader: false,
            lsn: Some(7),
            timeline: Some(1),
            nofailover: false,
            replicatefrom: None,
            nosync: false,
            clonefrom: false,
        }
    }

    #[test]
    fn leader_key_is_a_compare_and_swap_on_a_live_lease() {
        let mut dcs = Dcs::default();
        let a = dcs.grant(4_000, 0);
        let b = dcs.grant(4_000, 0);
        assert!(dcs.acquire_leader("a", a, 10));
        assert!(!dcs.acquire_leader("b", b, 10), "second racer must lose");
        assert!(!dcs.release_leader("b"), "only the holder may release");
        assert!(dcs.release_leader("a"));
        assert!(
            !dcs.acquire_leader("b", b, 4_000),
            "an expired lease cannot hold a key"
        );
    }

    #[test]
    fn lease_expiry_deletes_attached_keys_and_keepalive_extends() {
        let mut dcs = Dcs::default();
        let a = dcs.grant(4_000, 0);
        assert!(dcs.put_member("a", doc(), a, 0));
        assert!(dcs.acquire_leader("a", a, 0));
        assert!(dcs.keepalive(a, 3_000));
        assert!(dcs.expire_due(6_999).leader.is_none());
        assert_eq!(dcs.expire_due(7_000).leader.as_deref(), Some("a"));
        assert!(dcs.members.is_empty());
        assert!(
            !dcs.keepalive(a, 7_001),
            "a keepalive of an expired lease is refused"
        );
    }

    #[test]
    fn an_outage_freezes_expiry_and_resets_ttls() {
        let mut dcs = Dcs::default();
        let a = dcs.grant(4_000, 0);
        dcs.outages = 1;
        assert!(dcs.expire_due(10_000).leader.is_none());
        assert!(dcs.lease_expiry(a).is_some());
        dcs.outages = 0;
        dcs.end_outage(10_000);
        assert_eq!(dcs.lease_expiry(a), Some(14_000));
    }

    #[test]
    fn the_sync_key_is_a_compare_and_swap_on_its_revision() {
        let mut dcs = Dcs::default();
        let key = |leader: &str| SyncKey {
            leader: Some(leader.into()),
            members: vec!["b".into()],
            quorum: None,
        };
        assert!(dcs.write_sync(key("a"), 0));
        assert!(!dcs.write_sync(key("c"), 0), "a stale writer must lose");
        assert!(dcs.write_sync(key("c"), 1));
        assert_eq!(dcs.view().sync, Some(key("c")));
    }

    #[test]
    fn initialize_race() {
        let mut dcs = Dcs::default();
        assert!(dcs.claim_initialize("a"));
        assert!(!dcs.claim_initialize("b"));
        assert!(!dcs.write_initialize("b", 1));
        assert!(dcs.cancel_initialize("a"));
        assert!(dcs.claim_initialize("b"));
        assert!(dcs.write_initialize("b", 42));
        assert_eq!(dcs.view().initialize, Initialize::SystemId(42));
    }
}
