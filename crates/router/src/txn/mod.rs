//! The message-aware relay of a pooled client (`auth:` configured, unless a session-mode
//! session is handed to the kernel). It reads whole client messages (`frontend`), rewrites
//! prepared statement names (`tracker`), acquires a server connection when the client
//! sends something and has none, and — in transaction mode — gives the connection back to
//! the pool at every ReadyForQuery that leaves it idle with nothing in flight. Writes go out
//! as the sockets accept them (never blocking a read: a server streaming COPY OUT and a
//! client pipelining cannot deadlock the relay), with a bound on what waits in each
//! direction.
//!
//! Ends: the client leaves (Terminate or EOF) — its server connection is given back if
//! idle, rolled back first if a transaction is open, closed if a query is still running or
//! a batch is unsynced; the client breaks the protocol — FATAL 08P01 to it, the server
//! connection treated the same way; the server connection breaks — the client gets FATAL
//! 08006; the router stops.

pub(crate) mod frontend;
pub(crate) mod tracker;

use std::collections::BTreeMap;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::client::Client;

use crate::pool::server::ServerConn;
use crate::pool::PoolMode;
use crate::pooled::{acquire, Ctx};
use frontend::{message_len, parse, Frontend};
use tracker::{Statements, Tracker, Verdict};

/// Bytes waiting in one direction before the relay stops reading the other side.
const HIGH_WATER: usize = 256 * 1024;

/// An ErrorResponse with `severity` (ERROR or FATAL).
pub(crate) fn error_message(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    frontend::message(b'E', &[&body])
}

pub(crate) fn ready_for_query(status: u8) -> Vec<u8> {
    frontend::message(b'Z', &[&[status]])
}

/// `LISTEN ...` as a simple query (what transaction pooling cannot serve).
fn is_listen(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    let trimmed = text.trim_start();
    trimmed.len() >= 6
        && trimmed[..6].eq_ignore_ascii_case("listen")
        && trimmed[6..].starts_with(|c: char| c.is_whitespace())
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    ClientIdle,
    Stop,
}

/// The client's side of the relay. Plain TCP is read through the thread's scratch buffer
/// (`pump::poll_read_append`): a client's own buffer holds only an unfinished message, so
/// an idle client holds none, and a read never ends in `WouldBlock`. TLS goes through
/// tokio-rustls (which keeps its own buffers).
enum ClientIn {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<Client>),
}

enum ClientOut {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<Client>),
}

fn client_halves(client: Client) -> (ClientIn, ClientOut) {
    match client {
        Client::Plain(tcp) => {
            let (read, write) = tcp.into_split();
            (ClientIn::Tcp(read), ClientOut::Tcp(write))
        }
        tls => {
            let (read, write) = tokio::io::split(tls);
            (ClientIn::Tls(read), ClientOut::Tls(write))
        }
    }
}

impl ClientIn {
    /// Read what the client sent, appended to `buf`; Ok(0) at end of stream.
    async fn read_append(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| match self {
            ClientIn::Tcp(read) => crate::pump::poll_read_append(read.as_ref(), cx, buf),
            ClientIn::Tls(read) => crate::pump::poll_read_append_any(read, cx, buf),
        })
        .await
    }
}

