//! `EtcdDcs`: the `Dcs` trait over etcd v3 in Patroni 3's key layout. One lease per agent,
//! to which the member key and the leader key are attached; every write that must not race
//! is a one-compare transaction. Never fails to construct: it connects on first use and
//! every call is bounded by the request timeout.

mod access;
mod conn;
mod read;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::dcs::{lease_ttl_secs, to_json, Dcs, LeaseAck};
use crate::error::DcsError;
use crate::model::{
    keys, ClusterPath, ClusterState, FailoverDoc, HistoryEntry, MemberDoc, StatusDoc, SyncDoc,
};
pub use access::{EtcdAccess, EtcdTls};
use conn::{Conn, Failure, Target};
pub use read::{list_scopes, load_cluster, load_cluster_with, member_peer_urls};

/// The lease this handle renews.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// The TTL etcd granted; each keepalive resets the lease to it.
    ttl: Duration,
}

/// One member's handle on a cluster stored in etcd.
#[derive(Debug)]
pub struct EtcdDcs {
    conn: Conn,
    path: ClusterPath,
    member: String,
    /// The TTL asked for at the next lease grant.
    ttl: Mutex<Duration>,
    lease: Mutex<Option<Lease>>,
    /// Bumped by the watch task on every change under the prefix.
    events: Arc<tokio::sync::watch::Sender<u64>>,
    /// Dropping this stops the watch task; None until the first `subscribe`.
    watch_stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl EtcdDcs {
    /// Never fails because etcd is down: the agent must start and keep retrying. Requests
    /// time out after `request_timeout` (DcsError::Unreachable).
    pub fn new(
        endpoints: Vec<String>,
        path: ClusterPath,
        member: &str,
        ttl: Duration,
        request_timeout: Duration,
    ) -> Self {
        EtcdDcs {
            conn: Conn::new(Target::new(endpoints, request_timeout)),
            path,
            member: member.to_string(),
            ttl: Mutex::new(ttl),
            lease: Mutex::new(None),
            events: Arc::new(tokio::sync::watch::Sender::new(0)),
            watch_stop: Mutex::new(None),
        }
    }

    /// The same handle reaching etcd with TLS and/or credentials. Fails only when a
    /// certificate file cannot be read (or a client certificate lacks its key).
    pub fn with_access(mut self, access: &EtcdAccess) -> Result<Self, DcsError> {
        let target = &self.conn.target;
        self.conn = Conn::new(Target::with_access(
            target.endpoints.clone(),
            target.request_timeout,
            access.load()?,
        ));
        Ok(self)
    }

    /// Applies to the next lease grant.
    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
    }

    fn current_lease(&self) -> Option<Lease> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    /// One keepalive round trip for `lease`: Ok(None) when etcd says it is gone.
    async fn renew(&self, lease: Lease) -> Result<Option<LeaseAck>, DcsError> {
        let sent_at = Instant::now();
        match self
            .conn
            .call("lease keepalive", |mut c| async move {
                c.lease_keep_alive(lease.id).await
            })
            .await
        {
            Ok(_) => Ok(Some(LeaseAck {
                sent_at,
                ttl: lease.ttl,
                lease_id: lease.id,
            })),
            Err(Failure::LeaseNotFound) => Ok(None),
            Err(Failure::Dcs(e)) => Err(e),
        }
    }

    async fn grant(&self) -> Result<LeaseAck, DcsError> {
        let secs = lease_ttl_secs(*self.ttl.lock().unwrap_or_else(|p| p.into_inner()));
        let sent_at = Instant::now();
        let response = self
            .conn
            .call("lease grant", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await
            .map_err(Failure::into_dcs)?;
        if !response.error().is_empty() {
            return Err(DcsError::Rejected {
                message: format!("lease grant: {}", response.error()),
            });
        }
        let lease = Lease {
            id: response.id(),
            ttl: Duration::from_secs(response.ttl().max(0).unsigned_abs()),
        };
        self.set_lease(Some(lease));
        tracing::debug!(member = %self.member, lease_id = lease.id, ttl = ?lease.ttl, "granted a new lease");
        Ok(LeaseAck {
            sent_at,
            ttl: lease.ttl,
            lease_id: lease.id,
        })
    }

    async fn lease_id(&self) -> Result<i64, DcsError> {
        match self.current_lease() {
            Some(lease) => Ok(lease.id),
            None => Ok(self.keepalive().await?.lease_id),
        }
    }

    /// Run a transaction; `Ok(succeeded)`.
    async fn txn(&self, what: &str, txn: Txn) -> Result<bool, Failure> {
        self.conn
            .call(what, |mut c| async move { c.txn(txn).await })
            .await
            .map(|r| r.succeeded())
    }

    /// A put attached to our lease, under `compares`; a lease etcd no longer knows is
    /// replaced by a fresh one and the put retried once.
    async fn put_with_lease(
        &self,
        what: &str,
        compares: Vec<Compare>,
        key: String,
        value: String,
    ) -> Result<bool, DcsError> {
        for _ in 0..2 {
            let lease = self.lease_id().await?;
            let put = TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            );
            let txn = Txn::new().when(compares.clone()).and_then(vec![put]);
            match self.txn(what, txn).await {
                Ok(done) => return Ok(done),
                Err(Failure::LeaseNotFound) => {
                    tracing::info!(member = %self.member, lease, "lease expired in etcd; granting a new one");
                    self.set_lease(None);
                }
                Err(Failure::Dcs(e)) => return Err(e),
            }
        }
        Err(DcsError::Rejected {
            message: format!("{what}: the lease vanished twice in a row; retry"),
        })
    }

