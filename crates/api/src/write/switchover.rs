//! `POST /switchover`, `POST /failover`, `DELETE /switchover`: validate against the latest
//! cluster state, write the `failover` key only when the request is acceptable (create iff
//! absent), then wait for the leader key to move (a request that is not scheduled).

use std::sync::Arc;
use std::time::Duration;

use crate::ops::{validate_failover, validate_switchover};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use pgbaton_dcs::FailoverDoc;
use serde::Deserialize;

use super::{authorize, dcs_unavailable, limits, parse_body, text, AppState, Refusal};
use crate::commands::Commands;

/// How long a request that is not scheduled waits for the leader key to move.
const WAIT_FOR_LEADER: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SwitchoverBody {
    #[serde(default, alias = "master")]
    leader: Option<String>,
    #[serde(default)]
    candidate: Option<String>,
    #[serde(default)]
    scheduled_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FailoverBody {
    #[serde(default)]
    candidate: Option<String>,
}

pub(crate) async fn post_switchover(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: SwitchoverBody = parse_body(&body, false)?;
    let state = commands.load().await.map_err(dcs_unavailable)?;
    let (max_lag, sync_mode) = limits(&state);
    let checked = validate_switchover(
        &state,
        req.leader.as_deref(),
        req.candidate.as_deref(),
        req.scheduled_at.as_deref(),
        max_lag,
        sync_mode,
    );
    Ok(match checked {
        Ok(doc) => submit(commands, doc, "switched over").await,
        Err(e) => text(e.status(), e.to_string()),
    })
}

pub(crate) async fn post_failover(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: FailoverBody = parse_body(&body, false)?;
    let state = commands.load().await.map_err(dcs_unavailable)?;
    let (max_lag, sync_mode) = limits(&state);
    Ok(
        match validate_failover(&state, req.candidate.as_deref(), max_lag, sync_mode) {
            Ok(doc) => submit(commands, doc, "failed over").await,
            Err(e) => text(e.status(), e.to_string()),
        },
    )
}

pub(crate) async fn delete_switchover(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let state = commands.load().await.map_err(dcs_unavailable)?;
    if state.failover.is_none() {
        return Ok(text(404, "no switchover is pending: nothing to cancel"));
    }
    commands.delete_failover().await.map_err(dcs_unavailable)?;
    Ok(text(200, "scheduled switchover deleted"))
}

/// Write the request (create iff absent) and, unless scheduled, wait for the leader to move.
async fn submit(commands: Arc<dyn Commands>, doc: FailoverDoc, done: &str) -> Response {
    match commands.set_failover(doc.clone(), None).await {
        Ok(true) => {}
        Ok(false) => {
            return text(
                412,
                "a switchover is already pending: cancel it first (DELETE /switchover)",
            )
        }
        Err(e) => return dcs_unavailable(e).into_response(),
    }
    tracing::info!(
        leader = doc.leader.as_deref().unwrap_or(""),
        candidate = doc.member.as_deref().unwrap_or(""),
        scheduled_at = doc.scheduled_at.as_deref().unwrap_or(""),
        "failover key written"
    );
    if let Some(at) = &doc.scheduled_at {
        return text(202, format!("Switchover scheduled at {at}"));
    }
    wait_for_new_leader(commands.as_ref(), &doc, done).await
}

async fn wait_for_new_leader(commands: &dyn Commands, doc: &FailoverDoc, done: &str) -> Response {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_LEADER;
    let old = doc.leader.as_deref();
    let wanted = doc.member.as_deref();
    loop {
        tokio::time::sleep(POLL).await;
        if let Ok(state) = commands.load().await {
            let now = state.leader_name();
            if let Some(leader) = now {
                let moved = match wanted {
                    Some(c) => leader == c,
                    None => Some(leader) != old,
                };
                if moved {
                    clear_done_request(commands, &state, doc).await;
                    return text(200, format!("Successfully {done} to \"{leader}\""));
                }
            }
            if state.failover.is_none() && now.is_some() && now == old {
                return text(
                    412,
                    format!(
                        "the leader {} declined the request (it re-checks the candidate); see its log",
                        old.unwrap_or("")
                    ),
                );
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return text(
                503,
                format!(
                    "the request was written but the leader did not change within {} s; \
                     check `pgbaton ctl list` and the agents' logs",
                    WAIT_FOR_LEADER.as_secs()
                ),
            );
        }
    }
}

/// The new leader clears a completed request itself; if our request is still there once the
/// leader key moved (the new leader has not got to it yet), clear it so that it cannot steer
/// a later election. Only a key with exactly our content is deleted: a newer request can
/// only have been written after ours was cleared (requests are create-if-absent).
async fn clear_done_request(
    commands: &dyn Commands,
    state: &pgbaton_dcs::ClusterState,
    doc: &FailoverDoc,
) {
    let ours = state
        .failover
        .as_ref()
        .is_some_and(|f| f.value.member == doc.member && f.value.leader == doc.leader);
    if ours {
        if let Err(e) = commands.delete_failover().await {
            tracing::warn!(error = %e, "cannot clear the completed switchover request");
        }
    }
}
