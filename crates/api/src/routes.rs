//! The axum routes of the REST API. Every read handler reads the latest [`NodeStatus`]
//! snapshot from the watch channel and answers from it alone, so a read never waits on
//! PostgreSQL or etcd; the write endpoints live in `crate::write`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use pgbaton_config::Credentials;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::body::{cluster_json, config_json, history_json, patroni_json};
use crate::checks::{passes, Check, Filters};
use crate::commands::Commands;
use crate::error::ApiError;
use crate::metrics;
use crate::status::NodeStatus;
use crate::write::{self, AppState};

type Status = watch::Receiver<NodeStatus>;
type QueryPairs = Query<Vec<(String, String)>>;

/// Patroni answers HEAD and OPTIONS like GET, with the status code only.
const READ: MethodFilter = MethodFilter::GET
    .or(MethodFilter::HEAD)
    .or(MethodFilter::OPTIONS);

/// The axum Router for Patroni's REST API + `/metrics`. Read handlers only read the latest
/// `NodeStatus` (never block on PostgreSQL or etcd). The write endpoints (switchover,
/// failover, restart, reload, reinitialize, PATCH/PUT config) use `commands` (`None`: they
/// answer 503) and require HTTP basic auth with `auth` when it is set.
pub fn router(
    status: watch::Receiver<NodeStatus>,
    commands: Option<Arc<dyn Commands>>,
    auth: Option<Credentials>,
) -> Router {
    let state = AppState {
        status,
        commands,
        auth: auth.map(Arc::new),
    };
    let mut app: Router<AppState> = write::routes();
    for &(path, check) in Check::PATHS {
        app = app.route(
            path,
            on(
                READ,
                move |method: Method, state: State<Status>, query: QueryPairs| {
                    check_handler(check, method, state, query)
                },
            ),
        );
    }
    app.route(
        "/patroni",
        on(READ, |m: Method, s: State<Status>| {
            document(m, s, patroni_json)
        }),
    )
    .route(
        "/cluster",
        on(READ, |m: Method, s: State<Status>| {
            document(m, s, cluster_json)
        }),
    )
    .route(
        "/history",
        on(READ, |m: Method, s: State<Status>| {
            document(m, s, history_json)
        }),
    )
    .route(
        "/config",
        on(READ, |m: Method, s: State<Status>| {
            document(m, s, config_json)
        }),
    )
    .route("/metrics", on(READ, metrics_handler))
    .fallback(not_found)
    .with_state(state)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The status code only for HEAD and OPTIONS; the code and the JSON body for GET.
fn respond(method: &Method, code: StatusCode, body: Value) -> Response {
    if method == Method::GET {
        (code, Json(body)).into_response()
    } else {
        code.into_response()
    }
}

async fn check_handler(
    check: Check,
    method: Method,
    State(status): State<Status>,
    Query(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let filters = Filters::from_query(&pairs)?;
    let snapshot = status.borrow().clone();
    let code = if passes(check, &snapshot, &filters, now_ms()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(respond(&method, code, patroni_json(&snapshot)))
}

async fn document(
    method: Method,
    State(status): State<Status>,
    build: fn(&NodeStatus) -> Value,
) -> Response {
    let body = build(&status.borrow());
    respond(&method, StatusCode::OK, body)
}

async fn metrics_handler(
    method: Method,
    State(status): State<Status>,
) -> Result<Response, ApiError> {
    let text = metrics::render(&status.borrow())?;
    if method != Method::GET {
        return Ok(StatusCode::OK.into_response());
    }
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

async fn not_found(uri: Uri) -> Response {
    let reason = format!("no such endpoint: {}", uri.path());
    (StatusCode::NOT_FOUND, Json(json!({ "error": reason }))).into_response()
}
