//! `MemoryDcs`: the `Dcs` trait over a shared in-memory store, for the simulator and for
//! tests that need no etcd. It behaves like the etcd adapter (same conformance suite), with
//! time from tokio's clock and a switch to make one member's DCS unreachable.

mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::dcs::{lease_ttl_secs, to_json, Dcs, LeaseAck};
use crate::error::DcsError;
use crate::model::{
    keys, ClusterPath, ClusterState, FailoverDoc, HistoryEntry, MemberDoc, StatusDoc, SyncDoc,
};
use crate::parse::{parse_cluster, RawEntry};
pub use store::MemoryStore;
use store::{Compare, LeaseNotFound, Op};

/// One member's handle on a `MemoryStore`.
#[derive(Debug)]
pub struct MemoryDcs {
    store: MemoryStore,
    path: ClusterPath,
    member: String,
    /// The TTL asked for at the next lease grant.
    ttl: Mutex<Duration>,
    /// This handle's lease, once granted (or adopted).
    lease: Mutex<Option<i64>>,
    /// Fault injection: every call fails with `Unreachable` while set.
    unreachable: AtomicBool,
}

impl MemoryDcs {
    pub fn new_store() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn new(store: &MemoryStore, path: ClusterPath, member: &str, ttl: Duration) -> Self {
        MemoryDcs {
            store: store.clone(),
            path,
            member: member.to_string(),
            ttl: Mutex::new(ttl),
            lease: Mutex::new(None),
            unreachable: AtomicBool::new(false),
        }
    }

    /// Fault injection for tests: while true, every call of this handle fails with
    /// `DcsError::Unreachable` (the store itself and other handles carry on).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Applies to the next lease grant.
    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
    }

    /// The cluster as the store holds it this instant, without yielding: `load` for a
    /// caller that cannot await (the simulator's checks at the moment something happens).
    pub fn peek(&self) -> Result<ClusterState, DcsError> {
        self.check_reachable()?;
        let prefix = self.path.prefix();
        let (entries, revision) = self.store.range(&prefix);
        let raw = entries.iter().map(|(key, e)| RawEntry {
            key,
            value: &e.value,
            lease: e.lease,
            mod_revision: e.mod_revision,
        });
        parse_cluster(&prefix, raw, revision)
    }

    fn check_reachable(&self) -> Result<(), DcsError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(DcsError::Unreachable {
                endpoints: "memory".to_string(),
                message: format!(
                    "fault injected: the DCS is cut off from member {}",
                    self.member
                ),
            });
        }
        Ok(())
    }

    fn current_lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_lease(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    fn grant(&self, sent_at: Instant) -> LeaseAck {
        let secs = lease_ttl_secs(*self.ttl.lock().unwrap_or_else(|p| p.into_inner()));
        let ttl = Duration::from_secs(secs.unsigned_abs());
        let lease_id = self.store.grant(ttl);
        self.set_lease(Some(lease_id));
        LeaseAck {
            sent_at,
            ttl,
            lease_id,
        }
    }

    /// Run a put attached to our lease; a lease that vanished is replaced once.
    async fn put_with_lease(
        &self,
        compare: Compare,
        key: String,
        value: Vec<u8>,
    ) -> Result<bool, DcsError> {
        for _ in 0..2 {
            let lease = match self.current_lease() {
                Some(id) => id,
                None => self.keepalive().await?.lease_id,
            };
            let op = Op::Put {
                key: key.clone(),
                value: value.clone(),
                lease,
            };
            match self.store.txn(compare.clone(), op) {
                Ok(done) => return Ok(done),
                Err(LeaseNotFound) => self.set_lease(None),
            }
        }
        Err(DcsError::Rejected {
            message: format!("lease for {key} vanished twice in a row; retry"),
        })
    }

    /// The compare of a write only the leader key's holder makes.
    fn held_leader(&self) -> Compare {
        Compare::Value(
            self.path.key(keys::LEADER),
            self.member.clone().into_bytes(),
        )
    }

    fn plain(&self, compare: Compare, op: Op) -> Result<bool, DcsError> {
        self.check_reachable()?;
        self.store
            .txn(compare, op)
            .map_err(|LeaseNotFound| DcsError::Rejected {
                message: "requested lease not found".to_string(),
            })
    }

    fn put_compare(
        &self,
        relative: &str,
        value: String,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let key = self.path.key(relative);
        let compare = match expected_revision {
            None => Compare::Absent(key.clone()),
            Some(rev) => Compare::ModRevision(key.clone(), rev),
        };
        self.plain(
            compare,
            Op::Put {
                key,
                value: value.into_bytes(),
                lease: 0,
            },
        )
    }
}

impl Dcs for MemoryDcs {
    fn member_name(&self) -> &str {
        &self.member
    }

    fn path(&self) -> &ClusterPath {
        &self.path
    }

