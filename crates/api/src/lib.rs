//! Patroni-compatible REST API and Prometheus metrics of the pgbaton agent: the read side
//! (health checks HAProxy and Kubernetes probe, `/patroni`, `/cluster`, `/history`,
//! `/config`, `/metrics`), answered from the latest [`NodeStatus`] the agent published, and
//! the write side (`POST /switchover`, `/failover`, `/restart`, `/reload`, `/reinitialize`,
//! `DELETE /switchover`, `PATCH`/`PUT /config`) behind HTTP basic auth, carried out through
//! the agent's [`Commands`]. Served over plain HTTP ([`serve`]) or https ([`serve_tls`],
//! with the certificate and key [`load_tls`] reads from `restapi.certfile`/`keyfile`).

mod auth;
mod body;
mod checks;
mod commands;
mod error;
mod lag;
mod metrics;
pub mod ops;
mod routes;
pub mod status;
mod tls;
mod write;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use axum::serve::Listener;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use auth::{basic_header, check as check_auth, AuthError};
pub use body::{cluster_json, config_json, history_json, patroni_json};
pub use checks::{passes, Check, Filters};
pub use commands::{
    BackupFrom, BackupKind, BoxFuture, CommandOutcome, Commands, LocalCommand, ScheduledRestart,
};
pub use error::ApiError;
pub use lag::{own_lag, parse_lag, LagParseError};
pub use metrics::{render as render_metrics, MetricsError, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use pgbaton_config::Credentials;
pub use routes::router;
/// The rustls this crate builds its configurations with (0.23, `ring` provider).
pub use rustls;
pub use status::*;
pub use tls::{
    client_tls_config, install_default_crypto_provider, load_tls, TlsError, TlsFileRole, TlsFiles,
    TlsListener, HANDSHAKE_TIMEOUT,
};

/// Serves the REST API on an already bound listener until `shutdown` resolves; requests in
/// flight are finished first. `commands` and `auth` are as in [`router`].
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
    commands: Option<Arc<dyn Commands>>,
    auth: Option<Credentials>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, "http", status, commands, auth, shutdown).await
}

/// [`serve`] over https with `tls` (from [`load_tls`]): handshakes run concurrently, each
/// within [`HANDSHAKE_TIMEOUT`]; a client that fails one (plain HTTP sent to this port, a
/// timeout) is logged at debug and dropped without disturbing the others.
pub async fn serve_tls(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
    commands: Option<Arc<dyn Commands>>,
    auth: Option<Credentials>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, tls);
    serve_on(listener, "https", status, commands, auth, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    scheme: &'static str,
    status: watch::Receiver<NodeStatus>,
    commands: Option<Arc<dyn Commands>>,
    auth: Option<Credentials>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = std::net::SocketAddr>,
{
    let (scope, name) = {
        let s = status.borrow();
        (s.scope.clone(), s.name.clone())
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%scope, member = %name, %addr, scheme, "REST API listening"),
        Err(err) => {
            tracing::warn!(%scope, member = %name, %err, "REST API listening on an unknown address")
        }
    }
    let span = tracing::info_span!("rest_api", %scope, member = %name);
    axum::serve(listener, router(status, commands, auth))
        .with_graceful_shutdown(shutdown)
        .into_future()
        .instrument(span)
        .await?;
    tracing::info!(%scope, member = %name, "REST API stopped");
    Ok(())
}
