//! The first moments of a client connection, bounded together by `startup_timeout`: read
//! its first packet; forward a CancelRequest; hand an SSLRequest to `passthrough` (`tls:
//! passthrough`) or answer it `S`, run the TLS handshake and read the startup inside TLS
//! (`tls: terminate`); refuse a plain-text startup when `tls_required` is on. What is left
//! is a startup to route, over plain TCP or TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::client::Client;
use crate::config::TlsMode;
use crate::metrics::Metrics;
use crate::protocol::{error_response, FirstPacket, StartupMessage, Target};
use crate::reply::{refuse, send_and_close, PROTOCOL_VIOLATION};
use crate::shared::Shared;
use crate::wire::read_first_packet;
use crate::{cancel, passthrough};

pub(crate) enum Opened {
    /// A startup to route.
    Startup(Client, StartupMessage),
    /// Nothing more to do: a cancel was forwarded, a TLS session passed through, or the
    /// client was refused or dropped (logged and counted).
    Done,
}

/// The first packet, or None when the client was dropped (logged, counted, answered when it
/// sent garbage).
async fn first_packet<S>(
    stream: &mut S,
    return_ssl: bool,
    deadline: Instant,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<FirstPacket>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout_at(deadline, read_first_packet(stream, return_ssl)).await {
        Err(_) => {
            tracing::info!(%peer, timeout = ?shared.cfg.startup_timeout, "dropping a client that sent no startup packet in time");
            Metrics::count(&shared.metrics.client_errors, &[("reason", "timeout")]);
            None
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "dropping a client with a broken startup packet");
            Metrics::count(&shared.metrics.client_errors, &[("reason", e.reason())]);
            if e.reason() == "malformed" {
                let message = format!("invalid startup packet: {e}");
                send_and_close(stream, &error_response(PROTOCOL_VIOLATION, &message)).await;
            }
            None
        }
        Ok(Ok(packet)) => Some(packet),
    }
}

pub(crate) async fn open(
    mut tcp: TcpStream,
    peer: SocketAddr,
    listener: Target,
    shared: &Arc<Shared>,
) -> Opened {
    let deadline = Instant::now() + shared.cfg.startup_timeout;
    let mode = shared.cfg.tls;
    let return_ssl = mode != TlsMode::Refuse;
    let Some(first) = first_packet(&mut tcp, return_ssl, deadline, peer, shared).await else {
        return Opened::Done;
    };
    match first {
        FirstPacket::Cancel(key) => cancel::forward(shared, key).await,
        FirstPacket::Startup(startup) if shared.cfg.tls_required => {
            tracing::info!(%peer, user = %startup.user(), "refusing a plain-text startup: tls_required is on");
            refuse(
                shared,
                &mut tcp,
                PROTOCOL_VIOLATION,
                "tls_required",
                "TLS required: this pgbaton router accepts only encrypted sessions (connect with sslmode=require)",
            )
            .await;
        }
        FirstPacket::Startup(startup) => return Opened::Startup(Client::Plain(tcp), startup),
        FirstPacket::SslRequest if mode == TlsMode::Passthrough => {
            passthrough::serve(shared.clone(), tcp, listener).await
        }
        FirstPacket::SslRequest => return terminate(tcp, peer, deadline, shared).await,
        // read_first_packet answers GSSENCRequest itself and never returns it.
        FirstPacket::GssEncRequest => {}
    }
    Opened::Done
}

fn tls_outcome(shared: &Shared, outcome: &str) {
    Metrics::count(&shared.metrics.tls_handshakes, &[("outcome", outcome)]);
}

/// Answer `S`, run the handshake, and read the startup inside TLS.
async fn terminate(
    mut tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    shared: &Shared,
) -> Opened {
    let Some(acceptor) = shared.tls.clone() else {
        // Not reachable: `tls: terminate` always has an acceptor (Router::bind checks).
        tracing::warn!(%peer, "tls: terminate without a certificate loaded; dropping the client");
        return Opened::Done;
    };
    if let Err(e) = tcp.write_all(b"S").await {
        tracing::debug!(%peer, error = %e, "client left before the SSLRequest answer");
        return Opened::Done;
    }
    let mut tls = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake with a client failed");
            tls_outcome(shared, "failed");
            return Opened::Done;
        }
        Err(_) => {
            tracing::info!(%peer, timeout = ?shared.cfg.startup_timeout, "TLS handshake with a client did not finish in time");
            tls_outcome(shared, "timeout");
            return Opened::Done;
        }
    };
    tls_outcome(shared, "ok");
    match first_packet(&mut tls, false, deadline, peer, shared).await {
        Some(FirstPacket::Startup(startup)) => Opened::Startup(Client::Tls(Box::new(tls)), startup),
        Some(FirstPacket::Cancel(key)) => {
            cancel::forward(shared, key).await;
            Opened::Done
        }
        Some(FirstPacket::SslRequest | FirstPacket::GssEncRequest) | None => Opened::Done,
    }
}