    async fn put_if(
        &self,
        what: &str,
        compares: Vec<Compare>,
        relative: &str,
        value: String,
    ) -> Result<bool, DcsError> {
        let txn = Txn::new().when(compares).and_then(vec![TxnOp::put(
            self.path.key(relative),
            value,
            None,
        )]);
        self.txn(what, txn).await.map_err(Failure::into_dcs)
    }

    /// The compare of a write only the leader key's holder makes.
    fn held_leader(&self) -> Vec<Compare> {
        vec![Compare::value(
            self.path.key(keys::LEADER),
            CompareOp::Equal,
            self.member.clone(),
        )]
    }

    async fn delete_if(
        &self,
        what: &str,
        compares: Vec<Compare>,
        key: String,
    ) -> Result<bool, DcsError> {
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::delete(key, None)]);
        self.txn(what, txn).await.map_err(Failure::into_dcs)
    }

    /// Put `routers/<name>` (this handle's member name is the router's), attached to this
    /// handle's own lease: a router registers itself for the cluster with it, and the key
    /// disappears with the lease when the router stops renewing it ([`Dcs::keepalive`]).
    pub async fn touch_router(&self, doc: &crate::model::RouterDoc) -> Result<(), DcsError> {
        let key = self.path.router_key(&self.member);
        let value = to_json(&key, doc)?;
        self.put_with_lease("register router", Vec::new(), key, value)
            .await
            .map(|_| ())
    }

    /// Delete `routers/<name>` (a router that stops).
    pub async fn remove_router(&self) -> Result<(), DcsError> {
        let key = self.path.router_key(&self.member);
        self.delete_if("remove router", Vec::new(), key)
            .await
            .map(|_| ())
    }

    /// Put `move` (`ctl move`): `expected_revision` as for [`Dcs::set_failover`] (`None`:
    /// create iff absent). False when another write came first.
    pub async fn set_move(
        &self,
        doc: &crate::model::MoveDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let compares = self.revision_compare(keys::MOVE, expected_revision);
        self.put_if("set move", compares, keys::MOVE, to_json(keys::MOVE, doc)?)
            .await
    }

    /// Delete `move`: the routers go back to this cluster (a move given up, or undone).
    pub async fn delete_move(&self) -> Result<(), DcsError> {
        self.delete_if("delete move", Vec::new(), self.path.key(keys::MOVE))
            .await
            .map(|_| ())
    }

    /// `None` = create iff absent, `Some(rev)` = compare mod_revision.
    fn revision_compare(&self, relative: &str, expected_revision: Option<i64>) -> Vec<Compare> {
        let key = self.path.key(relative);
        vec![match expected_revision {
            None => Compare::create_revision(key, CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        }]
    }
}

impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.member
    }

    fn path(&self) -> &ClusterPath {
        &self.path
    }

    async fn load(&self) -> Result<ClusterState, DcsError> {
        read::load_with(&self.conn, &self.path).await
    }

    async fn keepalive(&self) -> Result<LeaseAck, DcsError> {
        if let Some(lease) = self.current_lease() {
            if let Some(ack) = self.renew(lease).await? {
                return Ok(ack);
            }
            tracing::info!(member = %self.member, lease_id = lease.id, "lease expired in etcd; granting a new one");
            self.set_lease(None);
        }
        self.grant().await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        let key = self.path.key(keys::LEADER);
        let compares = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
        self.put_with_lease("acquire leader", compares, key, self.member.clone())
            .await
    }

    async fn adopt_leader_lease(&self) -> Result<Option<LeaseAck>, DcsError> {
        let key = self.path.key(keys::LEADER);
        let response = self
            .conn
            .call("read leader", |mut c| async move { c.get(key, None).await })
            .await
            .map_err(Failure::into_dcs)?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        if kv.value() != self.member.as_bytes() || kv.lease() == 0 {
            return Ok(None);
        }
        let id = kv.lease();
        let ttl_response = self
            .conn
            .call("lease ttl", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await
            .map_err(Failure::into_dcs)?;
        if ttl_response.ttl() <= 0 || ttl_response.granted_ttl() <= 0 {
            return Ok(None);
        }
        let lease = Lease {
            id,
            ttl: Duration::from_secs(ttl_response.granted_ttl().unsigned_abs()),
        };
        match self.renew(lease).await? {
            Some(ack) => {
                self.set_lease(Some(lease));
                tracing::info!(member = %self.member, lease_id = id, "adopted the lease of our leader key");
                Ok(Some(ack))
            }
            None => Ok(None),
        }
    }

    async fn lease_remaining(&self, lease_id: i64) -> Result<Option<Duration>, DcsError> {
        let response = self
            .conn
            .call("lease ttl", |mut c| async move {
                c.lease_time_to_live(lease_id, None).await
            })
            .await
            .map_err(Failure::into_dcs)?;
        Ok((response.ttl() > 0).then(|| Duration::from_secs(response.ttl().unsigned_abs())))
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        let key = self.path.key(keys::LEADER);
        self.delete_if("release leader", self.held_leader(), key)
            .await
    }

    async fn touch_member(&self, doc: &MemberDoc) -> Result<(), DcsError> {
        let key = self.path.member_key(&self.member);
        let value = to_json(&key, doc)?;
        self.put_with_lease("touch member", Vec::new(), key, value)
            .await
            .map(|_| ())
    }

    async fn claim_initialize(&self, value: &str) -> Result<bool, DcsError> {
        let compares = self.revision_compare(keys::INITIALIZE, None);
        self.put_if(
            "claim initialize",
            compares,
            keys::INITIALIZE,
            value.to_string(),
        )
        .await
    }

    async fn set_initialize(&self, expected: &str, value: &str) -> Result<bool, DcsError> {
        let compares = vec![Compare::value(
            self.path.key(keys::INITIALIZE),
            CompareOp::Equal,
            expected,
        )];
        self.put_if(
            "set initialize",
            compares,
            keys::INITIALIZE,
            value.to_string(),
        )
        .await
    }

    async fn cancel_initialize(&self, expected: &str) -> Result<bool, DcsError> {
        let key = self.path.key(keys::INITIALIZE);
        let compares = vec![Compare::value(key.clone(), CompareOp::Equal, expected)];
        self.delete_if("cancel initialize", compares, key).await
    }

    async fn set_config(
        &self,
        value: &serde_json::Value,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let compares = self.revision_compare(keys::CONFIG, expected_revision);
        self.put_if("set config", compares, keys::CONFIG, value.to_string())
            .await
    }

    async fn set_history(&self, history: &[HistoryEntry]) -> Result<bool, DcsError> {
        let value = HistoryEntry::list_to_json(history);
        self.put_if("set history", self.held_leader(), keys::HISTORY, value)
            .await
    }

    async fn set_status(&self, status: &StatusDoc) -> Result<bool, DcsError> {
        let value = to_json(keys::STATUS, status)?;
        self.put_if("set status", self.held_leader(), keys::STATUS, value)
            .await
    }

    async fn set_failsafe(
        &self,
        members: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, DcsError> {
        let value = to_json(keys::FAILSAFE, members)?;
        self.put_if("set failsafe", self.held_leader(), keys::FAILSAFE, value)
            .await
    }

    async fn set_sync(
        &self,
        doc: &SyncDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let compares = self.revision_compare(keys::SYNC, expected_revision);
        self.put_if("set sync", compares, keys::SYNC, to_json(keys::SYNC, doc)?)
            .await
    }

    async fn set_failover(
        &self,
        doc: &FailoverDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        let compares = self.revision_compare(keys::FAILOVER, expected_revision);
        self.put_if(
            "set failover",
            compares,
            keys::FAILOVER,
            to_json(keys::FAILOVER, doc)?,
        )
        .await
    }

    async fn delete_failover(&self) -> Result<(), DcsError> {
        self.delete_if("delete failover", Vec::new(), self.path.key(keys::FAILOVER))
            .await
            .map(|_| ())
    }

    async fn delete_member(&self, name: &str) -> Result<(), DcsError> {
        self.delete_if("delete member", Vec::new(), self.path.member_key(name))
            .await
            .map(|_| ())
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let receiver = self.events.subscribe();
        let mut stop = self.watch_stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() {
            let (tx, rx) = oneshot::channel();
            *stop = Some(tx);
            watch::spawn(
                self.conn.target.clone(),
                self.path.prefix(),
                self.events.clone(),
                rx,
            );
        }
        receiver
    }
}
