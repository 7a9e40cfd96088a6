//! `POST /restart`, `POST /reload`, `POST /reinitialize`: operations on this member's
//! PostgreSQL. The conditions Patroni checks (restart only when pending, only in a role,
//! never reinitialize the leader) are checked here against the latest status; the agent
//! loop carries the operation out between two cycles.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{authorize, bad_request, parse_body, text, AppState, Refusal};
use crate::commands::{LocalCommand, ScheduledRestart};
use crate::status::PgRole;

/// How long `POST /restart` waits for PostgreSQL to run again when no `timeout` is given.
const RESTART_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RestartBody {
    #[serde(default)]
    restart_pending: Option<bool>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReinitBody {
    #[serde(default)]
    force: Option<bool>,
}

pub(crate) async fn restart(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: RestartBody = parse_body(&body, true)?;
    let wait = match &req.timeout {
        None | Some(Value::Null) => RESTART_WAIT,
        Some(v) => match v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        {
            Some(secs) if secs > 0.0 => Duration::from_secs_f64(secs),
            _ => {
                return Err(bad_request(format!(
                    "timeout must be a number of seconds, got {v}"
                )))
            }
        },
    };
    let role = match req.role.as_deref() {
        None => None,
        Some("master" | "primary" | "leader") => Some(PgRole::Primary),
        Some("replica") => Some(PgRole::Replica),
        Some(other) => return refuse(format!("role must be primary or replica, got {other:?}")),
    };
    let schedule = crate::ops::parse_schedule(req.schedule.as_deref(), chrono::Utc::now())
        .map_err(|e| bad_request(e.to_string().replace("switchover", "restart")))?;
    if let Some(schedule) = schedule {
        // The conditions are checked when the time comes, as Patroni does.
        let at_unix_ms = chrono::DateTime::parse_from_rfc3339(&schedule)
            .map(|t| t.timestamp_millis())
            .map_err(|e| bad_request(format!("schedule {schedule:?}: {e}")))?;
        let outcome = commands
            .local(LocalCommand::ScheduleRestart(ScheduledRestart {
                schedule,
                at_unix_ms,
                restart_pending: req.restart_pending == Some(true),
                role,
            }))
            .await;
        return reply(outcome.status, outcome.message);
    }
    let before = app.status.borrow().clone();
    if req.restart_pending == Some(true) && !before.pending_restart {
        return reply(
            503,
            "restart conditions are not satisfied: no restart is pending",
        );
    }
    if let (Some(role), Some(wanted)) = (req.role.as_deref(), role) {
        if before.pg_role != wanted {
            return reply(
                503,
                format!("restart conditions are not satisfied: this member is not a {role}"),
            );
        }
    }
    let outcome = commands.local(LocalCommand::Restart).await;
    if outcome.status != 200 {
        return reply(outcome.status, outcome.message);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        {
            let now = app.status.borrow();
            if now.pg_running && now.postmaster_start_time != before.postmaster_start_time {
                return reply(200, "restarted successfully");
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return reply(
                503,
                format!(
                    "restart started but PostgreSQL did not run again within {:.0} s; see the agent's log",
                    wait.as_secs_f64()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `DELETE /restart`: forget the scheduled restart (patronictl flush ... restart).
pub(crate) async fn delete_restart(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let outcome = commands.local(LocalCommand::CancelScheduledRestart).await;
    reply(outcome.status, outcome.message)
}

pub(crate) async fn reload(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let outcome = commands.local(LocalCommand::Reload).await;
    reply(outcome.status, outcome.message)
}

pub(crate) async fn reinitialize(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: ReinitBody = parse_body(&body, true)?;
    if app.status.borrow().holds_leader_key {
        return reply(
            503,
            "this member is the leader: a leader cannot be reinitialized (switch over first)",
        );
    }
    let force = req.force.unwrap_or(false);
    let outcome = commands.local(LocalCommand::Reinitialize { force }).await;
    reply(outcome.status, outcome.message)
}

fn reply(status: u16, message: impl Into<String>) -> Result<Response, Refusal> {
    Ok(text(status, message))
}

fn refuse(reason: impl Into<String>) -> Result<Response, Refusal> {
    Err(bad_request(reason))
}
