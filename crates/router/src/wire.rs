//! Reading the startup phase off a socket: the client's first packet (answering
//! GSSENCRequest with `N`, and SSLRequest too unless `tls: passthrough` or `tls: terminate`
//! asks for it to be returned unanswered, so that the server or the router's own TLS can
//! answer it; a refused client continues in plain text or gives up if it requires TLS), and
//! whole typed messages in both directions until the server's ReadyForQuery.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    message_body_length, parse_first_packet, startup_body_length, FirstPacket, ProtocolError,
};

/// Largest message accepted during the startup phase (authentication exchanges and
/// ParameterStatus are small; this only stops garbage from allocating gigabytes).
pub(crate) const MAX_STARTUP_MESSAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("more than one encryption request")]
    RepeatedNegotiation,
}

impl WireError {
    /// A short label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            WireError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
            WireError::Io(_) => "io",
            WireError::Protocol(_) | WireError::RepeatedNegotiation => "malformed",
        }
    }
}

/// Read packets until a StartupMessage or CancelRequest, refusing encryption requests; with
/// `pass_ssl` an SSLRequest is returned unanswered instead (`tls: passthrough|terminate`).
pub(crate) async fn read_first_packet<S>(
    stream: &mut S,
    pass_ssl: bool,
) -> Result<FirstPacket, WireError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut negotiations = 0;
    loop {
        // Every first packet has its length and a code (8 bytes; an SSLRequest is no more):
        // read together, the rest after, two reads for a startup and one for a request.
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let len = startup_body_length([head[0], head[1], head[2], head[3]])?;
        let mut body = vec![0u8; len];
        body[..4].copy_from_slice(&head[4..]);
        stream.read_exact(&mut body[4..]).await?;
        match parse_first_packet(&body)? {
            FirstPacket::SslRequest if pass_ssl => return Ok(FirstPacket::SslRequest),
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                // libpq may ask for GSS encryption, then TLS, then start: at most two.
                negotiations += 1;
                if negotiations > 2 {
                    return Err(WireError::RepeatedNegotiation);
                }
                stream.write_all(b"N").await?;
            }
            packet => return Ok(packet),
        }
    }
}

/// One typed message (`tag`, length, body), kept as raw bytes for forwarding.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub raw: Vec<u8>,
}

impl Message {
    pub(crate) fn tag(&self) -> u8 {
        self.raw[0]
    }

    pub(crate) fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

pub(crate) async fn read_message<S>(stream: &mut S) -> Result<Message, WireError>
where
    S: AsyncRead + Unpin,
{
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = message_body_length(
        [header[1], header[2], header[3], header[4]],
        MAX_STARTUP_MESSAGE,
    )?;
    let mut raw = Vec::with_capacity(5 + len);
    raw.extend_from_slice(&header);
    raw.resize(5 + len, 0);
    stream.read_exact(&mut raw[5..]).await?;
    Ok(Message { raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PROTOCOL_V3;

    #[tokio::test]
    async fn ssl_request_is_refused_then_startup_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move { read_first_packet(&mut server, false).await });
        client
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("write");
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"N");
        let mut startup = vec![0, 0, 0, 13];
        startup.extend_from_slice(&PROTOCOL_V3.to_be_bytes());
        startup.extend_from_slice(b"u\0v\0\0");
        client.write_all(&startup).await.expect("write");
        let packet = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("parsed in time")
            .expect("join")
            .expect("startup");
        assert!(matches!(packet, FirstPacket::Startup(m) if m.param("u") == Some(&b"v"[..])));
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error_not_a_hang() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&[0, 0, 0, 40, 0, 3]).await.expect("write");
        drop(client);
        let err = read_first_packet(&mut server, false)
            .await
            .expect_err("truncated");
        assert_eq!(err.reason(), "closed");
    }

    #[tokio::test]
    async fn endless_negotiation_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        for _ in 0..3 {
            client
                .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await
                .expect("write");
        }
        let err = read_first_packet(&mut server, false)
            .await
            .expect_err("refused");
        assert!(matches!(err, WireError::RepeatedNegotiation));
    }
}
