//! Patroni-compatible REST API and Prometheus metrics of the pgbaton agent: the read side
//! (health checks HAProxy and Kubernetes probe, `/patroni`, `/cluster`, `/history`,
//! `/config`, `/metrics`), answered from the latest [`NodeStatus`] the agent published.

mod body;
mod checks;
mod error;
mod lag;
mod metrics;
mod routes;
pub mod status;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use body::{cluster_json, config_json, history_json, patroni_json};
pub use checks::{passes, Check, Filters};
pub use error::ApiError;
pub use lag::{own_lag, parse_lag, LagParseError};
pub use metrics::{render as render_metrics, MetricsError, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use routes::router;
pub use status::*;

/// Serves the REST API on an already bound listener until `shutdown` resolves; requests in
/// flight are finished first.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
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
    axum::serve(listener, router(status))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%scope, member = %name, "REST API stopped");
    Ok(())
}
