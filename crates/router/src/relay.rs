//! After the startup: hand the held server messages to the client, then forward bytes both
//! ways — by the kernel when `offload` is on (the sockets enter its map before the client
//! gets ReadyForQuery), else by the router (no parsing, no per-message work; see `pump` for
//! how buffers are shared so that idle sessions cost no buffer memory) — until both sides
//! close, the router stops, or — for a
//! write session — the server stops being the leader, in which case both connections are
//! closed at once (HAProxy's `on-marked-down shutdown-sessions`). The bytes moved each way
//! are counted however the session ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::client::Client;
use crate::handshake::Ready;
use crate::metrics::labels;
use crate::offload::Pair;
use crate::protocol::Target;
use crate::pump::{self, Moved};
use crate::shared::{SessionGuard, Shared};
use crate::takeout::{TakenOut, Takeout};
use crate::topology::Backend;

/// Resolves when `backend` is no longer the leader (never when `leader` is None), with the
/// FATAL message for the client (nothing for an `opaque` session: TLS passed through).
async fn leader_moved(
    leader: Option<watch::Receiver<Option<Backend>>>,
    backend: &Backend,
    opaque: bool,
) -> Vec<u8> {
    let Some(mut leader) = leader else {
        return std::future::pending().await;
    };
    let moved = leader
        .wait_for(|l| l.as_ref() != Some(backend))
        .await
        .is_ok();
    if !moved {
        // The router is going away; the stop signal handles that.
        return std::future::pending().await;
    }
    if opaque {
        return Vec::new();
    }
    let text = format!("pgbaton router: switchover or failover: {} is no longer the leader; the router forwards this session without reading it, so it cannot move it to the new leader; connect again (new connections wait for the new leader)", backend.name);
    crate::protocol::error_response("57P01", &text)
}

/// Forward a client's session after the startup: plain TCP through `forward`, TLS through
/// `tls::forward`.
pub(crate) async fn forward_client(
    client: Client,
    shared: Arc<Shared>,
    server: TcpStream,
    ready: Ready,
    backend: Backend,
    role: Target,
    close_when_not_leader: bool,
) {
    match client {
        Client::Plain(client) => {
            forward(
                shared,
                client,
                server,
                ready,
                backend,
                role,
                close_when_not_leader,
                None,
            )
            .await;
        }
        Client::Tls(client) => {
            crate::tls::forward(
                shared,
                *client,
                server,
                ready,
                backend,
                role,
                close_when_not_leader,
            )
            .await
        }
    }
}

