//! The router's small HTTP API: `GET /metrics` (Prometheus text) and `GET /status` (JSON:
//! the leader, the readable replicas with their lag, active connections per member and role)
//! — where traffic goes now.

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
    json!({
        "scope": shared.cfg.scope,
        "leader": topology.leader,
        "replicas": topology.replicas,
        "leader_position": topology.leader_position,
        "max_lag_bytes": shared.cfg.max_lag_bytes,
        "revision": topology.revision,
        "active_connections": active,
    })
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(status_json(&shared))
}
