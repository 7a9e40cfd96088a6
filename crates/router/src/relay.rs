//! After the startup: hand the held server messages to the client, then forward bytes both
//! ways with large buffers (no parsing, no per-message work) until either side closes, the
//! router stops, or — for a write session — the server stops being the leader, in which
//! case both connections are closed at once (HAProxy's `on-marked-down shutdown-sessions`).

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::handshake::Ready;
use crate::metrics::labels;
use crate::protocol::Target;
use crate::shared::{SessionGuard, Shared};
use crate::topology::Backend;

/// Buffer per direction: large enough that bulk results move in few syscalls.
const BUFFER: usize = 64 * 1024;

/// Resolves when `backend` is no longer the leader (never when `leader` is None).
async fn leader_moved(leader: Option<watch::Receiver<Option<Backend>>>, backend: &Backend) {
    match leader {
        Some(mut leader) => {
            // An error means the router is going away; the stop signal handles that.
            if leader
                .wait_for(|l| l.as_ref() != Some(backend))
                .await
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

pub(crate) async fn forward(
    shared: Arc<Shared>,
    mut client: TcpStream,
    mut server: TcpStream,
    ready: Ready,
    backend: Backend,
    role: Target,
    close_when_not_leader: bool,
) {
    let _guard = SessionGuard::new(&shared, &backend, role, ready.key);
    if let Err(e) = client.write_all(&ready.held).await {
        tracing::debug!(backend = %backend.name, error = %e, "client left before the startup completed");
        return;
    }
    let leader = close_when_not_leader.then(|| shared.leader.clone());
    let mut stop = shared.stop.clone();
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER);
    tokio::select! {
        result = copy => match result {
            Ok((to_server, to_client)) => {
                let count = |direction: &'static str, n: u64| {
                    shared
                        .metrics
                        .bytes
                        .get_or_create(&labels(&[("direction", direction), ("backend", &backend.name)]))
                        .inc_by(n);
                };
                count("to_server", to_server);
                count("to_client", to_client);
            }
            Err(e) => tracing::debug!(backend = %backend.name, error = %e, "session ended with an error"),
        },
        _ = leader_moved(leader, &backend) => {
            shared.metrics.closed_on_leader_change.inc();
            tracing::info!(backend = %backend.name, "closing a write session: its server is no longer the leader");
        }
        _ = crate::shared::stopped(&mut stop) => {}
    }
}
