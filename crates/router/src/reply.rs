//! What the router answers a client it does not forward: a PostgreSQL ErrorResponse with
//! the SQLSTATE of the situation, sent so that the client reads it before the close.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::Metrics;
use crate::protocol::error_response;
use crate::shared::Shared;

pub(crate) use crate::protocol::sqlstate::{
    CANNOT_CONNECT_NOW, CONNECTION_FAILURE, INVALID_PARAMETER, PROTOCOL_VIOLATION,
};

/// Send `bytes` and close without a reset: half-close, then discard what the client still
/// sends for a moment (closing a socket with unread input would reset the connection, and
/// the client could lose the ErrorResponse).
pub(crate) async fn send_and_close<S>(client: &mut S, bytes: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if client.write_all(bytes).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        // On the heap: an array here would make every session's task 4 KiB larger.
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

/// Refuse the client with an ErrorResponse and count it.
pub(crate) async fn refuse<S>(
    shared: &Shared,
    client: &mut S,
    code: &str,
    reason: &'static str,
    message: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::info!(reason, %message, "refusing a client connection");
    Metrics::count(&shared.metrics.refusals, &[("reason", reason)]);
    send_and_close(client, &error_response(code, message)).await;
}