impl AsyncWrite for ClientOut {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientOut::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            ClientOut::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientOut::Tcp(w) => Pin::new(w).poll_flush(cx),
            ClientOut::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientOut::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            ClientOut::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Read what the server sent, appended to `buf` (as `ClientIn::read_append`).
async fn read_server(
    read: Option<&mut OwnedReadHalf>,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<usize> {
    match read {
        Some(r) => {
            std::future::poll_fn(|cx| crate::pump::poll_read_append(r.as_ref(), cx, buf)).await
        }
        None => std::future::pending().await,
    }
}

async fn write_server(write: Option<&mut OwnedWriteHalf>, buf: &[u8]) -> std::io::Result<usize> {
    match write {
        Some(w) => w.write(buf).await,
        None => std::future::pending().await,
    }
}

/// The end of a backend message in `buf` (tag + length), None if incomplete.
fn backend_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(word) = buf.get(1..5) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([word[0], word[1], word[2], word[3]]) as usize;
    if length < 4 {
        return Err(());
    }
    Ok((buf.len() > length).then_some(length + 1))
}

/// Why the relay ended.
enum End {
    /// The client left (Terminate or EOF).
    ClientLeft,
    /// The client sent garbage: FATAL 08P01 with this text.
    Garbage(String),
    /// The server connection failed: the client gets FATAL 08006.
    ServerLost(String),
    /// A FATAL for the client (no server connection, idle timeout), raw bytes.
    Fatal(Vec<u8>),
    /// The client's socket failed, or the router stops.
    Gone,
}

/// Relay a pooled client until it leaves; `server` is its connection in session mode.
pub(crate) async fn relay(ctx: &mut Ctx, client: Client, mut server: Option<ServerConn>) {
    let (mut client_read, mut client_write) = client_halves(client);
    let mut cin = bytes::BytesMut::new();
    let mut cout = bytes::BytesMut::new();
    let mut sin = bytes::BytesMut::new();
    let mut sout: Vec<u8> = Vec::new();
    let mut tracker = Tracker::default();
    let mut statements = Statements::default();
    let mut stop = ctx.shared.stop.clone();
    let idle_timeout = ctx.pooling.pools.settings().client_idle_timeout;
    let mode = ctx.mode;
    // Since when the server has had work, and since when a transaction is open (/stats).
    let mut busy_since: Option<std::time::Instant> = None;
    let mut xact_since: Option<std::time::Instant> = None;
    if let Some(conn) = &server {
        ctx.attach(conn);
    }
    let end = 'relay: loop {
        // Client messages to the server, acquiring one when needed.
        while sout.len() < HIGH_WATER {
            let len = match message_len(&cin) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => break 'relay End::Garbage(e.to_string()),
            };
            let raw = cin.split_to(len);
            let parsed = match parse(&raw) {
                Ok(parsed) => parsed,
                Err(e) => break 'relay End::Garbage(e.to_string()),
            };
            if parsed == Frontend::Terminate {
                break 'relay End::ClientLeft;
            }
            let quiet = server.is_none() || (tracker.pending == 0 && !tracker.unsynced);
            if let Frontend::Query(text) = parsed {
                if mode == PoolMode::Transaction && quiet && is_listen(text) {
                    cout.extend_from_slice(&error_message(
                        "ERROR",
                        "0A000",
                        "LISTEN is not supported in transaction pooling mode (pool_mode: transaction); use a listener or database alias with pool_mode: session",
                    ));
                    cout.extend_from_slice(&ready_for_query(tracker.status));
                    continue;
                }
            }
            if server.is_none() {
                // Boxed: the relay's own state is what an idle client costs.
                match Box::pin(acquire(ctx)).await {
                    Ok(conn) => {
                        ctx.attach(&conn);
                        tracker = Tracker::default();
                        server = Some(conn);
                    }
                    Err(fatal) => break 'relay End::Fatal(fatal.bytes()),
                }
            }
            let Some(conn) = server.as_mut() else {
                continue;
            };
            if tracker.pending == 0 && !tracker.unsynced && busy_since.is_none() {
                let now = std::time::Instant::now();
                busy_since = Some(now);
                xact_since.get_or_insert(now);
            }
            tracker.client_message(
                &parsed,
                &raw,
                &mut statements,
                &mut conn.prepared,
                &mut sout,
            );
            ctx.queries += u64::from(matches!(parsed, Frontend::Query(_) | Frontend::Sync));
        }
        if cin.is_empty() && cin.capacity() > 0 {
            // An idle client holds no buffer.
            cin = bytes::BytesMut::new();
        }
        let idle_deadline = (!idle_timeout.is_zero() && (server.is_none() || tracker.idle()))
            .then(|| tokio::time::Instant::now() + idle_timeout);
        let event = {
            let (sr, sw) = match server.as_mut() {
                Some(conn) => (Some(&mut conn.read), Some(&mut conn.write)),
                None => (None, None),
            };
            let has_server = sr.is_some();
            tokio::select! {
                biased;
                _ = crate::shared::stopped(&mut stop) => Event::Stop,
                r = client_write.write(&cout), if !cout.is_empty() => Event::ClientWrote(r),
                r = write_server(sw, &sout), if has_server && !sout.is_empty() => Event::ServerWrote(r),
                r = read_server(sr, &mut sin), if has_server && cout.len() < HIGH_WATER => Event::ServerRead(r),
                r = client_read.read_append(&mut cin), if sout.len() < HIGH_WATER => Event::ClientRead(r),
                _ = async {
                    match idle_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Event::ClientIdle,
            }
        };
        match event {
            Event::Stop => break End::Gone,
            Event::ClientWrote(Ok(n)) if n > 0 => {
                let _ = cout.split_to(n);
                if cout.is_empty() {
                    cout = bytes::BytesMut::new();
                }
            }
            Event::ClientWrote(_) => break End::Gone,
            Event::ServerWrote(Ok(n)) if n > 0 => {
                ctx.bytes_to_server += n as u64;
                sout.drain(..n);
                if sout.is_empty() {
                    sout = Vec::new();
                }
            }
            Event::ServerWrote(r) => {
                break End::ServerLost(match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "closed".into(),
                })
            }
            Event::ServerRead(Ok(0)) => break End::ServerLost("the server closed the connection".into()),
            Event::ServerRead(Err(e)) => break End::ServerLost(e.to_string()),
            Event::ServerRead(Ok(n)) => {
                ctx.bytes_to_client += n as u64;
                let Some(conn) = server.as_mut() else {
                    continue;
                };
                loop {
                    let len = match backend_len(&sin) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(()) => break 'relay End::ServerLost("malformed message from the server".into()),
                    };
                    let raw = sin.split_to(len);
                    let tag = raw[0];
                    if tag == b'S' {
                        ctx.parameter_changed(conn, &raw[5..]);
                    }
                    if tracker.server_message(tag, &raw[5..]) == Verdict::Forward {
                        cout.extend_from_slice(&raw);
                    }
                    // Each ReadyForQuery that leaves no transaction open ends one.
                    if tag == b'Z' && raw.get(5) == Some(&b'I') {
                        ctx.transactions += 1;
                        if let Some(at) = xact_since.take() {
                            ctx.xact_time_us += at.elapsed().as_micros() as u64;
                        }
                    }
                    if tag == b'Z' {
                        if let Some(at) = busy_since.take() {
                            ctx.query_time_us += at.elapsed().as_micros() as u64;
                            if tracker.pending > 0 {
                                busy_since = Some(std::time::Instant::now());
                            }
                        }
                    }
                }
                if sin.is_empty() {
                    sin = bytes::BytesMut::new();
                }
                let release = mode == PoolMode::Transaction
                    && tracker.idle()
                    && sout.is_empty()
                    && sin.is_empty();
                if release {
                    if let Some(conn) = server.take() {
                        ctx.release(conn);
                    }
                }
            }
            Event::ClientRead(Ok(0)) => break End::ClientLeft,
            Event::ClientRead(Ok(_)) => {}
            Event::ClientRead(Err(_)) => break End::ClientLeft,
            Event::ClientIdle => {
                break End::Fatal(error_message(
                    "FATAL",
                    "57P05",
                    &format!(
                        "pgbaton router: closing an idle client connection (client_idle_timeout {idle_timeout:?})"
                    ),
                ))
            }
        }
    };
    // What is already due to the client goes first.
    if !cout.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_write.write_all(&cout)).await;
    }
    let farewell = match &end {
        End::Garbage(e) => {
            tracing::info!(pool = %ctx.key, error = %e, "closing a client that broke the protocol");
            Some(error_message(
                "FATAL",
                crate::session::PROTOCOL_VIOLATION,
                e,
            ))
        }
        End::ServerLost(e) => {
            tracing::info!(pool = %ctx.key, error = %e, "a server connection failed under a client; closing the client");
            Some(error_message(
                "FATAL",
                "08006",
                &format!("pgbaton router: the server connection failed: {e}"),
            ))
        }
        End::Fatal(bytes) => Some(bytes.clone()),
        End::ClientLeft | End::Gone => None,
    };
    if let Some(bytes) = farewell {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_write.write_all(&bytes)).await;
        let _ = client_write.shutdown().await;
    }
    let clean = !matches!(end, End::ServerLost(_) | End::Gone) && sout.is_empty() && sin.is_empty();
    if let Some(conn) = server.take() {
        if clean {
            Box::pin(ctx.leave(conn, &tracker)).await;
        } else {
            ctx.detach();
        }
    }
    ctx.flush_stats();
}

/// Session state a client may keep for the next server connection: the tracked parameters
/// (PgBouncer's track_extra_parameters), canonical name by lower-case name.
pub(crate) const TRACKED: [&str; 8] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "application_name",
    "standard_conforming_strings",
    "extra_float_digits",
    "search_path",
];

/// The canonical name of a tracked parameter.
pub(crate) fn tracked(name: &str) -> Option<&'static str> {
    TRACKED
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(name))
}

/// Desired parameter values of a client.
pub(crate) type Params = BTreeMap<String, String>;
