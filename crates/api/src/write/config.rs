//! `PATCH /config` (JSON merge patch: `null` deletes, objects merge) and `PUT /config`
//! (replace): the result is validated like the agents will read it, then written with a
//! compare-and-swap on the revision read, so a concurrent edit is never overwritten.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgbaton_config::merge_patch;
use pgbaton_config::DynamicConfig;
use serde_json::{Map, Value};

use super::{authorize, bad_request, dcs_unavailable, parse_body, text, AppState, Refusal};

pub(crate) async fn patch_config(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    change_config(app, headers, body, true).await
}

pub(crate) async fn put_config(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    change_config(app, headers, body, false).await
}

async fn change_config(
    app: AppState,
    headers: HeaderMap,
    body: Bytes,
    merge: bool,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let given: Value = parse_body(&body, false)?;
    if !given.is_object() {
        return Err(bad_request(format!(
            "the configuration must be a JSON object, got {given}"
        )));
    }
    let state = commands.load().await.map_err(dcs_unavailable)?;
    let revision = state.config.as_ref().map(|c| c.mod_revision);
    let new = if merge {
        let mut current = state
            .config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_else(|| Value::Object(Map::new()));
        merge_patch(&mut current, &given);
        current
    } else {
        given
    };
    if let Err(e) = DynamicConfig::from_dcs_json(&new, &DynamicConfig::defaults()) {
        return Err(bad_request(format!(
            "{e}; the configuration was not changed"
        )));
    }
    let written = commands
        .set_config(new.clone(), revision)
        .await
        .map_err(dcs_unavailable)?;
    if !written {
        return Ok(text(
            409,
            "the configuration changed in the DCS while this request was handled; \
             read it again and retry",
        ));
    }
    tracing::info!("dynamic configuration changed through the REST API");
    Ok(Json(new).into_response())
}