/// Forward a session until it ends; with `takeout` (a pooled session-mode write session), a
/// switchover's hold takes it out of the kernel (`takeout`), and it is returned to the
/// caller to relay and move.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    shared: Arc<Shared>,
    mut client: TcpStream,
    server: TcpStream,
    ready: Ready,
    backend: Backend,
    role: Target,
    close_when_not_leader: bool,
    takeout: Option<Takeout>,
) -> Option<TakenOut> {
    let Ready { held, key, opaque } = ready;
    let _guard = SessionGuard::new(&shared, &backend, role, key);
    // Into the kernel's hands before the client learns it may send (ReadyForQuery is in
    // `held`), so no byte can arrive while only one socket is in the map.
    let pair = shared
        .offload
        .as_ref()
        .and_then(|offload| match offload.attach(&client, &server, held.len()) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::debug!(backend = %backend.name, error = %e, "kernel forwarding not possible for this session; relaying it");
                None
            }
        });
    if let Err(e) = client.write_all(&held).await {
        tracing::debug!(backend = %backend.name, error = %e, "client left before the startup completed");
        return None;
    }
    // Not needed any more: an idle session should hold no buffer.
    drop(held);
    let leader = close_when_not_leader.then(|| shared.leader.clone());
    let moved = Moved::default();
    let mut taken = None;
    if let Some(pair) = pair {
        shared.metrics.kernel_forwarded.inc();
        let out = in_kernel(
            &shared,
            pair,
            client,
            server,
            (leader.clone(), opaque),
            &backend,
            &moved,
            takeout,
        )
        .await;
        if let Some((takeout, pair, client, server)) = out {
            let settled =
                crate::takeout::settle(&shared, takeout, pair, &backend, &client, &server);
            match settled.await {
                Ok(settled) => match (TcpStream::from_std(client), TcpStream::from_std(server)) {
                    (Ok(client), Ok(server)) => {
                        taken = Some(TakenOut {
                            client,
                            server,
                            settled,
                        })
                    }
                    _ => {
                        tracing::warn!(backend = %backend.name, "a session taken out of the kernel cannot return to the event loop; closed")
                    }
                },
                Err(crate::takeout::Unsettled::Over(why)) => {
                    tracing::debug!(backend = %backend.name, reason = %why, "a kernel-forwarded session ended while it was being taken out");
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
                Err(crate::takeout::Unsettled::Stuck(why)) => {
                    tracing::info!(backend = %backend.name, reason = %why, "a kernel-forwarded session could not be taken out for the switchover; closing it");
                    shared.metrics.closed_on_leader_change.inc();
                    let text = format!("pgbaton router: switchover: {} stops being the leader and this session was still in a statement ({why}); connect again (new connections wait for the new leader)", backend.name);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    let _ = std::io::Write::write(
                        &mut &client,
                        &crate::protocol::error_response("57P01", &text),
                    );
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    } else {
        in_user_space(&shared, client, server, (leader, opaque), &backend, &moved).await;
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
    taken
}

/// How long a session whose one side closed may stay open so that what that side sent just
/// before closing (a Terminate, a server's FATAL) is passed on by the kernel first; it closes
/// as soon as everything received has been delivered, within milliseconds normally.
const LINGER: Duration = Duration::from_secs(2);

/// Resolves when a switchover holds the write traffic (never without `takeout`).
async fn switchover_held(shared: &Shared, takeout: bool) {
    if !takeout {
        return std::future::pending().await;
    }
    let mut hold = shared.hold.clone();
    if hold.wait_for(|held| *held).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Until a side closes (then `LINGER`), the leader moves or the router stops; the kernel
/// forwards meanwhile. The sockets leave tokio's event loop: the router is not woken by the
/// session's traffic at all. With `takeout`, a switchover's hold takes the sockets out of
/// the map and gives them back (with `takeout`) for `takeout::settle`.
#[allow(clippy::too_many_arguments)]
async fn in_kernel(
    shared: &Shared,
    mut pair: Pair,
    client: TcpStream,
    server: TcpStream,
    leader: (Option<watch::Receiver<Option<Backend>>>, bool),
    backend: &Backend,
    moved: &Moved,
    takeout: Option<Takeout>,
) -> Option<(Takeout, Pair, std::net::TcpStream, std::net::TcpStream)> {
    let (client, server) = match (client.into_std(), server.into_std()) {
        (Ok(client), Ok(server)) => (client, server),
        _ => return None,
    };
    let mut stop = shared.stop.clone();
    let leader_gone = leader_moved(leader.0, backend, leader.1);
    tokio::pin!(leader_gone);
    let mut goodbye = None;
    let mut take_out = false;
    tokio::select! {
        _ = switchover_held(shared, takeout.is_some()) => take_out = true,
        _ = pair.ended() => {
            let drained = async {
                while !pair.drained() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::select! {
                _ = drained => {}
                _ = tokio::time::sleep(LINGER) => {
                    tracing::debug!(backend = %backend.name, "closing a session with bytes still undelivered");
                }
                _ = &mut leader_gone => {}
                _ = crate::stop::stopped(&mut stop) => {}
            }
        }
        farewell = &mut leader_gone => {
            shared.metrics.closed_on_leader_change.inc();
            tracing::info!(backend = %backend.name, "closing a write session: its server is no longer the leader");
            goodbye = Some(farewell);
        }
        _ = crate::stop::stopped(&mut stop) => {}
    }
    if let Some((to_server, to_client)) = pair.moved() {
        moved.to_server.store(to_server, Ordering::Relaxed);
        moved.to_client.store(to_client, Ordering::Relaxed);
    }
    if take_out {
        if let Some(takeout) = takeout {
            return Some((takeout, pair, client, server));
        }
    }
    drop(pair);
    if let Some(bytes) = goodbye {
        // Out of the kernel's map: the server side first, then the client hears why.
        let _ = server.shutdown(std::net::Shutdown::Both);
        let _ = std::io::Write::write(&mut &client, &bytes);
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    None
}

async fn in_user_space(
    shared: &Shared,
    mut client: TcpStream,
    mut server: TcpStream,
    leader: (Option<watch::Receiver<Option<Backend>>>, bool),
    backend: &Backend,
    moved: &Moved,
) {
    let mut stop = shared.stop.clone();
    tokio::select! {
        result = pump::both_ways(&mut client, &mut server, moved) => {
            if let Err(e) = result {
                tracing::debug!(backend = %backend.name, error = %e, "session ended with an error");
            }
        }
        farewell = leader_moved(leader.0, backend, leader.1) => {
            shared.metrics.closed_on_leader_change.inc();
            tracing::info!(backend = %backend.name, "closing a write session: its server is no longer the leader");
            let _ = server.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&farewell)).await;
            let _ = client.shutdown().await;
        }
        _ = crate::stop::stopped(&mut stop) => {}
    }
}
