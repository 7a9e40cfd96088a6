//! The router's small HTTP API: `GET /metrics` (Prometheus text) and `GET /status` (JSON:
//! the listeners, the leader, the readable and the lagging replicas with their lag and its
//! source, active connections per member and role, whether a handover is in progress) —
//! the pools) — where traffic goes now. `render_status_table` prints the same document
//! for people. With pooling, PgBouncer's admin console as JSON: `GET /pools`, `/clients`,
//! `/servers`, `/stats` (the columns of SHOW POOLS/CLIENTS/SERVERS/STATS), and
//! `POST /pause` / `POST /resume` (`?database=NAME`, every database without it).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::CONTENT_TYPE;
use crate::shared::Shared;

/// Serve the API, and `pages` (the web status page's routes) beside it, until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    pages: axum::Router<Arc<Shared>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/pools", get(pools))
        .route("/clients", get(clients))
        .route("/servers", get(servers))
        .route("/stats", get(stats))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .merge(pages)
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
    let mut listeners = vec![
        json!({"name": "write", "address": shared.write_addr.to_string(), "role": "write"}),
        json!({"name": "read", "address": shared.read_addr.to_string(), "role": "read"}),
    ];
    if let Some(auto) = shared.auto_addr {
        listeners.push(json!({"name": "auto", "address": auto.to_string(), "role": "auto", "read_your_writes_wait_ms": shared.cfg.read_your_writes_wait.as_millis() as u64}));
    }
    json!({
        "scope": shared.cfg.scope,
        "listeners": listeners,
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
        "pooling": shared.pooling.is_some(),
        "pools": pool_rows(shared),
        "paused": shared.pooling.as_ref().map(|p| p.pools.paused()).unwrap_or_default(),
        "reload": shared.reload.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(status_json(&shared))
}

/// `GET /pools`: PgBouncer's SHOW POOLS columns, one object per pool (an empty list when
/// pooling is off).
async fn pools(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(pool_rows(&shared))
}

fn pool_rows(shared: &Shared) -> Value {
    let Some(pooling) = &shared.pooling else {
        return json!([]);
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
                "paused": pooling.pools.is_paused(&row.key.database),
            })
        })
        .collect();
    Value::Array(rows)
}

/// PgBouncer's time format: `2026-12-04 16:39:38 UTC`.
fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `GET /clients`: PgBouncer's SHOW CLIENTS columns, one object per logged-in pooled client
/// (`ptr` is the router's client id, `link` the server connection it holds), plus its
/// `target` and `pool_mode`.
async fn clients(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let Some(pooling) = &shared.pooling else {
        return Json(json!([]));
    };
    let rows: Vec<Value> = pooling
        .clients_now()
        .iter()
        .map(|c| {
            let now = c.now();
            let wait_us = now
                .wait_since
                .map(|w| w.elapsed().as_micros() as u64)
                .unwrap_or(0);
            json!({
                "type": "C",
                "user": c.key.user,
                "database": c.key.database,
                "state": now.state,
                "addr": c.addr.ip().to_string(),
                "port": c.addr.port(),
                "local_addr": c.local.ip().to_string(),
                "local_port": c.local.port(),
                "connect_time": time(c.connect_time),
                "request_time": time(now.request_time()),
                "wait": wait_us / 1_000_000,
                "wait_us": wait_us % 1_000_000,
                "close_needed": 0,
                "ptr": c.id,
                "link": now.server.as_ref().map(|s| s.id),
                "remote_pid": 0,
                "tls": if c.tls { "TLS" } else { "" },
                "application_name": c.application_name.clone().unwrap_or_default(),
                "target": c.key.target,
                "pool_mode": c.mode.label(),
            })
        })
        .collect();
    Json(Value::Array(rows))
}

/// `GET /servers`: PgBouncer's SHOW SERVERS columns, one object per pooled server
/// connection in use (`active`, `link` = the client's id) or idle in its pool (`idle`);
/// `remote_pid` is the PostgreSQL backend's pid, `member` the cluster member.
async fn servers(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let Some(pooling) = &shared.pooling else {
        return Json(json!([]));
    };
    let row = |key: &crate::pool::PoolKey,
               view: &crate::pool::server::ServerView,
               state: &str,
               link: Option<u64>,
               request: chrono::DateTime<chrono::Utc>| {
        json!({
            "type": "S",
            "user": key.user,
            "database": key.database,
            "state": state,
            "addr": view.host,
            "port": view.port,
            "local_addr": view.local.map(|a| a.ip().to_string()),
            "local_port": view.local.map(|a| a.port()),
            "connect_time": time(view.connect_time),
            "request_time": time(request),
            "wait": 0,
            "wait_us": 0,
            "close_needed": 0,
            "ptr": view.id,
            "link": link,
            "remote_pid": view.pid.unwrap_or(0),
            "tls": "",
            "application_name": view.application_name.clone().unwrap_or_default(),
            "member": view.member,
            "target": key.target,
        })
    };
    let mut rows = Vec::new();
    for c in pooling.clients_now() {
        let now = c.now();
        if let Some(view) = &now.server {
            rows.push(row(&c.key, view, "active", Some(c.id), now.request_time()));
        }
    }
    for (key, view, idle_since) in pooling.pools.idle_servers() {
        rows.push(row(&key, &view, "idle", None, idle_since));
    }
    Json(Value::Array(rows))
}

