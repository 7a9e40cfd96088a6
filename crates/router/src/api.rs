//! The router's small HTTP API: `GET /metrics` (Prometheus text) and `GET /status` (JSON:
//! the listeners, the leader, the readable and the lagging replicas with their lag and its
//! source, active connections per member and role, whether a handover is in progress) —
//! where traffic goes now. `render_status_table` prints the same document for people.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::CONTENT_TYPE;
use crate::shared::Shared;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/pools", get(pools))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// The `/status` document.
pub(crate) fn status_json(shared: &Shared) -> Value {
    let topology = shared.topology.borrow().clone();
    let active: Vec<Value> = shared
        .active
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(
            |((member, role), count)| json!({"member": member, "role": role, "connections": count}),
        )
        .collect();
    let waiting = shared.waiting.load(Ordering::Relaxed);
    let no_leader = topology.leader.is_none();
    let databases: serde_json::Map<String, Value> = shared
        .cfg
        .databases
        .iter()
        .map(|(alias, entry)| {
            let target = entry.target.map(|t| t.label());
            (
                alias.clone(),
                json!({"dbname": entry.dbname, "target": target}),
            )
        })
        .collect();
    json!({
        "scope": shared.cfg.scope,
        "listeners": [
            {"name": "write", "address": shared.write_addr.to_string(), "role": "write"},
            {"name": "read", "address": shared.read_addr.to_string(), "role": "read"},
        ],
        "leader": topology.leader,
        "replicas": topology.replicas,
        "lagging": topology.lagging,
        "leader_position": topology.leader_position,
        "max_lag_bytes": shared.cfg.max_lag_bytes,
        "max_replay_delay_ms": shared.cfg.max_replay_delay.map(|d| d.as_millis() as u64),
        "read_fallback": match shared.cfg.read_fallback {
            crate::config::ReadFallback::Leader => "leader",
            crate::config::ReadFallback::Refuse => "refuse",
        },
        "lag_source": shared.cfg.lag_source.label(),
        "tls": shared.cfg.tls.label(),
        "forwarding": if shared.offload.is_some() { "kernel" } else { "userspace" },
        "databases": databases,
        "handover": {
            "in_progress": no_leader || topology.failover_pending || waiting > 0,
            "no_leader": no_leader,
            "failover_pending": topology.failover_pending,
            "waiting_connections": waiting,
        },
        "revision": topology.revision,
        "active_connections": active,
    })
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(status_json(&shared))
}

/// `GET /pools`: PgBouncer's SHOW POOLS columns, one object per pool (an empty list when
/// pooling is off).
async fn pools(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let Some(pooling) = &shared.pooling else {
        return Json(json!([]));
    };
    let rows: Vec<Value> = pooling
        .pools
        .snapshot()
        .into_iter()
        .map(|row| {
            json!({
                "database": row.key.database,
                "user": row.key.user,
                "target": row.key.target,
                "cl_active": row.cl_active,
                "cl_waiting": row.cl_waiting,
                "cl_idle": row.cl_idle,
                "sv_active": row.sv_active,
                "sv_idle": row.sv_idle,
                "maxwait": row.maxwait_us / 1_000_000,
                "maxwait_us": row.maxwait_us % 1_000_000,
                "pool_size": row.size,
                "pool_mode": row.mode.label(),
                "total_xact_count": row.stats.xact_count,
                "total_query_count": row.stats.query_count,
                "total_received": row.stats.bytes_received,
                "total_sent": row.stats.bytes_sent,
                "total_wait_time": row.stats.wait_time_us,
                "server_logins": row.stats.server_logins,
            })
        })
        .collect();
    Json(Value::Array(rows))
}
