//! The cluster state as it is stored in the DCS, in Patroni 3's key layout and JSON shapes.
//!
//! Every key lives under `/<namespace>/<scope>/` (namespace `/service/` by default):
//! `leader`, `members/<name>`, `initialize`, `config`, `history`, `status`, `sync`, `failover`,
//! and pgbaton's own `routers/<name>` (each router of the cluster, attached to its lease;
//! Patroni ignores the key).
//! These types are what the agent writes and what `ctl`, the REST API and the router read,
//! so that tools written for Patroni can read a pgbaton cluster and the other way round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key names under the cluster prefix (Patroni 3 layout).
pub mod keys {
    pub const LEADER: &str = "leader";
    pub const MEMBERS: &str = "members/";
    pub const INITIALIZE: &str = "initialize";
    pub const CONFIG: &str = "config";
    pub const HISTORY: &str = "history";
    pub const STATUS: &str = "status";
    pub const SYNC: &str = "sync";
    pub const FAILOVER: &str = "failover";
    pub const FAILSAFE: &str = "failsafe";
    /// pgbaton's addition: `routers/<name>`, one per router serving the cluster.
    pub const ROUTERS: &str = "routers/";
    /// pgbaton's addition: `move`, an online move of the cluster's clients to another
    /// cluster (`ctl move`).
    pub const MOVE: &str = "move";
}

/// Where a cluster lives in the DCS: `/<namespace>/<scope>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPath {
    /// Patroni's `namespace`, normalised to start and end with `/` (default `/service/`).
    pub namespace: String,
    /// Patroni's `scope`: the cluster name.
    pub scope: String,
}

impl ClusterPath {
    pub fn new(namespace: &str, scope: &str) -> Self {
        let trimmed = namespace.trim_matches('/');
        let namespace = if trimmed.is_empty() {
            "/".to_string()
        } else {
            format!("/{trimmed}/")
        };
        ClusterPath {
            namespace,
            scope: scope.to_string(),
        }
    }

    /// The prefix every key of this cluster starts with, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("{}{}/", self.namespace, self.scope)
    }

    /// The full key for a name relative to the cluster prefix (e.g. `leader`, `members/node1`).
    pub fn key(&self, relative: &str) -> String {
        format!("{}{}", self.prefix(), relative)
    }

    pub fn router_key(&self, router: &str) -> String {
        self.key(&format!("{}{router}", keys::ROUTERS))
    }

    pub fn member_key(&self, member: &str) -> String {
        self.key(&format!("{}{member}", keys::MEMBERS))
    }
}

/// `members/<name>`: what a member publishes about itself, attached to its lease.
///
/// Field names and meanings follow Patroni 3.0; fields pgbaton adds are optional so that
/// Patroni's tools ignore them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberDoc {
    /// `postgres://host:port/postgres`
    pub conn_url: String,
    /// `http://host:port/patroni`
    pub api_url: String,
    /// running, starting, stopped, crashed, creating replica, running custom bootstrap script,
    /// stopping, restarting, rewinding, ... (Patroni's words).
    pub state: String,
    /// `master` for the leader (what Patroni 3.0 writes), `replica` otherwise.
    pub role: String,
    /// The agent version.
    #[serde(default)]
    pub version: String,
    /// Primary: current WAL write position; replica: the larger of received and replayed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xlog_location: Option<u64>,
    /// Replica: last WAL position received from the upstream (pgbaton addition; Patroni 4 too).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receive_lsn: Option<u64>,
    /// Replica: last WAL position replayed (pgbaton addition; Patroni 4 too).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replay_lsn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeline: Option<u32>,
    /// `streaming` when a replica's WAL receiver is streaming (Patroni 3.0.4+ key).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replication_state: Option<String>,
    /// Only present when a tag is set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub tags: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending_restart: Option<bool>,
    /// Keys we do not know are kept so that a read-modify-write never loses them.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl MemberDoc {
    /// Host and port parsed out of `conn_url` (`postgres://host:port/db`).
    pub fn host_port(&self) -> Option<(String, u16)> {
        let rest = self.conn_url.split("://").nth(1)?;
        let rest = rest.rsplit('@').next()?;
        let hostport = rest.split('/').next()?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 5432),
        };
        Some((host, port))
    }

    /// True when the member carries the tag with a truthy value (`true`, `"true"`, 1).
    /// Tagged `nofailover`, or `failover_priority: 0` (Patroni 3.1): never promoted.
    pub fn never_promote(&self) -> bool {
        let zero_priority = match self.tags.get("failover_priority") {
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.trim() == "0",
            _ => false,
        };
        self.tag_true("nofailover") || zero_priority
    }

    /// The member requires a watchdog and has none usable (`watchdog_failed`, a pgbaton
    /// addition; Patroni shows it in `GET /patroni`): it will not lead.
    pub fn watchdog_failed(&self) -> bool {
        self.extra.get("watchdog_failed") == Some(&Value::Bool(true))
    }

    pub fn tag_true(&self, tag: &str) -> bool {
        match self.tags.get(tag) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
            }
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
            _ => false,
        }
    }

    /// PostgreSQL runs there (state `running`).
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    pub fn is_primary_role(&self) -> bool {
        matches!(self.role.as_str(), "master" | "primary" | "leader")
    }

    /// Role `standby_leader`: the leader of a standby cluster (a replica of a remote primary).
    pub fn is_standby_leader_role(&self) -> bool {
        self.role == "standby_leader"
    }
}

