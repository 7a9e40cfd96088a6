//! The JSON bodies of the read endpoints, in Patroni 3.0's shapes: `/patroni` (also the
//! body of every health check), `/cluster`, `/history` and `/config`. Keys whose value is
//! unknown are left out rather than written as `null`.

use pgbaton_dcs::{ClusterState, HistoryEntry};
use serde_json::{json, Map, Value};

use crate::checks::{is_sync_standby, tag_true};
use crate::status::{NodeStatus, PgRole};

/// `GET /patroni`: this member's PostgreSQL and agent status.
pub fn patroni_json(status: &NodeStatus) -> Value {
    let mut body = Map::new();
    body.insert("state".into(), json!(status.state));
    insert_some(
        &mut body,
        "postmaster_start_time",
        status.postmaster_start_time.clone(),
    );
    // Patroni 3.0 says "master"; pgbaton's own word is in `pgbaton_role`.
    let role = if status.pg_role == PgRole::Primary {
        "master"
    } else if status.standby_leader {
        "standby_leader"
    } else {
        "replica"
    };
    body.insert("role".into(), json!(role));
    body.insert("pgbaton_role".into(), json!(status.pg_role));
    insert_some(&mut body, "server_version", status.server_version);
    if let Some(xlog) = xlog(status) {
        body.insert("xlog".into(), xlog);
    }
    insert_some(&mut body, "timeline", status.timeline);
    if !status.replication.is_empty() {
        let rows: Vec<Value> = status
            .replication
            .iter()
            .map(|r| {
                let mut row = Map::new();
                row.insert("usename".into(), json!(r.usename));
                row.insert("application_name".into(), json!(r.application_name));
                insert_some(&mut row, "client_addr", r.client_addr.clone());
                row.insert("state".into(), json!(r.state));
                row.insert("sync_state".into(), json!(r.sync_state));
                row.insert("sync_priority".into(), json!(r.sync_priority));
                Value::Object(row)
            })
            .collect();
        body.insert("replication".into(), Value::Array(rows));
    }
    if status.cluster.as_ref().is_some_and(|c| c.leader.is_none()) {
        body.insert("cluster_unlocked".into(), json!(true));
    }
    if status.failsafe_active {
        body.insert("failsafe_mode_is_active".into(), json!(true));
    }
    insert_some(&mut body, "dcs_last_seen", status.dcs_last_seen);
    insert_some(
        &mut body,
        "database_system_identifier",
        status.system_identifier.clone(),
    );
    body.insert(
        "patroni".into(),
        json!({"version": status.version, "scope": status.scope, "name": status.name}),
    );
    if !status.tags.is_empty() {
        body.insert("tags".into(), json!(status.tags));
    }
    if status.pending_restart {
        body.insert("pending_restart".into(), json!(true));
    }
    if !status.slots.is_empty() {
        // pgbaton's addition: the replication slots on this member and the WAL they keep.
        let slots: Vec<Value> = status
            .slots
            .iter()
            .map(|s| {
                json!({"name": s.slot_name, "type": s.slot_type, "active": s.active,
                       "restart_lsn": s.restart_lsn, "retained_wal_bytes": s.retained_wal_bytes,
                       "wal_status": s.wal_status, "safe_wal_size": s.safe_wal_size})
            })
            .collect();
        body.insert("replication_slots".into(), Value::Array(slots));
    }
    if let Some(scheduled) = &status.scheduled_restart {
        body.insert("scheduled_restart".into(), scheduled.clone());
    }
    if status.paused {
        body.insert("pause".into(), json!(true));
    }
    if status.watchdog_failed {
        body.insert("watchdog_failed".into(), json!(true));
    }
    if status.no_leader_seen {
        body.insert("pgbaton_no_leader_seen".into(), json!(true));
    }
    if let Some(at) = status.positions_read_at {
        // Rounded up: a bound on the position's age, never less than it.
        let age_ms = at.elapsed().as_micros().div_ceil(1000) as u64;
        body.insert("pgbaton_position_age_ms".into(), json!(age_ms));
    }
    if let Some(pgbackrest) = &status.pgbackrest {
        body.insert("pgbackrest".into(), pgbackrest.clone());
    }
    if let Some(logical) = &status.logical {
        body.insert("logical".into(), json!(logical));
    }
    if is_sync_standby(status) {
        body.insert("sync_standby".into(), json!(true));
    }
    Value::Object(body)
}