/// `GET /stats`: PgBouncer's SHOW STATS columns, one object per database (the pools'
/// counters summed); times in microseconds; the `avg_*` columns are averages over the
/// router's life (counts and bytes per second, times per transaction / query).
async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let Some(pooling) = &shared.pooling else {
        return Json(json!([]));
    };
    let mut per_db: std::collections::BTreeMap<String, crate::pool::PoolStats> = Default::default();
    for row in pooling.pools.snapshot() {
        let total = per_db.entry(row.key.database.clone()).or_default();
        let s = &row.stats;
        total.xact_count += s.xact_count;
        total.query_count += s.query_count;
        total.bytes_received += s.bytes_received;
        total.bytes_sent += s.bytes_sent;
        total.xact_time_us += s.xact_time_us;
        total.query_time_us += s.query_time_us;
        total.wait_time_us += s.wait_time_us;
        total.server_logins += s.server_logins;
    }
    let secs = pooling.pools.started.elapsed().as_secs_f64().max(1.0);
    let per = |n: u64, d: u64| n.checked_div(d).unwrap_or(0);
    let rows: Vec<Value> = per_db
        .into_iter()
        .map(|(database, s)| {
            json!({
                "database": database,
                "total_xact_count": s.xact_count,
                "total_query_count": s.query_count,
                "total_received": s.bytes_received,
                "total_sent": s.bytes_sent,
                "total_xact_time": s.xact_time_us,
                "total_query_time": s.query_time_us,
                "total_wait_time": s.wait_time_us,
                "avg_xact_count": (s.xact_count as f64 / secs) as u64,
                "avg_query_count": (s.query_count as f64 / secs) as u64,
                "avg_recv": (s.bytes_received as f64 / secs) as u64,
                "avg_sent": (s.bytes_sent as f64 / secs) as u64,
                "avg_xact_time": per(s.xact_time_us, s.xact_count),
                "avg_query_time": per(s.query_time_us, s.query_count),
                "avg_wait_time": per(s.wait_time_us, s.xact_count),
                "server_logins": s.server_logins,
            })
        })
        .collect();
    Json(Value::Array(rows))
}

#[derive(serde::Deserialize)]
struct PauseArgs {
    database: Option<String>,
    /// Seconds to wait for the server connections to be released (default 60).
    timeout: Option<f64>,
}

fn no_pooling() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "pooling is off (no auth: section in router.yml): nothing to pause"})),
    )
        .into_response()
}

/// `POST /pause[?database=NAME][&timeout=SECONDS]`: PgBouncer's PAUSE. Answers 200 once
/// no server connection of the database is open, 202 if some still were after `timeout`
/// (the pause stays: they close when their transaction, or session, ends).
async fn pause(State(shared): State<Arc<Shared>>, Query(args): Query<PauseArgs>) -> Response {
    let Some(pooling) = &shared.pooling else {
        return no_pooling();
    };
    let within =
        std::time::Duration::from_secs_f64(args.timeout.unwrap_or(60.0).clamp(0.0, 3600.0));
    let name = args.database.clone().unwrap_or_else(|| "*".into());
    tracing::info!(database = %name, "pausing (POST /pause)");
    match pooling.pools.pause(args.database.as_deref(), within).await {
        Ok(()) => Json(json!({"paused": name, "server_connections": 0})).into_response(),
        Err(open) => (
            StatusCode::ACCEPTED,
            Json(json!({"paused": name, "server_connections": open,
                "message": format!("paused; {open} server connection(s) still in use close at the end of their transaction (session in session mode)")})),
        )
            .into_response(),
    }
}

/// `POST /resume[?database=NAME]`: PgBouncer's RESUME (every database without a name).
async fn resume(State(shared): State<Arc<Shared>>, Query(args): Query<PauseArgs>) -> Response {
    let Some(pooling) = &shared.pooling else {
        return no_pooling();
    };
    let name = args.database.clone().unwrap_or_else(|| "*".into());
    tracing::info!(database = %name, "resuming (POST /resume)");
    pooling.pools.resume(args.database.as_deref());
    Json(json!({"resumed": name, "paused": pooling.pools.paused()})).into_response()
}