/// The `leader` key: the member name, attached to the leader's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: String,
    /// The etcd lease the key is attached to (0 when none).
    pub lease_id: i64,
    pub mod_revision: i64,
}

/// One row of the `history` key: `[timeline, lsn, reason, iso_timestamp, new_leader]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub timeline: u32,
    pub lsn: u64,
    pub reason: String,
    pub timestamp: Option<String>,
    pub new_leader: Option<String>,
}

impl HistoryEntry {
    pub fn to_json(&self) -> Value {
        let mut row = vec![
            Value::from(self.timeline),
            Value::from(self.lsn),
            Value::from(self.reason.clone()),
        ];
        if let Some(ts) = &self.timestamp {
            row.push(Value::from(ts.clone()));
            if let Some(l) = &self.new_leader {
                row.push(Value::from(l.clone()));
            }
        }
        Value::Array(row)
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let a = v.as_array()?;
        Some(HistoryEntry {
            timeline: a.first()?.as_u64()? as u32,
            lsn: a.get(1)?.as_u64()?,
            reason: a.get(2).and_then(|r| r.as_str()).unwrap_or("").to_string(),
            timestamp: a.get(3).and_then(|t| t.as_str()).map(str::to_string),
            new_leader: a.get(4).and_then(|t| t.as_str()).map(str::to_string),
        })
    }

    /// Parse the whole `history` value; rows that do not parse are skipped.
    pub fn parse_list(text: &str) -> Vec<HistoryEntry> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(rows)) => rows.iter().filter_map(HistoryEntry::from_json).collect(),
            _ => Vec::new(),
        }
    }

    pub fn list_to_json(list: &[HistoryEntry]) -> String {
        Value::Array(list.iter().map(HistoryEntry::to_json).collect()).to_string()
    }
}

/// `status`: `{"optime": <leader LSN>, "slots": {...}}` written by the leader.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub optime: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub slots: BTreeMap<String, u64>,
    /// pgbaton's addition: where the oldest WAL segment in the leader's `pg_wal` starts (WAL
    /// before it is gone from the leader). Patroni ignores it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oldest_wal_lsn: Option<u64>,
    /// pgbaton's addition: the leader's physical slots as PostgreSQL judges them
    /// (pg_replication_slots' `wal_status` and `safe_wal_size`). Patroni ignores it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub slots_wal: BTreeMap<String, SlotWal>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A slot's WAL state in pg_replication_slots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWal {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in danger of being lost
    /// (none when `max_slot_wal_keep_size` is -1, or the slot is lost).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub safe_wal_size: Option<i64>,
}

