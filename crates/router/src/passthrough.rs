//! `tls: passthrough`: a client's SSLRequest is handed to a server picked by the listener's
//! role alone (write: the leader, waiting up to `write.switchover_wait` for one; read: the
//! readable replicas in balancing order, then the leader when `read.fallback` allows), the
//! server's one-byte answer (`S`, `N`, or the start of an ErrorResponse) is relayed to the
//! client, and then bytes are forwarded both ways untouched: TLS runs end to end between
//! the client and PostgreSQL. The router sees none of the startup, so the read-only check
//! of write sessions and the startup's role options do not apply, and the session's cancel
//! key is unknown to the router; a write session is still closed when the leader changes.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ReadFallback;
use crate::handshake::Ready;
use crate::protocol::{Target, SSL_REQUEST};
use crate::relay;
use crate::reply::{refuse, CANNOT_CONNECT_NOW};
use crate::retry::{Failure, Next, Retry};
use crate::route::{connect, decision};
use crate::route::{
    leader_wait, no_leader_reason, pause_or_leader_change, read_candidates, wait_for_leader,
    wait_for_leader_until,
};
use crate::shared::Shared;
use crate::topology::Backend;

/// The SSLRequest packet: length 8, code 1234.5679.
fn ssl_request() -> [u8; 8] {
    let mut packet = [0u8; 8];
    packet[..4].copy_from_slice(&8u32.to_be_bytes());
    packet[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    packet
}

/// Serve a client whose first packet was an SSLRequest (not yet answered).
pub(crate) async fn serve(shared: Arc<Shared>, mut client: TcpStream, listener: Target) {
    let picked = match listener {
        Target::Write => pick_leader(&shared).await,
        Target::Read | Target::Any => pick_reader(&shared, listener).await,
    };
    let (backend, mut server, label) = match picked {
        Ok(picked) => picked,
        Err(why) => {
            decision(&shared, listener, "refused");
            // libpq reads an ErrorResponse in place of the one-byte answer and reports it.
            let message = format!("pgbaton router: cannot connect now: {why}");
            refuse(
                &shared,
                &mut client,
                CANNOT_CONNECT_NOW,
                "no_server",
                &message,
            )
            .await;
            return;
        }
    };
    let exchange = async {
        server.write_all(&ssl_request()).await?;
        let mut answer = [0u8; 1];
        server.read_exact(&mut answer).await?;
        Ok::<u8, std::io::Error>(answer[0])
    };
    let answer = match tokio::time::timeout(shared.cfg.startup_timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::warn!(member = %backend.name, error = %e, "the server failed to answer a passed-through SSLRequest");
            return;
        }
        Err(_) => {
            tracing::warn!(member = %backend.name, timeout = ?shared.cfg.startup_timeout, "the server did not answer a passed-through SSLRequest in time");
            return;
        }
    };
    if let Err(e) = client.write_all(&[answer]).await {
        tracing::debug!(error = %e, "client left before the SSLRequest answer");
        return;
    }
    tracing::debug!(member = %backend.name, answer = %char::from(answer), "SSLRequest passed through");
    decision(&shared, listener, label);
    let ready = Ready {
        held: Vec::new(),
        key: None,
        opaque: true,
    };
    let close_when_not_leader = listener == Target::Write;
    relay::forward(
        shared,
        client,
        server,
        ready,
        backend,
        listener,
        close_when_not_leader,
        None,
    )
    .await;
}

type Picked = (Backend, TcpStream, &'static str);

/// The leader, tried again until it accepts a TCP connection within the leader wait (a
/// switchover or failover in progress; retry.rs).
async fn pick_leader(shared: &Shared) -> Result<Picked, String> {
    let bound = leader_wait(shared);
    let mut retry = Retry::new(tokio::time::Instant::now(), bound);
    let mut why = None;
    loop {
        let Some(leader) = wait_for_leader_until(shared, None, retry.deadline()).await else {
            break;
        };
        match connect(shared, &leader).await {
            Ok(server) => return Ok((leader, server, "leader")),
            Err(e) => {
                if retry.failures == 0 {
                    tracing::info!(leader = %leader.name, error = %e, "cannot reach the leader; trying again within the leader wait");
                }
                why = Some(e);
            }
        }
        match retry.failed(Failure::Unreachable, tokio::time::Instant::now()) {
            Next::Wait(pause) => pause_or_leader_change(shared, pause).await,
            Next::GiveUp => break,
        }
    }
    Err(match why {
        Some(e) => format!("no leader accepted a connection within {bound:?} (last attempt: {e})"),
        None => no_leader_reason(shared, bound),
    })
}

/// The first reachable readable replica, else the leader when the fallback allows.
async fn pick_reader(shared: &Arc<Shared>, target: Target) -> Result<Picked, String> {
    for backend in read_candidates(shared) {
        match connect(shared, &backend).await {
            Ok(server) => return Ok((backend, server, "replica")),
            Err(e) => {
                tracing::warn!(member = %backend.name, error = %e, "cannot reach a server for reads; trying the next");
            }
        }
    }
    let fallback = target == Target::Any || shared.cfg.read_fallback == ReadFallback::Leader;
    if !fallback {
        return Err(format!(
            "no replica within read.max_lag ({} bytes) and read.fallback is refuse",
            shared.cfg.max_lag_bytes
        ));
    }
    match wait_for_leader(shared, None).await {
        Some(leader) => connect(shared, &leader)
            .await
            .map(|server| (leader, server, "leader_fallback")),
        None => Err(format!(
            "no replica within read.max_lag ({} bytes) and no leader within {:?}",
            shared.cfg.max_lag_bytes,
            leader_wait(shared)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_request_bytes_match_the_protocol() {
        assert_eq!(ssl_request(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    }
}
