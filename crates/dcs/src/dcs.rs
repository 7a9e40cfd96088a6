//! The `Dcs` trait: every operation the agent, `ctl` and the router need from the
//! distributed configuration store, independent of whether it is etcd or the in-memory store.

use std::future::Future;
use std::time::Duration;

use crate::error::DcsError;
use crate::model::{
    ClusterPath, ClusterState, FailoverDoc, HistoryEntry, MemberDoc, StatusDoc, SyncDoc,
};

/// Proof that the member's lease is alive: etcd acknowledged a keepalive (or grant) that was
/// SENT at `sent_at`. The lease is therefore alive at least until `sent_at + ttl` (never
/// measure from the reply time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAck {
    /// When the acknowledged request left this process (measured before sending).
    pub sent_at: tokio::time::Instant,
    /// The TTL etcd granted the lease; a keepalive resets the lease to this.
    pub ttl: Duration,
    pub lease_id: i64,
}

impl LeaseAck {
    /// The instant until which the lease is certainly alive in the DCS.
    pub fn safe_until(&self) -> tokio::time::Instant {
        self.sent_at + self.ttl
    }
}

/// The lease TTL in whole seconds that a configured `ttl` asks for: rounded up, at least 2
/// (etcd refuses shorter leases with its default election timeout).
pub fn lease_ttl_secs(ttl: Duration) -> i64 {
    let mut secs = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        secs += 1;
    }
    i64::try_from(secs).unwrap_or(i64::MAX).max(2)
}

/// The cluster state store in Patroni 3's layout. One handle belongs to one member
/// (`member_name`) and owns at most one lease, to which its member key and (when it leads)
/// the leader key are attached.
pub trait Dcs: Send + Sync + 'static {
    fn member_name(&self) -> &str;
    fn path(&self) -> &ClusterPath;
    /// One consistent read of the whole prefix (a single range request).
    fn load(&self) -> impl Future<Output = Result<ClusterState, DcsError>> + Send;
    /// Keep this member's lease alive; grants a fresh lease when there is none or etcd says
    /// it expired (TTL<=0 / not found).
    fn keepalive(&self) -> impl Future<Output = Result<LeaseAck, DcsError>> + Send;
    /// Take `leader` iff absent (txn compare create_revision == 0), value = member name,
    /// attached to our current lease (keepalive first if there is none). Ok(true) iff we took it.
    fn acquire_leader(&self) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// At agent start: if `leader` holds our name, adopt the lease it is attached to as our
    /// own lease (so a restarted agent keeps leadership) and return Ok(Some(ack)) after a
    /// successful keepalive of it; else Ok(None).
    fn adopt_leader_lease(&self)
        -> impl Future<Output = Result<Option<LeaseAck>, DcsError>> + Send;
    /// How long the DCS says our lease `lease_id` still lives (etcd's LeaseTimeToLive, whole
    /// seconds); Ok(None) when it is gone. A read: it does not extend the lease.
    fn lease_remaining(
        &self,
        lease_id: i64,
    ) -> impl Future<Output = Result<Option<Duration>, DcsError>> + Send;
    /// Delete `leader` iff its value is our name (txn compare value). Ok(true) iff deleted.
    fn release_leader(&self) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Put `members/<name>` (JSON of MemberDoc) attached to our lease.
    fn touch_member(&self, doc: &MemberDoc) -> impl Future<Output = Result<(), DcsError>> + Send;
    /// Create `initialize` iff absent. Ok(true) iff created by this call.
    fn claim_initialize(&self, value: &str) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Replace `initialize` iff it currently equals `expected`. Ok(true) iff replaced.
    fn set_initialize(
        &self,
        expected: &str,
        value: &str,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Delete `initialize` iff it equals `expected` (a failed bootstrap gives the race back).
    fn cancel_initialize(
        &self,
        expected: &str,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Write `config`: expected_revision None = create iff absent, Some(rev) = compare
    /// mod_revision. Ok(true) iff written.
    fn set_config(
        &self,
        value: &serde_json::Value,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Write `history` — only while this member holds the leader key (false: nothing
    /// written), so that a former leader's late write cannot drop its successor's entry (the
    /// timelines the cluster used decide which one a promotion takes: `ReserveTimelines`).
    fn set_history(
        &self,
        history: &[HistoryEntry],
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Write the leader's `status` (position, slots, WAL kept) — only while this member holds
    /// the leader key (false: nothing written), so that a former leader's late write cannot
    /// leave its own, possibly higher, position as the cluster's reference for the next
    /// election's lag check.
    fn set_status(&self, status: &StatusDoc)
        -> impl Future<Output = Result<bool, DcsError>> + Send;
    fn set_sync(
        &self,
        doc: &SyncDoc,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    fn set_failover(
        &self,
        doc: &FailoverDoc,
        expected_revision: Option<i64>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    fn delete_failover(&self) -> impl Future<Output = Result<(), DcsError>> + Send;
    /// Write `failsafe` (no lease): the failsafe topology, member name → `api_url` — only
    /// while this member holds the leader key (false: it does not, nothing written). A
    /// leader's write that arrives late, after another member took the key, must not
    /// replace the new leader's topology: members outside it may not race.
    fn set_failsafe(
        &self,
        members: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;
    /// Delete `members/<name>` of another member (the leader cleans up members that left) —
    /// only used by ctl/remove.
    fn delete_member(&self, name: &str) -> impl Future<Output = Result<(), DcsError>> + Send;
    /// Notified (value = etcd revision or a counter) on every change of any key under the
    /// prefix, within milliseconds. The watch reconnects by itself after etcd comes back.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Serialise a document we write ourselves; our model types always serialise.
pub(crate) fn to_json<T: serde::Serialize>(key: &str, doc: &T) -> Result<String, DcsError> {
    serde_json::to_string(doc).map_err(|e| DcsError::Rejected {
        message: format!("cannot serialise the value for {key}: {e}"),
    })
}
