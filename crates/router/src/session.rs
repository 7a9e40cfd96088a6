//! One client connection from accept to hand-over: read its first packet (bounded by
//! `startup_timeout`), forward a CancelRequest, hand an SSLRequest to `passthrough` (with
//! `tls: passthrough`), or pick the role (the listener's, unless the
//! startup asks otherwise), choose a server, relay the startup, and start forwarding. Every
//! refusal is a PostgreSQL ErrorResponse naming the situation; a broken client is dropped
//! with a log line and nothing else is affected.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{ReadFallback, TlsMode};
use crate::handshake::{start, AuthLog, StartFailure};
use crate::metrics::Metrics;
use crate::protocol::{error_response, FirstPacket, Target};
use crate::route::{read_candidates, wait_for_leader};
use crate::shared::Shared;
use crate::topology::Backend;
use crate::wire::read_first_packet;
use crate::{cancel, passthrough, relay};

/// SQLSTATE cannot_connect_now.
pub(crate) const CANNOT_CONNECT_NOW: &str = "57P03";
/// SQLSTATE protocol_violation.
const PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE invalid_parameter_value.
const INVALID_PARAMETER: &str = "22023";
/// SQLSTATE connection_failure.
const CONNECTION_FAILURE: &str = "08006";

/// Send `bytes` and close without a reset: half-close, then discard what the client still
/// sends for a moment (closing a socket with unread input would reset the connection, and
/// the client could lose the ErrorResponse).
async fn send_and_close(client: &mut TcpStream, bytes: &[u8]) {
    if client.write_all(bytes).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

/// Refuse the client with an ErrorResponse and count it.
pub(crate) async fn refuse(
    shared: &Shared,
    client: &mut TcpStream,
    code: &str,
    reason: &'static str,
    message: &str,
) {
    tracing::info!(reason, %message, "refusing a client connection");
    Metrics::count(&shared.metrics.refusals, &[("reason", reason)]);
    send_and_close(client, &error_response(code, message)).await;
}

pub(crate) fn decision(shared: &Shared, target: Target, decision: &str) {
    Metrics::count(
        &shared.metrics.decisions,
        &[("target", target.label()), ("decision", decision)],
    );
}

pub(crate) async fn serve_client(
    mut client: TcpStream,
    peer: SocketAddr,
    listener: Target,
    shared: Arc<Shared>,
) {
    let _ = client.set_nodelay(true);
    let pass_ssl = shared.cfg.tls == TlsMode::Passthrough;
    let first = tokio::time::timeout(
        shared.cfg.startup_timeout,
        read_first_packet(&mut client, pass_ssl),
    )
    .await;
    let mut startup = match first {
        Err(_) => {
            tracing::info!(%peer, timeout = ?shared.cfg.startup_timeout, "dropping a client that sent no startup packet in time");
            Metrics::count(&shared.metrics.client_errors, &[("reason", "timeout")]);
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "dropping a client with a broken startup packet");
            Metrics::count(&shared.metrics.client_errors, &[("reason", e.reason())]);
            if e.reason() == "malformed" {
                let message = format!("invalid startup packet: {e}");
                send_and_close(&mut client, &error_response(PROTOCOL_VIOLATION, &message)).await;
            }
            return;
        }
        Ok(Ok(FirstPacket::Cancel(key))) => return cancel::forward(&shared, key).await,
        Ok(Ok(FirstPacket::Startup(message))) => message,
        Ok(Ok(FirstPacket::SslRequest)) if pass_ssl => {
            return passthrough::serve(shared, client, listener).await
        }
        Ok(Ok(FirstPacket::SslRequest | FirstPacket::GssEncRequest)) => return,
    };
    let target = match startup.take_target() {
        Ok(requested) => requested.unwrap_or(listener),
        Err(e) => {
            let message = e.to_string();
            refuse(
                &shared,
                &mut client,
                INVALID_PARAMETER,
                "bad_target",
                &message,
            )
            .await;
            return;
        }
    };
    tracing::debug!(%peer, user = %startup.user(), target = target.label(), "new client");
    let startup = startup.encode();
    match target {
        Target::Write => write_session(shared, client, &startup).await,
        Target::Read | Target::Any => read_session(shared, client, &startup, target).await,
    }
}

pub(crate) async fn connect(shared: &Shared, backend: &Backend) -> Result<TcpStream, String> {
    let connecting = TcpStream::connect((backend.host.as_str(), backend.port));
    match tokio::time::timeout(shared.cfg.connect_timeout, connecting).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!(
            "cannot connect to {} at {}: {e}",
            backend.name,
            backend.address()
        )),
        Err(_) => Err(format!(
            "no connection to {} at {} within {:?}",
            backend.name,
            backend.address(),
            shared.cfg.connect_timeout
        )),
    }
}

