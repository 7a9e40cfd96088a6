//! CancelRequest: the client's key names a backend on some server; the router remembers,
//! from the BackendKeyData it relayed, which server that is, and passes the request there.
//! The client gets no answer (PostgreSQL sends none either): the connection is closed.
//! A pooled client carries a key the router made; it is sent, with the server's own key,
//! to the server connection that client holds at that moment.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::protocol::{cancel_request, CancelKey};
use crate::shared::Shared;

pub(crate) async fn forward(shared: &Shared, key: CancelKey) {
    // A pooled client's key is the router's: it names whichever server connection the
    // client holds right now.
    let pooled = shared.pooling.as_ref().and_then(|p| p.cancel_target(&key));
    if let Some(target) = pooled {
        let current = target.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match current {
            Some((server_key, view)) => {
                let backend = crate::topology::Backend {
                    name: view.member.clone(),
                    host: view.host.clone(),
                    port: view.port,
                };
                send(shared, server_key, backend).await
            }
            None => {
                tracing::debug!("CancelRequest for a pooled client that holds no server connection; nothing to cancel");
                Metrics::count(&shared.metrics.cancels, &[("outcome", "idle")]);
            }
        }
        return;
    }
    let backend = shared
        .cancel_keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let Some(backend) = backend else {
        tracing::info!(
            pid = key.pid,
            "CancelRequest for a backend the router does not know; ignored"
        );
        Metrics::count(&shared.metrics.cancels, &[("outcome", "unknown_key")]);
        return;
    };
    send(shared, key, backend).await;
}

async fn send(shared: &Shared, key: CancelKey, backend: crate::topology::Backend) {
    let send = async {
        let mut server = TcpStream::connect((backend.host.as_str(), backend.port)).await?;
        server.write_all(&cancel_request(key)).await?;
        // PostgreSQL closes the connection once it handled the request.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(1), server.read(&mut sink)).await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(shared.cfg.connect_timeout, send).await {
        Ok(Ok(())) => {
            tracing::debug!(backend = %backend.name, pid = key.pid, "CancelRequest forwarded");
            Metrics::count(&shared.metrics.cancels, &[("outcome", "forwarded")]);
        }
        Ok(Err(e)) => {
            tracing::warn!(backend = %backend.name, error = %e, "cannot forward a CancelRequest");
            Metrics::count(&shared.metrics.cancels, &[("outcome", "failed")]);
        }
        Err(_) => {
            tracing::warn!(backend = %backend.name, "CancelRequest not delivered within connect_timeout");
            Metrics::count(&shared.metrics.cancels, &[("outcome", "failed")]);
        }
    }
}