/// `sync`: `{"leader": "node1", "sync_standby": "node2,node3"}` (+ `quorum`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncDoc {
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub sync_standby: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quorum: Option<u32>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl SyncDoc {
    pub fn members(&self) -> Vec<String> {
        self.sync_standby
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// `failover`: a pending switchover or failover request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverDoc {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scheduled_at: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `routers/<name>` (pgbaton's addition, attached to the router's own lease): a router that
/// serves the cluster's clients. While a planned switchover is pending it pauses the write
/// traffic at transaction boundaries and then acknowledges the `failover` key's revision in
/// `paused_for`; the leader stops PostgreSQL once every registered router has acknowledged
/// (or `switchover_drain_timeout` has passed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterDoc {
    /// The `failover` key's mod_revision whose switchover this router has paused for (its
    /// write traffic waits, its write server connections are drained).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub paused_for: Option<i64>,
    /// The router's version.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub version: String,
    /// Where the router listens for writes (informational).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub write_listen: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `move`: the cluster's routers hold write traffic for a move to the cluster `to`
/// (`Holding`: they acknowledge as for a switchover, with this key's revision), then route
/// to `to` (`Moved`), following its leader and replicas from its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveDoc {
    /// The scope of the cluster the clients move to (under the same namespace).
    pub to: String,
    pub state: MoveState,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveState {
    Holding,
    Moved,
}

/// A value read from the DCS together with the revision needed for a compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// One consistent read of the whole cluster prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// `initialize`: the system identifier ("" while the winner of the race is still running initdb).
    pub initialize: Option<String>,
    pub leader: Option<LeaderKey>,
    pub members: BTreeMap<String, MemberDoc>,
    /// `config`: the dynamic configuration as raw JSON (parsed by the config crate).
    pub config: Option<Versioned<Value>>,
    pub history: Vec<HistoryEntry>,
    pub status: Option<StatusDoc>,
    pub sync: Option<Versioned<SyncDoc>>,
    pub failover: Option<Versioned<FailoverDoc>>,
    /// `failsafe`: the failsafe topology the leader wrote, member name → `api_url`.
    pub failsafe: Option<BTreeMap<String, String>>,
    /// `routers/<name>`: the routers registered for the cluster (keys that do not parse are
    /// kept as a router that has acknowledged nothing).
    pub routers: BTreeMap<String, RouterDoc>,
    /// `move`: a move of the cluster's clients to another cluster (unreadable: absent).
    pub moving: Option<Versioned<MoveDoc>>,
    /// The etcd revision at which this snapshot was read.
    pub revision: i64,
}

impl ClusterState {
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }

    pub fn leader_member(&self) -> Option<&MemberDoc> {
        self.leader_name().and_then(|n| self.members.get(n))
    }

    /// The freshest leader position known from the DCS: the `status` optime or the leader's
    /// member document, whichever is larger.
    /// The `config` key declares a standby cluster (`standby_cluster`).
    pub fn is_standby_cluster(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.value.get("standby_cluster"))
            .is_some_and(|v| !v.is_null())
    }

    /// Whether the member `name`, holding the leader key, is a standby leader: its document
    /// says so, or (just after it took the key, before it published) the cluster is a standby
    /// cluster and it does not run a primary.
    pub fn leads_as_standby(&self, name: &str, doc: &MemberDoc) -> bool {
        self.leader_name() == Some(name)
            && (doc.is_standby_leader_role()
                || (self.is_standby_cluster() && !doc.is_primary_role()))
    }

    pub fn leader_optime(&self) -> Option<u64> {
        let from_status = self.status.as_ref().and_then(|s| s.optime);
        let from_member = self.leader_member().and_then(|m| m.xlog_location);
        from_status.max(from_member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_doc_round_trips_patroni_json() {
        let text = r#"{"conn_url":"postgres://127.0.0.1:5441/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67404768,"timeline":3}"#;
        let doc: MemberDoc = serde_json::from_str(text).unwrap();
        assert_eq!(doc.host_port(), Some(("127.0.0.1".to_string(), 5441)));
        assert!(doc.is_primary_role());
        assert_eq!(doc.xlog_location, Some(67404768));
        let back: Value = serde_json::to_value(&doc).unwrap();
        let orig: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn history_parses_patroni_rows() {
        let text = r#"[[1,67271592,"no recovery target specified","2026-11-26T14:50:25.970867+00:00","node2"],[2,67404312,"no recovery target specified"]]"#;
        let list = HistoryEntry::parse_list(text);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].new_leader.as_deref(), Some("node2"));
        assert_eq!(list[1].timestamp, None);
        let again = HistoryEntry::parse_list(&HistoryEntry::list_to_json(&list));
        assert_eq!(again, list);
    }

    #[test]
    fn cluster_path_normalises_namespace() {
        assert_eq!(ClusterPath::new("service", "c").prefix(), "/service/c/");
        assert_eq!(
            ClusterPath::new("/service/", "c").member_key("n1"),
            "/service/c/members/n1"
        );
    }
}
