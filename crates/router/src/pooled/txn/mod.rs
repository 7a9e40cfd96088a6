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
use crate::pooled::ryw::acquire;
use crate::pooled::Ctx;
use crate::protocol::Target;
use crate::topology::Backend;
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
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let word = &text[start..];
    word.len() > 6 && word[..6].eq_ignore_ascii_case(b"listen") && word[6].is_ascii_whitespace()
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    ClientIdle,
    /// The server connection's member stopped being the leader, or (session mode, idle)
    /// a switchover holds the write traffic.
    Handover,
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

/// `n` bytes written from the front of `buf`; an emptied buffer goes back to the thread's
/// spares (an idle client holds none).
fn drain_front(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() {
        crate::spare::give_vec(std::mem::take(buf));
    } else {
        buf.drain(..n);
    }
}

/// `drain_front` for a `BytesMut` (the client's output).
fn consume_front(buf: &mut bytes::BytesMut, n: usize) {
    bytes::Buf::advance(buf, n);
    if buf.is_empty() {
        crate::spare::give_bytes(std::mem::take(buf));
    }
}

/// A session-mode client that may move to another server connection now: nothing in flight,
/// no transaction open, no session state the router cannot carry.
fn movable(ctx: &Ctx, tracker: &Tracker, sout: &[u8], sin: &[u8]) -> bool {
    ctx.mode == PoolMode::Session
        && ctx.unmovable.is_none()
        && tracker.idle()
        && sout.is_empty()
        && sin.is_empty()
}

/// The most a transaction sends before its first answer that the relay keeps to run it again.
const REPLAY_MAX: usize = 64 * 1024;

/// An ErrorResponse that says the server ran nothing of what it was sent: 57P03 (cannot
/// connect now), or the FATAL a backend raises when it notices, waiting for the client's next
/// message, that its postmaster died. A 57P01 of a shutdown may interrupt a statement that
/// already committed (a simple query commits before its CommandComplete), so it is not
/// retried.
fn retryable(body: &[u8]) -> bool {
    let (code, message) = crate::pool::server::error_fields(body);
    code == "57P03" || (code == "57P01" && message.contains("unexpected postmaster exit"))
}

/// An ErrorResponse body with severity FATAL or PANIC.
fn is_fatal(body: &[u8]) -> bool {
    body.split(|b| *b == 0).any(|field| {
        matches!(field.split_first(), Some((b'S' | b'V', v)) if v == b"FATAL" || v == b"PANIC")
    })
}

/// Resolves when the write server connection to `backend` must be given up: its member is
/// no longer the leader, or (`idle_session`: an idle session-mode client) a switchover holds
/// the write traffic. Polled only while the client holds a connection to `backend`.
async fn handover(
    shared: std::sync::Arc<crate::shared::Shared>,
    backend: Backend,
    idle_session: bool,
) {
    let backend = &backend;
    let mut leader = shared.leader.clone();
    let mut hold = shared.hold.clone();
    loop {
        // Both marked seen on every turn: a change left unseen would wake this loop again
        // at once, forever.
        let moved = leader.borrow_and_update().as_ref() != Some(backend);
        let held = *hold.borrow_and_update();
        if moved || (idle_session && held) {
            return;
        }
        let changed = tokio::select! {
            r = leader.changed() => r,
            r = hold.changed(), if idle_session => r,
        };
        if changed.is_err() {
            // The router is going away; the stop signal ends the relay.
            return std::future::pending().await;
        }
    }
}

