//! `POST /failsafe`: a leader that cannot reach the DCS asks this member, in failsafe mode,
//! not to compete with it (Patroni 3's DCS failsafe mode). Behind basic auth like every write
//! endpoint; answered by the agent at once (`Commands::failsafe`), without the DCS.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{authorize, bad_request, parse_body, text, AppState, Refusal};

/// The leader's document (Patroni sends `name`, `conn_url`, `api_url` and `slots`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FailsafeBody {
    #[serde(default)]
    name: Option<String>,
}

pub(crate) async fn post_failsafe(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: FailsafeBody = parse_body(&body, false)?;
    let Some(leader) = req.name.filter(|n| !n.is_empty()) else {
        return Err(bad_request(
            "the body must name the leader: {\"name\": \"<member>\", ...}",
        ));
    };
    let outcome = commands.failsafe(&leader);
    if outcome.status == 200 {
        // Exactly what Patroni's leader compares the answer with.
        tracing::debug!(%leader, "failsafe: accepted");
        return Ok((StatusCode::OK, "Accepted").into_response());
    }
    Ok(text(outcome.status, outcome.message))
}
