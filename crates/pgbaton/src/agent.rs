//! `pgbaton agent`: wires the runtime (`pgbaton-agent`) to etcd, the REST API and the
//! process's signals.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use pgbaton_agent::peers::HttpPeers;
use pgbaton_agent::{settings, Agent};
use pgbaton_api::NodeStatus;
use pgbaton_config::Config;
use pgbaton_dcs::{ClusterPath, EtcdDcs};
use tokio::sync::watch;

/// Run the agent until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let removed = pgbaton_postgres::remove_stale_secret_files();
    if removed > 0 {
        tracing::info!(
            removed,
            "removed password files that killed pgbaton processes left in the temporary directory"
        );
    }
    let dynamic = cfg.bootstrap.dcs.clone();
    let ha = settings::ha_config(&cfg, &dynamic);
    let path = ClusterPath::new(&cfg.namespace, &cfg.scope);
    let dcs = EtcdDcs::new(
        cfg.dcs.hosts.clone(),
        path,
        &cfg.name,
        Duration::from_millis(ha.ttl_ms),
        Duration::from_millis(ha.retry_timeout_ms),
    )
    .with_access(&crate::etcd_access::from_config(&cfg.dcs))
    .context("etcd3 (TLS and credentials)")?;
    // TLS files are checked before anything starts: a wrong path fails here, named.
    let tls = match (&cfg.restapi.certfile, &cfg.restapi.keyfile) {
        (Some(cert), key) => Some(
            pgbaton_api::load_tls(&pgbaton_api::TlsFiles {
                certfile: cert.into(),
                keyfile: key.as_deref().unwrap_or(cert).into(),
            })
            .context("restapi.certfile / restapi.keyfile")?,
        ),
        (None, _) => None,
    };
    let http = crate::http::client(
        &crate::http::Trust::from_config(&cfg),
        Duration::from_millis(1000),
    )?;
    let (status_tx, status_rx) =
        watch::channel(NodeStatus::starting(&cfg.scope, &cfg.name, ha.ttl_ms));
    let listener = tokio::net::TcpListener::bind(&cfg.restapi.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on restapi.listen {}: is the port in use?",
                cfg.restapi.listen
            )
        })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let api_shutdown = {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let auth = cfg.restapi.authentication.clone();
    let dcs_timeout = Duration::from_millis(ha.retry_timeout_ms);
    let listen = cfg.restapi.listen.clone();
    let mut agent = Agent::new(cfg, dynamic, ha, dcs, status_tx, HttpPeers::new(http));
    let (commands, local_rx) = agent.commands(dcs_timeout);
    let commands: Arc<dyn pgbaton_api::Commands> = Arc::new(commands);
    let api = match &tls {
        Some(tls) => tokio::spawn(
            pgbaton_api::serve_tls(
                listener,
                status_rx,
                Some(commands),
                auth,
                tls.clone(),
                api_shutdown,
            )
            .in_current_span(),
        ),
        None => tokio::spawn(
            pgbaton_api::serve(listener, status_rx, Some(commands), auth, api_shutdown)
                .in_current_span(),
        ),
    };
    tracing::info!(listen = %listen, "REST API listening");

    let signals = tokio::spawn(
        async move {
            pgbaton_agent::shutdown::signalled().await;
            let _ = shutdown_tx.send(true);
        }
        .in_current_span(),
    );

    let result = agent.run(shutdown_rx, local_rx).await;
    signals.abort();
    let _ = api.await;
    result
}