fn xlog(status: &NodeStatus) -> Option<Value> {
    let mut xlog = Map::new();
    match status.pg_role {
        PgRole::Primary => insert_some(&mut xlog, "location", status.wal_position),
        PgRole::Replica => {
            insert_some(
                &mut xlog,
                "received_location",
                status.received_location.or(status.replayed_location),
            );
            insert_some(&mut xlog, "replayed_location", status.replayed_location);
            insert_some(
                &mut xlog,
                "replayed_timestamp",
                status.replayed_timestamp.clone(),
            );
            xlog.insert("paused".into(), json!(status.replay_paused));
        }
        PgRole::Unknown => {}
    }
    (!xlog.is_empty()).then_some(Value::Object(xlog))
}

/// `GET /cluster`: every member as the DCS shows it, sorted by name.
pub fn cluster_json(status: &NodeStatus) -> Value {
    let mut body = Map::new();
    let Some(cluster) = &status.cluster else {
        body.insert("members".into(), json!([]));
        body.insert("scope".into(), json!(status.scope));
        return Value::Object(body);
    };
    let leader = cluster.leader_name();
    let sync = cluster
        .sync
        .as_ref()
        .map(|s| s.value.members())
        .unwrap_or_default();
    let leader_optime = cluster.leader_optime();
    let members: Vec<Value> = cluster
        .members
        .iter()
        .map(|(name, doc)| {
            let is_leader = Some(name.as_str()) == leader;
            let role = if cluster.leads_as_standby(name, doc) {
                "standby_leader"
            } else if is_leader {
                "leader"
            } else if sync.contains(name) {
                "sync_standby"
            } else {
                "replica"
            };
            let mut member = Map::new();
            member.insert("name".into(), json!(name));
            member.insert("role".into(), json!(role));
            member.insert("state".into(), json!(doc.state));
            member.insert("api_url".into(), json!(doc.api_url));
            if let Some((host, port)) = doc.host_port() {
                member.insert("host".into(), json!(host));
                member.insert("port".into(), json!(port));
            }
            insert_some(&mut member, "timeline", doc.timeline);
            if !is_leader {
                let lag = match (leader_optime, doc.xlog_location) {
                    (Some(leader), Some(own)) => json!(leader.saturating_sub(own)),
                    _ => json!("unknown"),
                };
                member.insert("lag".into(), lag);
            }
            if !doc.tags.is_empty() {
                member.insert("tags".into(), json!(doc.tags));
            }
            if doc.pending_restart == Some(true) {
                member.insert("pending_restart".into(), json!(true));
            }
            Value::Object(member)
        })
        .collect();
    body.insert("members".into(), Value::Array(members));
    body.insert("scope".into(), json!(status.scope));
    if config_paused(cluster) {
        body.insert("pause".into(), json!(true));
    }
    if let Some(failover) = &cluster.failover {
        if let Some(at) = &failover.value.scheduled_at {
            let mut scheduled = Map::new();
            scheduled.insert("at".into(), json!(at));
            insert_some(&mut scheduled, "from", failover.value.leader.clone());
            insert_some(&mut scheduled, "to", failover.value.member.clone());
            body.insert("scheduled_switchover".into(), Value::Object(scheduled));
        }
    }
    Value::Object(body)
}

/// `GET /history`: the `history` key's rows, `[timeline, lsn, reason, timestamp, new_leader]`.
pub fn history_json(status: &NodeStatus) -> Value {
    let rows = status
        .cluster
        .as_ref()
        .map(|c| c.history.as_slice())
        .unwrap_or(&[]);
    Value::Array(rows.iter().map(HistoryEntry::to_json).collect())
}

/// `GET /config`: the dynamic configuration from the DCS, `{}` before there is one.
pub fn config_json(status: &NodeStatus) -> Value {
    status
        .cluster
        .as_ref()
        .and_then(|c| c.config.as_ref())
        .map(|c| c.value.clone())
        .unwrap_or_else(|| json!({}))
}

fn config_paused(cluster: &ClusterState) -> bool {
    tag_true(cluster.config.as_ref().and_then(|c| c.value.get("pause")))
}

fn insert_some<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_string(), value.into());
    }
}
