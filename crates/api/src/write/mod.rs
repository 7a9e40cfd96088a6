//! The write side of the REST API: switchover, failover, restart, reload, reinitialize and
//! configuration changes. Every handler checks basic auth first (401, nothing changed), then
//! parses the JSON body (400 naming the problem), then validates against the latest cluster
//! state before anything is written.

mod backup;
mod config;
mod failsafe;
mod local;
mod switchover;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::FromRef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post, put};
use axum::{Json, Router};
use pgbaton_config::{Credentials, DynamicConfig, SyncMode};
use pgbaton_dcs::{ClusterState, DcsError};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;

use crate::auth;
use crate::commands::Commands;
use crate::status::NodeStatus;

/// Everything a handler may need: the status snapshot (read side), the agent's commands
/// and the credentials write requests must carry.
#[derive(Clone)]
pub(crate) struct AppState {
    pub status: watch::Receiver<NodeStatus>,
    /// `None`: this API serves reads only (write endpoints answer 503).
    pub commands: Option<Arc<dyn Commands>>,
    /// `restapi.authentication`; `None` means write requests need no credentials.
    pub auth: Option<Arc<Credentials>>,
}

impl FromRef<AppState> for watch::Receiver<NodeStatus> {
    fn from_ref(state: &AppState) -> Self {
        state.status.clone()
    }
}

/// The write routes, merged into the read router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/switchover", post(switchover::post_switchover))
        .route("/switchover", delete(switchover::delete_switchover))
        .route("/failover", post(switchover::post_failover))
        .route("/restart", post(local::restart))
        .route("/restart", delete(local::delete_restart))
        .route("/reload", post(local::reload))
        .route("/reinitialize", post(local::reinitialize))
        .route("/reinit", post(local::reinitialize))
        .route("/config", patch(config::patch_config))
        .route("/config", put(config::put_config))
        .route("/failsafe", post(failsafe::post_failsafe))
        .route("/backup", post(backup::post_backup))
}

/// A plain-text answer (what Patroni's write endpoints send and patronictl prints).
pub(crate) fn text(status: u16, message: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut message = message.into();
    if code.is_client_error() || code.is_server_error() {
        tracing::warn!(status, reason = %message, "REST write request refused");
    } else {
        tracing::info!(status, "{message}");
    }
    message.push('\n');
    (code, message).into_response()
}

/// Why a write request was not carried out; becomes the response.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 401 with the basic-auth challenge.
    Auth(auth::AuthError),
    /// 400 with a JSON reason: the request itself could not be understood.
    BadRequest(String),
    /// Any other status with a plain-text reason.
    Status(u16, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Auth(e) => e.into_response(),
            Refusal::BadRequest(reason) => {
                tracing::warn!(%reason, "REST write request refused: 400");
                (StatusCode::BAD_REQUEST, Json(json!({ "error": reason }))).into_response()
            }
            Refusal::Status(status, message) => text(status, message),
        }
    }
}

pub(crate) fn bad_request(reason: impl Into<String>) -> Refusal {
    Refusal::BadRequest(reason.into())
}

pub(crate) fn dcs_unavailable(err: DcsError) -> Refusal {
    Refusal::Status(
        503,
        format!("cannot reach the DCS: {err}; nothing was changed, retry later"),
    )
}

/// Authenticate and find the agent's commands.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<dyn Commands>, Refusal> {
    auth::check(state.auth.as_deref(), headers).map_err(Refusal::Auth)?;
    state.commands.clone().ok_or_else(|| {
        Refusal::Status(
            503,
            "this REST API serves reads only: write endpoints are not available here".into(),
        )
    })
}

/// Parse a JSON request body; an empty body is `T::default()` when `empty_ok`.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(
    body: &Bytes,
    empty_ok: bool,
) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(bad_request("the request body is empty: send a JSON object"))
        };
    }
    serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "the request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// `maximum_lag_on_failover` and whether synchronous mode is on, from the DCS config
/// (pgbaton's defaults when absent or invalid).
pub(crate) fn limits(state: &ClusterState) -> (u64, bool) {
    let defaults = DynamicConfig::defaults();
    let dynamic = state
        .config
        .as_ref()
        .and_then(|c| DynamicConfig::from_dcs_json(&c.value, &defaults).ok())
        .map(|l| l.value)
        .unwrap_or(defaults);
    (
        dynamic.maximum_lag_on_failover,
        dynamic.synchronous_mode != SyncMode::Off,
    )
}
