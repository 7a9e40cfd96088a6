//! A client connection as the session code sees it: plain TCP, or TLS terminated by the
//! router (`tls: terminate`). Both read and write the same way during the startup; at the
//! hand-over each goes to its own relay (`relay::forward_client`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub(crate) enum Client {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and most clients are plain.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Client {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Client::Tls(_))
    }

    /// The common name of the certificate the client presented, which the TLS handshake
    /// verified against `tls_cafile` (`Some("")` when it has none; `None`: no certificate).
    pub(crate) fn certificate_name(&self) -> Option<String> {
        let Client::Tls(tls) = self else {
            return None;
        };
        let leaf = tls.get_ref().1.peer_certificates()?.first()?;
        let name = x509_parser::parse_x509_certificate(leaf.as_ref())
            .ok()
            .and_then(|(_, cert)| {
                cert.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_string))
            });
        Some(name.unwrap_or_default())
    }
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_flush(cx),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Client::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Client::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
