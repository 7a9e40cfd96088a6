//! The snapshot of one agent that the REST API serves.
//!
//! The agent loop publishes a fresh `NodeStatus` after every cycle (through a
//! `tokio::sync::watch` channel); handlers only read it, so an HTTP request never waits
//! on PostgreSQL or etcd and never changes what the agent decides.

use std::collections::BTreeMap;

use pgbaton_dcs::ClusterState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What PostgreSQL on this member is, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgRole {
    Primary,
    Replica,
    /// Not running, or not known.
    Unknown,
}

/// One row of `pg_stat_replication` as the leader sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationRow {
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    /// Bytes between the leader's current WAL position and what this standby replayed.
    pub replay_lag_bytes: Option<u64>,
}

/// A replication slot on this member with the WAL it retains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotRow {
    pub slot_name: String,
    pub slot_type: String,
    pub active: bool,
    pub restart_lsn: Option<u64>,
    pub retained_wal_bytes: Option<u64>,
    /// pg_replication_slots' `wal_status`: reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    /// pg_replication_slots' `safe_wal_size` (bytes; none when unlimited or lost).
    pub safe_wal_size: Option<i64>,
}

/// The leader's declared publications and subscriptions (`logical:`), as its last round
/// found them: `logical` in `GET /patroni`, `ctl logical`, and the `pgbaton_logical_*`
/// metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogicalStatus {
    pub publications: Vec<PublicationRow>,
    pub subscriptions: Vec<SubscriptionRow>,
    /// What would break replication, each with the SQL that fixes it (`ctl logical check`).
    pub problems: Vec<LogicalProblem>,
    /// Unix seconds of the round.
    pub checked_at: u64,
}

/// A declared publication on this (publishing) member, with the logical slots of its
/// database that use `pgoutput` (its subscribers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicationRow {
    pub name: String,
    pub database: String,
    /// present, or why it is not ("cannot create: ...").
    pub state: String,
    pub subscribers: Vec<SubscriberSlotRow>,
}

/// A subscriber's slot on the publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberSlotRow {
    pub slot: String,
    pub active: bool,
    /// WAL the subscriber has not confirmed yet (bytes).
    pub lag_bytes: Option<u64>,
    /// The walsender's replay_lag: how long ago the subscriber applied what it confirmed last.
    pub lag_seconds: Option<f64>,
    /// The slot is in `slots:` of the dynamic configuration, so it survives a failover here.
    pub permanent: bool,
}

/// A declared subscription on this (subscribing) member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRow {
    pub name: String,
    pub database: String,
    /// streaming, syncing (tables still copying), disabled, stopped (enabled, no apply
    /// worker), error, missing (it could not be created), or unknown (the database could not
    /// be read).
    pub state: String,
    pub enabled: bool,
    /// Tables whose initial copy has not finished.
    pub tables_syncing: i64,
    /// Bytes received from the publisher that are not yet confirmed back to it.
    pub lag_bytes: Option<u64>,
    /// Seconds since the last message from the publisher.
    pub lag_seconds: Option<f64>,
    pub apply_error_count: i64,
    pub sync_error_count: i64,
    /// The last error of its workers (from the PostgreSQL log) or of its creation.
    pub last_error: Option<String>,
}

/// A check that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalProblem {
    /// The publication or subscription concerned.
    pub object: String,
    /// The table, sequence or slot concerned.
    pub target: String,
    pub problem: String,
    /// The SQL (or command) that fixes it.
    pub fix: String,
}

