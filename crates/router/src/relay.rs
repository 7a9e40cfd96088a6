//! After the startup: hand the held server messages to the client, then forward bytes both
//! ways (no parsing, no per-message work; see `pump` for how buffers are shared so that idle
//! sessions cost no buffer memory) until both sides close, the router stops, or — for a
//! write session — the server stops being the leader, in which case both connections are
//! closed at once (HAProxy's `on-marked-down shutdown-sessions`). The bytes moved each way
//! are counted however the session ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::handshake::Ready;
use crate::metrics::labels;
use crate::protocol::Target;
use crate::pump::{self, Moved};
use crate::shared::{SessionGuard, Shared};
use crate::topology::Backend;

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
    let Ready { held, key } = ready;
    let _guard = SessionGuard::new(&shared, &backend, role, key);
    if let Err(e) = client.write_all(&held).await {
        tracing::debug!(backend = %backend.name, error = %e, "client left before the startup completed");
        return;
    }
    // Not needed any more: an idle session should hold no buffer.
    drop(held);
    let leader = close_when_not_leader.then(|| shared.leader.clone());
    let mut stop = shared.stop.clone();
    let moved = Moved::default();
    tokio::select! {
        result = pump::both_ways(&mut client, &mut server, &moved) => {
            if let Err(e) = result {
                tracing::debug!(backend = %backend.name, error = %e, "session ended with an error");
            }
        }
        _ = leader_moved(leader, &backend) => {
            shared.metrics.closed_on_leader_change.inc();
            tracing::info!(backend = %backend.name, "closing a write session: its server is no longer the leader");
        }
        _ = crate::shared::stopped(&mut stop) => {}
    }
    let count = |direction: &'static str, n: &AtomicU64| {
        shared
            .metrics
            .bytes
            .get_or_create(&labels(&[
                ("direction", direction),
                ("backend", &backend.name),
            ]))
            .inc_by(n.load(Ordering::Relaxed));
    };
    count("to_server", &moved.to_server);
    count("to_client", &moved.to_client);
}
