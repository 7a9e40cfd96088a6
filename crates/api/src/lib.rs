//! Patroni-compatible REST API and Prometheus metrics of the pgbaton agent: the read side
//! (health checks HAProxy and Kubernetes probe, `/patroni`, `/cluster`, `/history`,
//! `/config`, `/metrics`), answered from the latest [`NodeStatus`] the agent published, and
//! the write side (`POST /switchover`, `/failover`, `/restart`, `/reload`, `/reinitialize`,
//! `DELETE /switchover`, `PATCH`/`PUT /config`) behind HTTP basic auth, carried out through
//! the agent's [`Commands`].

mod auth;
mod body;
mod checks;
mod commands;
mod error;
mod lag;
mod metrics;
mod routes;
pub mod status;
mod write;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{basic_header, check as check_auth, AuthError};
pub use body::{cluster_json, config_json, history_json, patroni_json};
pub use checks::{passes, Check, Filters};
pub use commands::{BoxFuture, CommandOutcome, Commands, LocalCommand};
pub use error::ApiError;
pub use lag::{own_lag, parse_lag, LagParseError};
pub use metrics::{render as render_metrics, MetricsError, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use pgbaton_config::Credentials;
pub use routes::router;
pub use status::*;

/// Serves the REST API on an already bound listener until `shutdown` resolves; requests in
/// flight are finished first. `commands` and `auth` are as in [`router`].
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
    commands: Option<Arc<dyn Commands>>,
    auth: Option<Credentials>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (scope, name) = {
        let s = status.borrow();
        (s.scope.clone(), s.name.clone())
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%scope, member = %name, %addr, "REST API listening"),
        Err(err) => {
            tracing::warn!(%scope, member = %name, %err, "REST API listening on an unknown address")
        }
    }
    axum::serve(listener, router(status, commands, auth))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%scope, member = %name, "REST API stopped");
    Ok(())
}