/// Everything the REST API needs to answer about this member.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub scope: String,
    pub name: String,
    /// Patroni's member `state` word: running, starting, stopped, crashed, creating replica, ...
    pub state: String,
    pub pg_running: bool,
    pub pg_role: PgRole,
    /// True only when PostgreSQL runs as primary, accepts writes, and this member holds an
    /// unexpired leader lease: the condition for `GET /primary` 200.
    pub writable_leader: bool,
    /// This member's name is in the DCS `leader` key (whatever PostgreSQL does).
    pub holds_leader_key: bool,
    /// Leader of a standby cluster: holds the leader key, runs as a replica of the remote
    /// primary (`GET /standby-leader` 200, role `standby_leader`).
    pub standby_leader: bool,
    pub server_version: Option<u32>,
    pub timeline: Option<u32>,
    pub postmaster_start_time: Option<String>,
    /// Primary: current write LSN.
    pub wal_position: Option<u64>,
    pub received_location: Option<u64>,
    pub replayed_location: Option<u64>,
    pub replayed_timestamp: Option<String>,
    pub replay_paused: bool,
    /// `streaming` when the WAL receiver streams.
    pub replication_state: Option<String>,
    pub replication: Vec<ReplicationRow>,
    pub slots: Vec<SlotRow>,
    pub system_identifier: Option<String>,
    /// Unix seconds of the last successful DCS read.
    pub dcs_last_seen: Option<u64>,
    /// DCS failsafe mode is in force here: a leader keeping its primary on the members'
    /// acknowledgements, or a member that promised a failsafe leader (`POST /failsafe`)
    /// within the last ttl.
    pub failsafe_active: bool,
    /// `watchdog.mode` is required and the device is not usable: this member will not lead
    /// (Patroni's `watchdog_failed` in `GET /patroni`).
    pub watchdog_failed: bool,
    /// `pgbackrest:` configured and this member has led: its last stanza check,
    /// `{"stanza", "check": "running"|"ok"|"failed", "error"}` (a pgbaton extension of
    /// `GET /patroni`).
    pub pgbackrest: Option<Value>,
    /// Leader with `logical:` declared: the publications and subscriptions as its last round
    /// found them (a pgbaton extension of `GET /patroni`).
    pub logical: Option<LogicalStatus>,
    /// Unix milliseconds at the end of the last completed HA cycle (for `/liveness`).
    pub last_cycle_unix_ms: u64,
    /// The HA loop's ttl in milliseconds (`/liveness` uses ttl for a primary, 2×ttl for a replica).
    pub ttl_ms: u64,
    pub tags: BTreeMap<String, Value>,
    pub pending_restart: bool,
    /// A scheduled restart: `{"schedule": RFC 3339, ...}` as Patroni shows it.
    pub scheduled_restart: Option<Value>,
    pub paused: bool,
    /// The last decision's reason, in plain words.
    pub last_decision: String,
    /// Leader changes this agent has observed since it started (metric).
    pub leader_changes: u64,
    /// The latest view of the cluster from the DCS (members, leader, history, config).
    pub cluster: Option<ClusterState>,
    /// This cycle's DCS read found no leader key, and was made before PostgreSQL's positions
    /// were read: a former leader's primary stopped before its key went, so the positions
    /// are final until a new leader is chosen (`pgbaton_no_leader_seen` in `GET /patroni`;
    /// a quorum candidate compares only such positions).
    pub no_leader_seen: bool,
    /// When PostgreSQL was asked for the positions above (they were read after it): `GET
    /// /patroni` shows how long before the answer as `pgbaton_position_age_ms`, so that a
    /// quorum candidate can tell a position read after it found the leader key gone.
    pub positions_read_at: Option<tokio::time::Instant>,
    pub version: String,
}

impl NodeStatus {
    /// An empty status for a member that has not completed a cycle yet.
    pub fn starting(scope: &str, name: &str, ttl_ms: u64) -> Self {
        NodeStatus {
            scope: scope.to_string(),
            name: name.to_string(),
            state: "starting".to_string(),
            pg_running: false,
            pg_role: PgRole::Unknown,
            writable_leader: false,
            holds_leader_key: false,
            standby_leader: false,
            server_version: None,
            timeline: None,
            postmaster_start_time: None,
            wal_position: None,
            received_location: None,
            replayed_location: None,
            replayed_timestamp: None,
            replay_paused: false,
            replication_state: None,
            replication: Vec::new(),
            slots: Vec::new(),
            system_identifier: None,
            dcs_last_seen: None,
            failsafe_active: false,
            watchdog_failed: false,
            pgbackrest: None,
            logical: None,
            last_cycle_unix_ms: 0,
            ttl_ms,
            tags: BTreeMap::new(),
            pending_restart: false,
            scheduled_restart: None,
            paused: false,
            last_decision: String::new(),
            leader_changes: 0,
            cluster: None,
            no_leader_seen: false,
            positions_read_at: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