/// To the leader, never to a server in recovery: one retry on the (new) leader.
async fn write_session(shared: Arc<Shared>, mut client: TcpStream, startup: &[u8]) {
    let mut auth = AuthLog::default();
    let mut failed: Option<Backend> = None;
    let mut why = String::from("no leader");
    for _attempt in 0..2 {
        let Some(leader) = wait_for_leader(&shared, failed.as_ref()).await else {
            break;
        };
        let mut server = match connect(&shared, &leader).await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(leader = %leader.name, error = %e, "cannot reach the leader");
                why = e;
                failed = Some(leader);
                continue;
            }
        };
        let relay = start(&mut client, &mut server, startup, &mut auth, true);
        match tokio::time::timeout(shared.cfg.startup_timeout, relay).await {
            Ok(Ok(ready)) => {
                if shared.leader.borrow().as_ref() != Some(&leader) {
                    why = format!(
                        "{} stopped being the leader during the startup",
                        leader.name
                    );
                    failed = Some(leader);
                    continue;
                }
                decision(&shared, Target::Write, "leader");
                relay::forward(shared, client, server, ready, leader, Target::Write, true).await;
                return;
            }
            Ok(Err(StartFailure::NotWritable(detail))) => {
                tracing::warn!(member = %leader.name, %detail, "the leader in etcd is not writable yet; not handing it the client");
                why = format!("{} is not writable ({detail})", leader.name);
                failed = Some(leader);
            }
            Ok(Err(StartFailure::Refused(bytes))) => {
                send_and_close(&mut client, &bytes).await;
                return;
            }
            Ok(Err(e @ StartFailure::CannotRepeatAuth(_))) => {
                why = format!("{why}; and {e}: connect again");
                break;
            }
            Ok(Err(StartFailure::Client(e))) => {
                tracing::debug!(error = %e, "client left during the startup");
                return;
            }
            Ok(Err(StartFailure::Server(e))) => {
                why = format!("{} failed during the startup: {e}", leader.name);
                failed = Some(leader);
            }
            Err(_) => {
                let message = format!(
                    "{} did not complete the startup within {:?}",
                    leader.name, shared.cfg.startup_timeout
                );
                refuse(
                    &shared,
                    &mut client,
                    CONNECTION_FAILURE,
                    "startup_timeout",
                    &message,
                )
                .await;
                return;
            }
        }
    }
    decision(&shared, Target::Write, "refused");
    let message = format!(
        "pgbaton router: cannot connect now: no writable leader within {:?} ({why}); a failover or switchover may be in progress",
        shared.cfg.switchover_wait
    );
    refuse(
        &shared,
        &mut client,
        CANNOT_CONNECT_NOW,
        "no_leader",
        &message,
    )
    .await;
}

/// To a readable replica, else (by configuration, or for `any`) to the leader.
async fn read_session(shared: Arc<Shared>, mut client: TcpStream, startup: &[u8], target: Target) {
    let mut auth = AuthLog::default();
    let mut candidates = read_candidates(&shared).into_iter();
    let fallback = target == Target::Any || shared.cfg.read_fallback == ReadFallback::Leader;
    let mut on_leader = false;
    loop {
        let backend = match candidates.next() {
            Some(b) => b,
            None if fallback && !on_leader => match wait_for_leader(&shared, None).await {
                Some(leader) => {
                    on_leader = true;
                    leader
                }
                None => break,
            },
            None => break,
        };
        // Once the client answered an authentication request, another server is no option.
        if auth.client_involved {
            break;
        }
        let mut server = match connect(&shared, &backend).await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(member = %backend.name, error = %e, "cannot reach a server for reads; trying the next");
                continue;
            }
        };
        let relay = start(&mut client, &mut server, startup, &mut auth, false);
        match tokio::time::timeout(shared.cfg.startup_timeout, relay).await {
            Ok(Ok(ready)) => {
                decision(
                    &shared,
                    target,
                    if on_leader {
                        "leader_fallback"
                    } else {
                        "replica"
                    },
                );
                relay::forward(shared, client, server, ready, backend, target, false).await;
                return;
            }
            Ok(Err(StartFailure::Refused(bytes))) => {
                send_and_close(&mut client, &bytes).await;
                return;
            }
            Ok(Err(StartFailure::Client(_))) => return,
            Ok(Err(e)) => {
                tracing::warn!(member = %backend.name, error = %e, "startup on a read server failed; trying the next");
            }
            Err(_) => {
                let message = format!(
                    "{} did not complete the startup within {:?}",
                    backend.name, shared.cfg.startup_timeout
                );
                refuse(
                    &shared,
                    &mut client,
                    CONNECTION_FAILURE,
                    "startup_timeout",
                    &message,
                )
                .await;
                return;
            }
        }
    }
    decision(&shared, target, "refused");
    let message = if fallback {
        format!("pgbaton router: cannot connect now: no replica within read.max_lag ({} bytes) and no leader within {:?}", shared.cfg.max_lag_bytes, shared.cfg.switchover_wait)
    } else {
        format!("pgbaton router: cannot connect now: no replica within read.max_lag ({} bytes) and read.fallback is refuse", shared.cfg.max_lag_bytes)
    };
    refuse(
        &shared,
        &mut client,
        CANNOT_CONNECT_NOW,
        "no_replica",
        &message,
    )
    .await;
}