/// A running [`handover`] watch and what it watches.
struct Watcher {
    backend: Backend,
    idle_session: bool,
    /// Polled only when it woke the task (`Rare`).
    fired: crate::rare::Rare<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// An idle session-mode session gives up its write server connection for a handover: its
/// next statement waits for the new leader (`acquire`) and runs there with the client's
/// parameters and prepared statements. A session taken out of the kernel first reads what
/// it holds on the old server (`takeout::carried_state`). Returns the connection when the
/// session cannot move (it then holds state the router cannot carry: `ctx.unmovable`).
async fn give_up(
    ctx: &mut Ctx,
    mut conn: ServerConn,
    statements: &mut Statements,
) -> Option<ServerConn> {
    if ctx.kernel.take().is_some() {
        let asked = crate::takeout::carried_state(&mut conn);
        match tokio::time::timeout(ctx.shared.cfg.startup_timeout, asked).await {
            Ok(Ok(carried)) => {
                tracing::debug!(pool = %ctx.key, parameters = carried.params.len(), statements = carried.statements.len(), "the state of a session taken out of the kernel moves with it");
                for (name, value) in carried.params {
                    ctx.params.insert(name, value);
                }
                for (name, definition) in carried.statements {
                    statements.import(name, &definition);
                }
            }
            Ok(Err(what)) => ctx.unmovable = Some(what),
            Err(_) => {
                ctx.unmovable = Some("state the old leader did not report in time".into());
            }
        }
    }
    if ctx.unmovable.is_some() {
        return Some(conn);
    }
    let still_leader = ctx.shared.leader.borrow().as_ref() == Some(&conn.backend);
    tracing::info!(pool = %ctx.key, from = %conn.backend.name, still_leader, "moving an idle session to the new leader");
    ctx.release(conn);
    None
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

/// Relay a pooled client until it leaves; `server` is its connection in session mode (in
/// the transaction status `ctx.resumed` gives, with what the client already sent, for a
/// session taken out of the kernel).
pub(crate) async fn relay(ctx: &mut Ctx, client: Client, mut server: Option<ServerConn>) {
    let (status, held) = ctx.resumed.take().map_or((b'I', Vec::new()), |r| *r);
    let (mut client_read, mut client_write) = client_halves(client);
    let mut cin = bytes::BytesMut::from(&held[..]);
    drop(held);
    let mut cout = bytes::BytesMut::new();
    let mut sin = bytes::BytesMut::new();
    let mut sout: Vec<u8> = Vec::new();
    let mut tracker = Tracker::default();
    tracker.status = status;
    let mut statements = Statements::default();
    // One stop future for the whole relay (not one subscription per turn of the select).
    // Polled only when it woke the task (`Rare`): not at every message.
    let mut stop = ctx.shared.stop.clone();
    let mut stopped = crate::rare::Rare::new(async move { crate::stop::stopped(&mut stop).await });
    let idle_timeout = ctx.pooling.pools.settings().client_idle_timeout;
    let mode = ctx.mode;
    // Since when the server has had work, and since when a transaction is open (/stats).
    let mut busy_since: Option<std::time::Instant> = None;
    let mut xact_since: Option<std::time::Instant> = None;
    // The handover watch of the write server connection's member, kept from one transaction
    // to the next while the member (and `idle_session`) stay the same: one subscription, not
    // one per turn of the select.
    let mut watcher: Option<Watcher> = None;
    let mut idle_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // The client messages of a transaction begun from idle, while the server has not
    // answered any of them yet.
    let mut journal: Option<Vec<u8>> = None;
    if let Some(conn) = &server {
        ctx.attach(conn);
    }
    let end = 'relay: loop {
        // Client messages to the server, acquiring one when needed; read in place (`taken`),
        // consumed at once after the loop.
        let mut taken = 0;
        while sout.len() < HIGH_WATER {
            let len = match message_len(&cin[taken..]) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => break 'relay End::Garbage(e.to_string()),
            };
            // A session between transactions while a switchover holds the write traffic:
            // its next transaction waits for the new leader, as an idle session's does.
            let holding = *ctx.shared.hold.borrow();
            if holding
                && mode == PoolMode::Session
                && ctx.target == Target::Write
                && ctx.unmovable.is_none()
                && tracker.idle()
                && sout.is_empty()
                && sin.is_empty()
            {
                if let Some(conn) = server.take() {
                    server = Box::pin(give_up(ctx, conn, &mut statements)).await;
                }
            }
            let raw = &cin[taken..taken + len];
            taken += len;
            let parsed = match parse(raw) {
                Ok(parsed) => parsed,
                Err(e) => break 'relay End::Garbage(e.to_string()),
            };
            if parsed == Frontend::Terminate {
                break 'relay End::ClientLeft;
            }
            if mode == PoolMode::Session && ctx.unmovable.is_none() {
                let text = match parsed {
                    Frontend::Query(text) => Some(text),
                    Frontend::Parse { definition, .. } => definition.split(|b| *b == 0).next(),
                    _ => None,
                };
                ctx.unmovable = text.and_then(session_state);
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
            if let Some(ryw) = ctx.ryw.as_deref_mut().filter(|r| r.auto) {
                let text = match parsed {
                    Frontend::Query(text) => Some(text),
                    Frontend::Parse { definition, .. } => Some(definition),
                    _ => None,
                };
                if text.is_some_and(crate::pooled::ryw::mentions_synchronous_commit) {
                    ryw.maybe_async_commit = true;
                }
            }
            let show = |ryw: &&crate::pooled::ryw::ReadYourWrites| {
                ryw.auto
                    && matches!(parsed, Frontend::Query(text) if crate::pooled::ryw::is_show_token(text))
            };
            if let Some(ryw) = ctx.ryw.as_deref().filter(show) {
                if !quiet && tracker.pending > 0 {
                    // Answered once what was sent before it is (a pipelined Close, a
                    // transaction whose commit changes the token): back to the input.
                    // (Behind an unsynced extended batch nothing would answer: it goes
                    // to the server, which does not know the name.)
                    taken -= len;
                    break;
                }
                if quiet {
                    let status = if ryw.deferred_begin {
                        b'T'
                    } else {
                        tracker.status
                    };
                    cout.extend_from_slice(&crate::pooled::ryw::show_answer(ryw.token(), status));
                    continue;
                }
            }
            // The same SHOW through the extended protocol (pooled/show.rs).
            if let Some(ryw) = ctx
                .ryw
                .as_deref_mut()
                .filter(|r| r.auto && !matches!(parsed, Frontend::Query(_)))
            {
                if !quiet
                    && tracker.pending > 0
                    && !tracker.unsynced
                    && ryw.local_show.wants(&parsed)
                {
                    // Answered once the server has answered the batches before it.
                    taken -= len;
                    break;
                }
                let token = ryw.token();
                let status = if ryw.deferred_begin {
                    b'T'
                } else {
                    tracker.status
                };
                let step = ryw
                    .local_show
                    .message(&parsed, quiet, token, status, &mut cout);
                if step == crate::pooled::show::Step::Answered {
                    continue;
                }
            }
            if server.is_none() && mode == PoolMode::Transaction {
                // What needs no server is answered here, so that it holds none: a Close
                // (tokio-postgres closes a dropped statement between transactions, and the
                // next transaction, pipelined behind it, must be routed on its own), a Sync
                // ending such a batch, a Flush.
                let deferred = ctx.ryw.as_ref().is_some_and(|r| r.deferred_begin);
                match parsed {
                    Frontend::Close { kind, name } => {
                        if kind == b'S' && !name.is_empty() {
                            statements.forget(name);
                        }
                        cout.extend_from_slice(&frontend::message(b'3', &[]));
                        continue;
                    }
                    Frontend::Sync => {
                        cout.extend_from_slice(&ready_for_query(if deferred {
                            b'T'
                        } else {
                            b'I'
                        }));
                        continue;
                    }
                    Frontend::Flush => continue,
                    _ => {}
                }
            }
            if server.is_none() {
                // The auto listener: this transaction's first message says where it goes.
                let session_read_only =
                    ctx.ryw.as_ref().is_some_and(|r| r.auto) && ctx.session_read_only();
                let mut routed = None;
                let mut begin_first = false;
                if let Some(ryw) = ctx.ryw.as_deref_mut().filter(|r| r.auto) {
                    match crate::pooled::ryw::route(&parsed, session_read_only, ryw.deferred_begin)
                    {
                        crate::pooled::ryw::Route::Defer => {
                            ryw.deferred_begin = true;
                            cout.extend_from_slice(&crate::pooled::ryw::begin_answer());
                            continue;
                        }
                        route => {
                            // `acquire` runs the BEGIN first.
                            begin_first = ryw.deferred_begin;
                            routed = Some(route);
                        }
                    }
                }
                tracing::trace!(pool = %ctx.key, ?routed, session_read_only, "routing a transaction");
                match routed {
                    Some(crate::pooled::ryw::Route::Read) => ctx.route(Target::Read),
                    Some(_) => ctx.route(Target::Write),
                    None => {}
                }
                // An idle connection that fits, taken at once; else the whole `acquire`,
                // boxed: the relay's own state is what an idle client costs. (Reads of
                // read-your-writes ask replicas, and a deferred BEGIN runs first: `acquire`.)
                let ryw_work = begin_first || ctx.ryw.is_some() && ctx.target != Target::Write;
                let quick = if ryw_work {
                    None
                } else {
                    crate::pooled::acquire_now(ctx)
                };
                let got = match quick {
                    Some(conn) => Ok(conn),
                    None => Box::pin(acquire(ctx)).await,
                };
                match got {
                    Ok(conn) => {
                        ctx.attach(&conn);
                        tracker = Tracker::default();
                        if begin_first {
                            tracker.status = b'T';
                        }
                        server = Some(conn);
                    }
                    Err(fatal) => break 'relay End::Fatal(fatal.bytes()),
                }
            }
            let Some(conn) = server.as_mut() else {
                continue;
            };
            // A transaction starts from idle: keep what it sends until the server answers,
            // to run it on the next server connection if this one turns out dead.
            if journal.is_none() && tracker.idle() && sout.is_empty() && sin.is_empty() {
                journal = Some(crate::spare::vec());
            }
            if let Some(j) = journal.as_mut() {
                if j.len() + raw.len() <= REPLAY_MAX {
                    j.extend_from_slice(raw);
                } else {
                    journal = None;
                }
            }
            if tracker.pending == 0 && !tracker.unsynced && busy_since.is_none() {
                let now = std::time::Instant::now();
                busy_since = Some(now);
                xact_since.get_or_insert(now);
            }
            if sout.capacity() == 0 {
                sout = crate::spare::vec();
            }
            tracker.client_message(&parsed, raw, &mut statements, &mut conn.prepared, &mut sout);
            ctx.queries += u64::from(matches!(parsed, Frontend::Query(_) | Frontend::Sync));
        }
        if taken == cin.len() {
            if cin.capacity() > 0 {
                // An idle client holds no buffer.
                crate::spare::give_bytes(std::mem::take(&mut cin));
            }
        } else {
            bytes::Buf::advance(&mut cin, taken);
        }
        let idle_deadline = (!idle_timeout.is_zero() && (server.is_none() || tracker.idle()))
            .then(|| tokio::time::Instant::now() + idle_timeout);
        // The client_idle_timeout timer, on the heap and only when one is configured: the
        // relay's own state is what an idle client costs.
        if let Some(at) = idle_deadline {
            match idle_timer.as_mut() {
                Some(timer) => timer.as_mut().reset(at),
                None => idle_timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        // The write server connection's member, watched for a handover.
        let current = server
            .as_ref()
            .filter(|_| ctx.target == crate::protocol::Target::Write)
            .map(|c| &c.backend);
        // An idle session-mode session gives up its server at a switchover's hold: moved
        // when it can be, else closed naming the switchover (before the old leader stops).
        let idle_session =
            mode == PoolMode::Session && tracker.idle() && sout.is_empty() && sin.is_empty();
        if let Some(backend) = current {
            if !watcher
                .as_ref()
                .is_some_and(|w| &w.backend == backend && w.idle_session == idle_session)
            {
                watcher = Some(Watcher {
                    backend: backend.clone(),
                    idle_session,
                    fired: crate::rare::Rare::new(Box::pin(handover(
                        ctx.shared.clone(),
                        backend.clone(),
                        idle_session,
                    ))),
                });
            }
        }
        let watching = current.is_some();
        // What is due goes out now, without a turn of the select: a non-blocking write
        // that takes it all (the usual case) saves the select's wake-up and the polling of
        // every branch that comes with it; what a full socket leaves waits in the select.
        if let Some(conn) = server.as_mut().filter(|_| !sout.is_empty()) {
            match conn.write.try_write(&sout) {
                Ok(n) if n > 0 => {
                    ctx.bytes_to_server += n as u64;
                    drain_front(&mut sout, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => break End::ServerLost(e.to_string()),
                Ok(_) => break End::ServerLost("closed".into()),
            }
        }
        if let (ClientOut::Tcp(write), false) = (&client_write, cout.is_empty()) {
            match write.try_write(&cout) {
                Ok(n) if n > 0 => consume_front(&mut cout, n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) | Ok(_) => break End::Gone,
            }
        }
        let event = {
            let (sr, sw) = match server.as_mut() {
                Some(conn) => {
                    let conn = &mut **conn;
                    (Some(&mut conn.read), Some(&mut conn.write))
                }
                None => (None, None),
            };
            let has_server = sr.is_some();
            tokio::select! {
                biased;
                _ = &mut stopped => Event::Stop,
                r = client_write.write(&cout), if !cout.is_empty() => Event::ClientWrote(r),
                r = write_server(sw, &sout), if has_server && !sout.is_empty() => Event::ServerWrote(r),
                r = read_server(sr, &mut sin), if has_server && cout.len() < HIGH_WATER => Event::ServerRead(r),
                r = client_read.read_append(&mut cin), if sout.len() < HIGH_WATER => Event::ClientRead(r),
                _ = async {
                    match idle_timer.as_mut() {
                        Some(timer) => timer.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if idle_deadline.is_some() => Event::ClientIdle,
                _ = async {
                    match watcher.as_mut() {
                        Some(w) => (&mut w.fired).await,
                        None => std::future::pending().await,
                    }
                }, if watching => Event::Handover,
            }
        };
        match event {
            Event::Stop => break End::Gone,
            Event::ClientWrote(Ok(n)) if n > 0 => consume_front(&mut cout, n),
            Event::ClientWrote(_) => break End::Gone,
            Event::ServerWrote(Ok(n)) if n > 0 => {
                ctx.bytes_to_server += n as u64;
                drain_front(&mut sout, n);
            }
            Event::ServerWrote(r) => {
                break End::ServerLost(match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "closed".into(),
                })
            }
            Event::Handover => {
                watcher = None;
                let Some(conn) = server.take() else {
                    continue;
                };
                let idle = tracker.idle() && sout.is_empty() && sin.is_empty();
                let conn = if idle && mode == PoolMode::Session && ctx.unmovable.is_none() {
                    match Box::pin(give_up(ctx, conn, &mut statements)).await {
                        None => continue,
                        Some(kept) => kept,
                    }
                } else {
                    conn
                };
                ctx.kernel = None;
                let name = conn.backend.name.clone();
                server = Some(conn);
                break End::Fatal(error_message(
                    "FATAL",
                    "57P01",
                    &match (&ctx.unmovable, idle) {
                        (Some(state), true) => format!(
                            "pgbaton router: switchover or failover: {name} stops being the leader, and this session holds state the router cannot carry to the new leader ({state}); connect again"
                        ),
                        _ => format!(
                            "pgbaton router: failover: {name} is no longer the leader; the transaction in progress on it was ended (not committed unless its COMMIT was acknowledged); connect again, new connections wait for the new leader"
                        ),
                    },
                ));
            }
            Event::ServerRead(Ok(0) | Err(_)) if movable(ctx, &tracker, &sout, &sin) => {
                // An idle session's server went away (its node failed, or it was stopped):
                // the next statement goes to the leader the DCS names then.
                if let Some(conn) = server.take() {
                    tracing::info!(pool = %ctx.key, from = %conn.backend.name, "an idle session's server connection closed; the session continues on the next server connection");
                    ctx.detach();
                }
            }
            Event::ServerRead(Ok(0)) => break End::ServerLost("the server closed the connection".into()),
            Event::ServerRead(Err(e)) => break End::ServerLost(e.to_string()),
            Event::ServerRead(Ok(n)) => {
                ctx.bytes_to_client += n as u64;
                let was_idle = movable(ctx, &tracker, &sout, &[]);
                let mut replay = None;
                let Some(conn) = server.as_mut() else {
                    continue;
                };
                // Whole messages are read in place (`at`), consumed at once after the loop.
                let mut at = 0;
                let mut dropped = false;
                if cout.capacity() == 0 {
                    cout = crate::spare::bytes();
                }
                cout.reserve(sin.len());
                loop {
                    let len = match backend_len(&sin[at..]) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(()) => break 'relay End::ServerLost("malformed message from the server".into()),
                    };
                    let raw = &sin[at..at + len];
                    at += len;
                    let tag = raw[0];
                    if let Some(sent) = journal.take() {
                        if tag == b'E' && raw.get(5..).is_some_and(is_fatal) && retryable(&raw[5..]) {
                            // The server ended the connection before it ran anything of
                            // the transaction (a dead postmaster noticed when it read the
                            // first message): it runs on the next server connection.
                            tracing::info!(pool = %ctx.key, from = %conn.backend.name, "the server ended the connection before the transaction ran; running it on the next server connection");
                            replay = Some(sent);
                            break;
                        }
                        crate::spare::give_vec(sent);
                    }
                    if was_idle && tag == b'E' && raw.get(5..).is_some_and(is_fatal) {
                        // The server ends an idle session (a shutdown: 57P01): not this
                        // client's business, it moves to the next server connection.
                        tracing::info!(pool = %ctx.key, from = %conn.backend.name, "the server ended an idle session; the session continues on the next server connection");
                        dropped = true;
                        ctx.detach();
                        server = None;
                        break;
                    }
                    if tag == b'S' {
                        ctx.parameter_changed(conn, &raw[5..]);
                    }
                    let forward = tracker.server_message(tag, &raw[5..]) == Verdict::Forward;
                    if forward {
                        cout.extend_from_slice(raw);
                    }
                    // Each ReadyForQuery that leaves no transaction open ends one.
                    if tag == b'Z' && raw.get(5) == Some(&b'I') {
                        ctx.transactions += 1;
                        if let Some(since) = xact_since.take() {
                            ctx.xact_time_us += since.elapsed().as_micros() as u64;
                        }
                    }
                    if tag == b'Z' {
                        if let Some(since) = busy_since.take() {
                            ctx.query_time_us += since.elapsed().as_micros() as u64;
                            if tracker.pending > 0 {
                                busy_since = Some(std::time::Instant::now());
                            }
                        }
                    }
                }
                if dropped || at == sin.len() {
                    crate::spare::give_bytes(std::mem::take(&mut sin));
                } else {
                    bytes::Buf::advance(&mut sin, at);
                }
                if let Some(sent) = replay {
                    sin.clear();
                    sout.clear();
                    ctx.detach();
                    server = None;
                    let mut conn = match Box::pin(acquire(ctx)).await {
                        Ok(conn) => conn,
                        Err(fatal) => break 'relay End::Fatal(fatal.bytes()),
                    };
                    ctx.attach(&conn);
                    tracker = Tracker::default();
                    let mut rest: &[u8] = &sent;
                    while let Ok(Some(len)) = message_len(rest) {
                        let (raw, tail) = rest.split_at(len);
                        rest = tail;
                        if let Ok(parsed) = parse(raw) {
                            tracker.client_message(
                                &parsed,
                                raw,
                                &mut statements,
                                &mut conn.prepared,
                                &mut sout,
                            );
                        }
                    }
                    journal = Some(sent);
                    server = Some(conn);
                    continue;
                }
                // The auto listener: a transaction ended on the leader, and its ReadyForQuery
                // (last in `cout`) waits for the client's new token.
                if ctx.ryw.as_ref().is_some_and(|r| r.auto)
                    && ctx.target == Target::Write
                    && tracker.idle()
                    && sout.is_empty()
                    && sin.is_empty()
                    && cout.ends_with(crate::pooled::ryw::READY_IDLE)
                {
                    Box::pin(crate::pooled::ryw::token_before_ready(ctx, &mut server, &mut cout)).await;
                }
                if server.is_none() {
                    continue;
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
    let lost = server.as_ref().map(|c| c.backend.name.clone());
    // What is already due to the client goes first.
    if !cout.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_write.write_all(&cout)).await;
    }
    let farewell = match &end {
        End::Garbage(e) => {
            tracing::info!(pool = %ctx.key, error = %e, "closing a client that broke the protocol");
            Some(error_message("FATAL", crate::reply::PROTOCOL_VIOLATION, e))
        }
        End::ServerLost(e) => {
            tracing::info!(pool = %ctx.key, error = %e, "a server connection failed under a client; closing the client");
            let text = match (&lost, ctx.target) {
                (Some(name), crate::protocol::Target::Write) => format!(
                    "pgbaton router: failover: the connection to the leader {name} was lost during this transaction ({e}); it did not complete unless its COMMIT was acknowledged; connect again, new connections wait for the new leader"
                ),
                _ => format!("pgbaton router: the server connection failed: {e}"),
            };
            Some(error_message("FATAL", "08006", &text))
        }
        End::Fatal(bytes) => Some(bytes.clone()),
        End::ClientLeft | End::Gone => None,
    };
    if let Some(bytes) = farewell {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_write.write_all(&bytes)).await;
        let _ = client_write.shutdown().await;
    }
    // Closed with the read half (one FIN at close), not shut down first: a system call less
    // per connection.
    if let ClientOut::Tcp(write) = client_write {
        write.forget();
    }
    drop(client_read);
    let clean = !matches!(end, End::ServerLost(_) | End::Gone) && sout.is_empty() && sin.is_empty();
    // The buffers go back to the thread's spares, for the next client.
    for buf in [cin, cout, sin] {
        crate::spare::give_bytes(buf);
    }
    crate::spare::give_vec(sout);
    if let Some(sent) = journal {
        crate::spare::give_vec(sent);
    }
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
pub(crate) const TRACKED: [&str; 9] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "application_name",
    "standard_conforming_strings",
    "extra_float_digits",
    "search_path",
    "default_transaction_read_only",
];

/// The canonical name of a tracked parameter.
pub(crate) fn tracked(name: &str) -> Option<&'static str> {
    TRACKED
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(name))
}

/// Parameters PostgreSQL 15 reports with ParameterStatus when they change (GUC_REPORT): a
/// `SET` of one is seen by the router and carried to the next server connection.
const REPORTED: [&str; 8] = [
    "client_encoding",
    "datestyle",
    "timezone",
    "time",
    "intervalstyle",
    "application_name",
    "standard_conforming_strings",
    "default_transaction_read_only",
];

/// Session state a statement leaves behind that the router cannot carry to another server
/// connection (a session-mode session that has any is not moved at a switchover or
/// failover): what it is, or None. Conservative: a statement that merely looks like one
/// counts. Tracked: `SET` of a reported parameter, `SET LOCAL`/`SET TRANSACTION`, `RESET`,
/// named prepared statements of the extended protocol, cursors without HOLD. Not tracked:
/// `SET` of other parameters, `set_config`, `LISTEN`, SQL `PREPARE`, `DECLARE ... WITH
/// HOLD`, temporary objects, session advisory locks, `LOAD`.
pub(crate) fn session_state(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text).to_ascii_lowercase();
    for (needle, what) in [
        ("pg_advisory_lock", "a session advisory lock"),
        ("pg_try_advisory_lock", "a session advisory lock"),
        ("set_config", "set_config"),
        ("temp", "a temporary object"),
        ("with hold", "a cursor WITH HOLD"),
    ] {
        if text.contains(needle) {
            return Some(what.to_string());
        }
    }
    for statement in text.split(';') {
        let mut words = statement.split_whitespace();
        let first = words.next().unwrap_or("");
        match first {
            "listen" => return Some("LISTEN".into()),
            "prepare" => return Some("PREPARE".into()),
            "load" => return Some("LOAD".into()),
            "set" => {
                let mut name = words.next().unwrap_or("");
                if name == "session" {
                    name = words.next().unwrap_or("");
                }
                let name = name.trim_matches('"');
                let name = name.split(['=', ' ']).next().unwrap_or(name);
                if name == "local" || name == "transaction" || REPORTED.contains(&name) {
                    continue;
                }
                return Some(format!("SET {name}"));
            }
            _ => {}
        }
    }
    None
}

/// Desired parameter values of a client.
pub(crate) type Params = BTreeMap<String, String>;

/// A client's parameters with their fingerprint, computed once after each change: a server
/// connection that matched the same fingerprint before matches again without comparing
/// every value (`ServerConn::fits`). Clients with the same parameters share one copy
/// (`SharedParams`); a change copies.
#[derive(Debug, Default)]
pub(crate) struct ClientParams {
    map: std::sync::Arc<Params>,
    print: std::sync::OnceLock<u128>,
}

impl ClientParams {
    pub(crate) fn new(map: Params) -> Self {
        ClientParams {
            map: std::sync::Arc::new(map),
            print: std::sync::OnceLock::new(),
        }
    }

    /// A set other clients use already, with its print.
    pub(crate) fn shared(map: std::sync::Arc<Params>, print: u128) -> Self {
        ClientParams {
            map,
            print: std::sync::OnceLock::from(print),
        }
    }

    pub(crate) fn map(&self) -> &std::sync::Arc<Params> {
        &self.map
    }

    pub(crate) fn get(&self, name: &str) -> Option<&String> {
        self.map.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub(crate) fn insert(&mut self, name: String, value: String) {
        if self.map.get(&name) == Some(&value) {
            return;
        }
        std::sync::Arc::make_mut(&mut self.map).insert(name, value);
        self.print = std::sync::OnceLock::new();
    }

    /// The 128-bit SipHash-1-3 of every name and value, keyed at random once per process:
    /// two different sets of parameters with the same print are not a practical concern,
    /// and clients cannot aim at another set's print.
    pub(crate) fn print(&self) -> u128 {
        *self.print.get_or_init(|| {
            use siphasher::sip128::Hasher128;
            use std::hash::Hash;
            static KEYS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
            let (k0, k1) = *KEYS.get_or_init(rand::random);
            let mut h = siphasher::sip128::SipHasher13::new_with_keys(k0, k1);
            self.map.hash(&mut h);
            h.finish128().as_u128()
        })
    }

    /// Use the copy other clients with the same parameters hold, if any (an idle client then
    /// costs a pointer, not a map of its own: most clients of a pool have the same ones).
    pub(crate) fn share(&mut self, shared: &crate::pooling::SharedParams) {
        self.map = shared.intern(self.map.clone(), self.print());
    }
}

#[cfg(test)]
mod tests {
    use super::{is_listen, retryable, session_state, ClientParams, Params};
    use crate::pooling::SharedParams;

    #[test]
    fn listen_is_seen_as_the_first_word_only() {
        assert!(is_listen(b"LISTEN jobs"));
        assert!(is_listen(b" \n listen\tjobs"));
        assert!(!is_listen(b"listen"));
        assert!(!is_listen(b"listener"));
        assert!(!is_listen(b"SELECT 1; LISTEN jobs"));
        assert!(!is_listen(b""));
    }

    #[test]
    fn client_parameters_have_one_print_per_content() {
        let of = |pairs: &[(&str, &str)]| {
            ClientParams::new(
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect::<Params>(),
            )
        };
        let a = of(&[("application_name", "app"), ("TimeZone", "UTC")]);
        let same = of(&[("TimeZone", "UTC"), ("application_name", "app")]);
        assert_eq!(a.print(), same.print());
        assert_ne!(a.print(), of(&[("application_name", "app")]).print());
        assert_ne!(
            a.print(),
            of(&[("application_name", "appTimeZone"), ("", "UTC")]).print()
        );
        // A change is a new print, computed again.
        let mut changed = of(&[("application_name", "app"), ("TimeZone", "UTC")]);
        let before = changed.print();
        changed.insert("TimeZone".into(), "Europe/Paris".into());
        assert_ne!(changed.print(), before);
        changed.insert("TimeZone".into(), "UTC".into());
        assert_eq!(changed.print(), before);
    }

    #[test]
    fn clients_with_the_same_parameters_share_one_copy_until_one_changes() {
        let shared = SharedParams::default();
        let of = |zone: &str| {
            let mut p = ClientParams::new(Params::from([
                ("TimeZone".to_string(), zone.to_string()),
                ("application_name".to_string(), "app".to_string()),
            ]));
            p.share(&shared);
            p
        };
        let (mut a, b, c) = (of("UTC"), of("UTC"), of("Asia/Tokyo"));
        assert!(std::sync::Arc::ptr_eq(&a.map, &b.map));
        assert!(!std::sync::Arc::ptr_eq(&a.map, &c.map));
        // The same value again changes nothing; another copies for this client only.
        a.insert("TimeZone".into(), "UTC".into());
        assert!(std::sync::Arc::ptr_eq(&a.map, &b.map));
        a.insert("TimeZone".into(), "Asia/Tokyo".into());
        assert_eq!(a.get("TimeZone").map(String::as_str), Some("Asia/Tokyo"));
        assert_eq!(b.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(a.print(), c.print());
        // A set whose clients are gone is not kept.
        drop((a, b, c));
        for i in 0..200 {
            let _ = of(&format!("zone {i}"));
        }
        assert!(shared.remembered() <= 65);
    }

    #[test]
    fn only_an_answer_that_ran_nothing_is_retried() {
        let body = |code: &str, text: &str| {
            let raw = super::error_message("FATAL", code, text);
            raw[5..].to_vec()
        };
        assert!(retryable(&body(
            "57P01",
            "terminating connection due to unexpected postmaster exit"
        )));
        assert!(retryable(&body(
            "57P03",
            "the database system is shutting down"
        )));
        assert!(!retryable(&body(
            "57P01",
            "terminating connection due to administrator command"
        )));
        assert!(!retryable(&body("08006", "connection failure")));
    }

    #[test]
    fn session_state_the_router_cannot_carry_is_seen() {
        for (sql, expected) in [
            ("SELECT 1", None),
            ("insert into t values (1)", None),
            ("UPDATE t SET x = 1 WHERE id = 2", None),
            ("BEGIN; SET LOCAL work_mem = '64MB'; COMMIT", None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("set application_name = 'a'", None),
            ("SET TIME ZONE 'UTC'", None),
            ("SET SESSION DateStyle TO ISO", None),
            ("reset all", None),
            ("SET search_path TO app", Some("SET search_path")),
            ("set work_mem='1GB'", Some("SET work_mem")),
            ("LISTEN jobs", Some("LISTEN")),
            ("select 1; listen jobs", Some("LISTEN")),
            ("PREPARE p AS SELECT 1", Some("PREPARE")),
            ("CREATE TEMP TABLE x (a int)", Some("a temporary object")),
            (
                "SELECT pg_advisory_lock(1)",
                Some("a session advisory lock"),
            ),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                Some("a cursor WITH HOLD"),
            ),
            ("select set_config('a.b', 'c', false)", Some("set_config")),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Some("SET characteristics"),
            ),
        ] {
            assert_eq!(session_state(sql.as_bytes()).as_deref(), expected, "{sql}");
        }
    }
}