    async fn load(&self) -> Result<ClusterState, DcsError> {
        self.peek()
    }

    async fn keepalive(&self) -> Result<LeaseAck, DcsError> {
        self.check_reachable()?;
        let sent_at = Instant::now();
        if let Some(lease_id) = self.current_lease() {
            if let Some(ttl) = self.store.keepalive(lease_id) {
                return Ok(LeaseAck {
                    sent_at,
                    ttl,
                    lease_id,
                });
            }
            tracing::info!(member = %self.member, lease_id, "lease expired; granting a new one");
        }
        Ok(self.grant(sent_at))
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        self.check_reachable()?;
        let key = self.path.key(keys::LEADER);
        self.put_with_lease(
            Compare::Absent(key.clone()),
            key,
            self.member.clone().into_bytes(),
        )
        .await
    }

    async fn adopt_leader_lease(&self) -> Result<Option<LeaseAck>, DcsError> {
        self.check_reachable()?;
        let sent_at = Instant::now();
        let Some(leader) = self.store.get(&self.path.key(keys::LEADER)) else {
            return Ok(None);
        };
        if leader.value != self.member.as_bytes() || leader.lease == 0 {
            return Ok(None);
        }
        match self.store.keepalive(leader.lease) {
            Some(ttl) => {
                self.set_lease(Some(leader.lease));
                Ok(Some(LeaseAck {
                    sent_at,
                    ttl,
                    lease_id: leader.lease,
                }))
            }
            None => Ok(None),
        }
    }

    async fn lease_remaining(&self, lease_id: i64) -> Result<Option<Duration>, DcsError> {
        self.check_reachable()?;
        Ok(self.store.remaining(lease_id))
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        self.plain(self.held_leader(), Op::Delete(self.path.key(keys::LEADER)))
    }

    async fn touch_member(&self, doc: &MemberDoc) -> Result<(), DcsError> {
        self.check_reachable()?;
        let key = self.path.member_key(&self.member);
        let value = to_json(&key, doc)?.into_bytes();
        self.put_with_lease(Compare::Always, key, value)
            .await
            .map(|_| ())
    }

    async fn claim_initialize(&self, value: &str) -> Result<bool, DcsError> {
        self.put_compare(keys::INITIALIZE, value.to_string(), None)
    }

    async fn set_initialize(&self, expected: &str, value: &str) -> Result<bool, DcsError> {
        let key = self.path.key(keys::INITIALIZE);
        let op = Op::Put {
            key: key.clone(),
            value: value.as_bytes().to_vec(),
            lease: 0,
        };
        self.plain(Compare::Value(key, expected.as_bytes().to_vec()), op)
    }

    async fn cancel_initialize(&self, expected: &str) -> Result<bool, DcsError> {
        let key = self.path.key(keys::INITIALIZE);
        self.plain(
            Compare::Value(key.clone(), expected.as_bytes().to_vec()),
            Op::Delete(key),
        )
    }

    async fn set_config(
        &self,
        value: &serde_json::Value,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.put_compare(keys::CONFIG, value.to_string(), expected_revision)
    }

    async fn set_history(&self, history: &[HistoryEntry]) -> Result<bool, DcsError> {
        let key = self.path.key(keys::HISTORY);
        let value = HistoryEntry::list_to_json(history).into_bytes();
        self.plain(
            self.held_leader(),
            Op::Put {
                key,
                value,
                lease: 0,
            },
        )
    }

    async fn set_status(&self, status: &StatusDoc) -> Result<bool, DcsError> {
        let key = self.path.key(keys::STATUS);
        let value = to_json(&key, status)?.into_bytes();
        self.plain(
            self.held_leader(),
            Op::Put {
                key,
                value,
                lease: 0,
            },
        )
    }

    async fn set_failsafe(
        &self,
        members: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, DcsError> {
        let key = self.path.key(keys::FAILSAFE);
        let value = to_json(&key, members)?.into_bytes();
        self.plain(
            self.held_leader(),
            Op::Put {
                key,
                value,
                lease: 0,
            },
        )
    }

    async fn set_sync(
        &self,
        doc: &SyncDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let value = to_json(keys::SYNC, doc)?;
        self.put_compare(keys::SYNC, value, expected_revision)
    }

    async fn set_failover(
        &self,
        doc: &FailoverDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let value = to_json(keys::FAILOVER, doc)?;
        self.put_compare(keys::FAILOVER, value, expected_revision)
    }

    async fn delete_failover(&self) -> Result<(), DcsError> {
        self.plain(Compare::Always, Op::Delete(self.path.key(keys::FAILOVER)))
            .map(|_| ())
    }

    async fn delete_member(&self, name: &str) -> Result<(), DcsError> {
        self.plain(Compare::Always, Op::Delete(self.path.member_key(name)))
            .map(|_| ())
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe()
    }
}
