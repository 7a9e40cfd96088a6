//! A client of a pooled listener (an `auth:` section is configured): the router checks its
//! password itself (`auth`), finds its pool (database, user, target) and a server
//! connection there (`pool`), sends it the server's ParameterStatus, a BackendKeyData of
//! the router's own and ReadyForQuery, and then either hands the socket pair to the kernel
//! (session mode, plain TCP, kernel forwarding available: the server connection lives as
//! long as the session, as without pooling) or relays messages itself (`txn`). Startup
//! parameters the pool cannot keep per client are refused as PgBouncer refuses them.

mod leader;
mod replication;
pub(crate) mod ryw;
pub(crate) mod show;
pub(crate) mod txn;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::Instrument;

use rand::RngCore;
use tokio::io::AsyncWriteExt;

use crate::aliases::DatabaseAlias;
use crate::auth::{authenticate, Peer, QueryLeader, Refusal};
use crate::client::Client;
use crate::handshake::Ready;
use crate::metrics::Metrics;
use crate::pool::server::{login_within, LoginError, ServerConn, ServerLogin};
use crate::pool::{Checkout, PoolKey, PoolMode, PoolStats, Report, Slot};
use crate::pooled::txn::{error_message, ready_for_query, tracked, ClientParams, Params};
use crate::pooling::{CancelTarget, ClientEntry, ClientNow, Pooling};
use crate::protocol::{CancelKey, StartupMessage, Target};
use crate::reply::{refuse, send_and_close, CANNOT_CONNECT_NOW, PROTOCOL_VIOLATION};
use crate::route::{read_candidates, wait_for_leader};
use crate::shared::Shared;
use crate::topology::Backend;

/// A FATAL for the client: the server's own ErrorResponse, or the router's.
#[derive(Debug)]
pub(crate) struct Fatal {
    pub code: &'static str,
    pub message: String,
    pub raw: Option<Vec<u8>>,
}

impl Fatal {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => error_message("FATAL", self.code, &self.message),
        }
    }
}

/// One pooled client's view, shared by the startup and the relay.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub pooling: Arc<Pooling>,
    pub key: PoolKey,
    pub target: Target,
    pub mode: PoolMode,
    /// Tracked parameters as the client set them (applied to every server connection it gets).
    pub params: ClientParams,
    pub cancel: CancelTarget,
    pub queries: u64,
    pub transactions: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    /// Time spent in queries and in transactions (for /stats), not yet added to the pool.
    pub query_time_us: u64,
    pub xact_time_us: u64,
    pub entry: Option<Arc<ClientEntry>>,
    /// Session mode: the session state, seen in its statements, that the router cannot
    /// carry to another server (`txn::session_state`); None: the session can be moved.
    pub unmovable: Option<String>,
    /// Read-your-writes (the auto listener, or a `pgbaton.min_lsn` token).
    pub ryw: Option<Box<crate::pooled::ryw::ReadYourWrites>>,
    /// A session taken out of the kernel at a switchover (`takeout`): the router has not
    /// seen its statements, so before it moves, its state is read on the old server
    /// (`takeout::carried_state`); it counts for the switchover's drain until then.
    pub kernel: Option<crate::takeout::KernelWrite>,
    /// A session taken out of the kernel: its server's transaction status and what the
    /// client sent meanwhile, for the relay to start from.
    pub resumed: Option<Box<(u8, Vec<u8>)>>,
    active: bool,
}

impl Ctx {
    /// Use the pool of `target` for the next server connection (read-your-writes: the
    /// client belongs to the write and the read pool of its database and user).
    pub(crate) fn route(&mut self, target: Target) {
        self.target = target;
        self.key.target = target.label();
    }

    /// The session's `default_transaction_read_only` is on.
    pub(crate) fn session_read_only(&self) -> bool {
        self.params
            .get("default_transaction_read_only")
            .is_some_and(|v| v == "on")
    }

    /// The client waits for a server connection.
    pub(crate) fn waiting(&self) {
        if let Some(entry) = &self.entry {
            let mut now = entry.now();
            now.state = "waiting";
            let at = Instant::now();
            now.requested = at;
            now.wait_since = Some(at);
        }
    }

    pub(crate) fn attach(&mut self, conn: &ServerConn) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = conn.key.map(|k| (k, conn.view()));
        if let Some(entry) = &self.entry {
            let mut now = entry.now();
            now.state = "active";
            now.wait_since = None;
            now.server = Some(conn.view());
        }
        if !self.active {
            self.pooling.pools.set_active(&self.key, true);
            self.active = true;
        }
    }

    pub(crate) fn detach(&mut self) {
        let report = self.detach_reporting();
        self.pooling.pools.report(&self.key, report);
    }

    /// Detach, returning what the pool is to hear (the counters, no longer active).
    fn detach_reporting(&mut self) -> Report {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(entry) = &self.entry {
            let mut now = entry.now();
            now.state = "idle";
            now.wait_since = None;
            now.server = None;
        }
        let inactive = std::mem::take(&mut self.active);
        Report {
            stats: self.take_stats(),
            inactive,
        }
    }

    /// Back to the pool at a transaction boundary (one lock of the pools).
    pub(crate) fn release(&mut self, conn: ServerConn) {
        let report = self.detach_reporting();
        self.pooling
            .pools
            .checkin_reporting(&self.key, conn, Some(report));
    }

    /// The client left holding `conn`: give it back clean, or close it.
    pub(crate) async fn leave(
        &mut self,
        mut conn: ServerConn,
        tracker: &crate::pooled::txn::tracker::Tracker,
    ) {
        self.detach();
        if tracker.pending > 0 || tracker.unsynced {
            tracing::debug!(pool = %self.key, conn = conn.id, "closing a server connection its client left mid-query");
            return;
        }
        let settings = self.pooling.pools.settings();
        let mut steps = Vec::new();
        if tracker.status != b'I' {
            steps.push("ROLLBACK".to_string());
        }
        if self.mode == PoolMode::Session && !settings.server_reset_query.is_empty() {
            steps.push(settings.server_reset_query.clone());
        }
        for sql in steps {
            tracing::debug!(pool = %self.key, conn = conn.id, %sql, "cleaning a server connection its client left");
            let run = conn.simple_query(&sql);
            match tokio::time::timeout(self.shared.cfg.startup_timeout, run).await {
                Ok(Ok(answer)) if answer.error.is_none() => {
                    let lower = sql.to_ascii_lowercase();
                    if lower.contains("discard") || lower.contains("deallocate") {
                        conn.prepared.clear();
                    }
                }
                outcome => {
                    tracing::info!(pool = %self.key, conn = conn.id, %sql, ok = matches!(outcome, Ok(Ok(_))), "cleaning a server connection failed; closing it");
                    return;
                }
            }
        }
        self.pooling.pools.checkin(&self.key, conn);
    }

    /// A ParameterStatus from the server: the connection's value, and the client's wish
    /// for a tracked parameter (a `SET` it ran).
    pub(crate) fn parameter_changed(&mut self, conn: &mut ServerConn, body: &[u8]) {
        if let Some((name, value)) = crate::protocol::parameter_status(body) {
            let name = String::from_utf8_lossy(name).into_owned();
            let value = String::from_utf8_lossy(value).into_owned();
            if let Some(canonical) = tracked(&name) {
                self.params.insert(canonical.to_string(), value.clone());
            }
            conn.params.insert(name, value);
            conn.fits = None;
        }
    }

    pub(crate) fn flush_stats(&mut self) {
        let report = Report {
            stats: self.take_stats(),
            inactive: false,
        };
        self.pooling.pools.report(&self.key, report);
    }

    /// The counters since the last report, reset.
    fn take_stats(&mut self) -> PoolStats {
        PoolStats {
            query_count: std::mem::take(&mut self.queries),
            xact_count: std::mem::take(&mut self.transactions),
            bytes_received: std::mem::take(&mut self.bytes_to_server),
            bytes_sent: std::mem::take(&mut self.bytes_to_client),
            query_time_us: std::mem::take(&mut self.query_time_us),
            xact_time_us: std::mem::take(&mut self.xact_time_us),
            ..PoolStats::default()
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Is an idle connection still the right one: its member still serves the pool's role,
/// and its socket neither closed nor sent anything unasked (a FATAL while idle)?
fn usable(shared: &Shared, target: Target, conn: &ServerConn) -> bool {
    let mut probe = [0u8; 1];
    match conn.read.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        _ => return false,
    }
    // Compared under the borrow (not cloned: a checkout allocates nothing for this).
    let leads = shared.leader.borrow().as_ref() == Some(&conn.backend);
    match target {
        Target::Write => leads,
        Target::Read | Target::Any => {
            let topology = shared.topology.borrow();
            topology.replicas.iter().any(|r| r.backend == conn.backend)
                || (leads
                    && (target == Target::Any
                        || shared.cfg.read_fallback == crate::config::ReadFallback::Leader))
        }
    }
}

pub(crate) fn login_fatal(e: LoginError) -> Fatal {
    match e {
        LoginError::Refused { raw, message } => Fatal {
            code: "08006",
            message,
            raw: Some(raw),
        },
        other => Fatal {
            code: "08006",
            message: format!("pgbaton router: cannot open a server connection: {other}"),
            raw: None,
        },
    }
}

/// Open a new server connection for the pool in the place `slot` holds.
async fn open_server(ctx: &Ctx, slot: Slot) -> Result<ServerConn, Fatal> {
    open_for(&ctx.shared, &ctx.pooling, &ctx.key, ctx.target, slot, None).await
}

/// Open server connections for the pools below `min_pool_size` (each second): in the
/// background, each given to a waiting client or to the idle list once logged in.
pub(crate) fn fill_to_minimum(shared: &Arc<Shared>, pooling: &Arc<Pooling>) {
    for (key, slot) in pooling.pools.below_minimum() {
        let target = match key.target {
            "write" => Target::Write,
            "read" => Target::Read,
            _ => Target::Any,
        };
        let (shared, pooling) = (shared.clone(), pooling.clone());
        tokio::spawn(async move {
            match open_for(&shared, &pooling, &key, target, slot, None).await {
                Ok(conn) => {
                    tracing::debug!(pool = %key, conn = conn.id, "opened a server connection for min_pool_size");
                    pooling.pools.checkin(&key, conn);
                }
                Err(fatal) => {
                    tracing::info!(pool = %key, error = %fatal.message, "cannot open a server connection for min_pool_size");
                }
            }
        }
        .in_current_span());
    }
}

/// Open a server connection for `key` in `slot`; for reads, to a replica other than
/// `avoid` when one is given (then never to the leader).
async fn open_for(
    shared: &Arc<Shared>,
    pooling: &Pooling,
    key: &PoolKey,
    target: Target,
    slot: Slot,
    avoid: Option<&Backend>,
) -> Result<ServerConn, Fatal> {
    let login = |backend: Backend| {
        let credential = pooling.pools.login(key);
        async move {
            let opened = login_within(
                credential_timeout(pooling),
                &backend,
                &key.user,
                &key.database,
                &credential,
                shared.cfg.connect_timeout,
                shared.cfg.startup_timeout,
            )
            .await;
            (backend, opened)
        }
    };
    let mut last = None;
    if matches!(target, Target::Read | Target::Any) {
        for backend in read_candidates(shared)
            .into_iter()
            .filter(|b| Some(b) != avoid)
        {
            match login(backend).await {
                (backend, Ok(conn)) => return Ok(pooled(pooling, key, &backend, conn, slot)),
                // The server refused the user (password, database): the client hears it as is.
                (_, Err(e @ LoginError::Refused { .. })) => return Err(login_fatal(e)),
                (backend, Err(e @ LoginError::Auth(_))) => {
                    tracing::warn!(pool = %key, member = %backend.name, error = %e, "cannot log in to the server");
                    return Err(login_fatal(e));
                }
                (backend, Err(e)) => {
                    tracing::warn!(pool = %key, member = %backend.name, error = %e, "cannot open a server connection; trying the next member");
                    last = Some(login_fatal(e));
                }
            }
        }
        if avoid.is_some() {
            return Err(last.unwrap_or_else(|| Fatal {
                code: CANNOT_CONNECT_NOW,
                message: "pgbaton router: no other replica".into(),
                raw: None,
            }));
        }
        if target == Target::Read && shared.cfg.read_fallback != crate::config::ReadFallback::Leader
        {
            return Err(last.unwrap_or_else(|| Fatal {
                code: CANNOT_CONNECT_NOW,
                message: format!(
                    "pgbaton router: cannot connect now: no replica within read.max_lag ({} bytes) and read.fallback is refuse",
                    shared.cfg.max_lag_bytes
                ),
                raw: None,
            }));
        }
    }
    // The leader, through a switchover or failover: tried again until it accepts, within
    // the leader wait (retry.rs).
    let (leader, conn) =
        leader::login_on_leader(shared, key, target == Target::Write, login).await?;
    Ok(pooled(pooling, key, &leader, conn, slot))
}

/// `pool.server_connect_timeout` now.
pub(crate) fn credential_timeout(pooling: &Pooling) -> Option<std::time::Duration> {
    pooling.pools.settings().server_connect_timeout
}

/// A new server connection joins the pool in `slot`.
fn pooled(
    pooling: &Pooling,
    key: &PoolKey,
    backend: &Backend,
    mut conn: ServerConn,
    slot: Slot,
) -> ServerConn {
    pooling.pools.count(key, |s| s.server_logins += 1);
    pooling.pools.set_server_params(key, conn.params.clone());
    tracing::debug!(pool = %key, member = %backend.name, conn = conn.id, "opened a server connection");
    conn.slot = Some(slot);
    conn
}

/// Set the client's tracked parameters where the connection differs.
async fn apply_params(ctx: &Ctx, conn: &mut ServerConn) -> Result<(), Option<Fatal>> {
    let print = ctx.params.print();
    if conn.fits == Some(print) {
        return Ok(());
    }
    conn.fits = None;
    for (name, value) in ctx.params.iter() {
        if conn.params.get(name) == Some(value) {
            continue;
        }
        let args = [name.as_str(), value.as_str()];
        let run = conn.query_params("SELECT pg_catalog.set_config($1, $2, false)", &args);
        match tokio::time::timeout(ctx.shared.cfg.startup_timeout, run).await {
            Ok(Ok(answer)) => {
                if let Some((code, message)) = answer.error {
                    tracing::info!(pool = %ctx.key, parameter = %name, %code, %message, "a client's parameter was refused by the server");
                    return Err(Some(Fatal {
                        code: "22023",
                        message,
                        raw: None,
                    }));
                }
                conn.params.insert(name.clone(), value.clone());
            }
            _ => return Err(None),
        }
    }
    conn.fits = Some(print);
    Ok(())
}

/// An idle server connection the client can use as it is, taken without waiting: fresh, no
/// `server_check_query` due, the client's parameters already set on it (its fingerprint
/// matches). None: [`acquire`] (which waits, checks, opens and sets parameters). The common
/// case of a transaction in a warm pool costs no future of its own.
pub(crate) fn acquire_now(ctx: &mut Ctx) -> Option<ServerConn> {
    let pools = &ctx.pooling.pools;
    let settings = pools.settings();
    let print = ctx.params.print();
    // One clock reading for the whole look.
    let now = Instant::now();
    let check_due = |conn: &ServerConn| {
        !settings.server_check_query.is_empty()
            && now.saturating_duration_since(conn.idle_since) >= settings.server_check_delay
    };
    let (shared, target) = (&ctx.shared, ctx.target);
    // The client becomes active under the pool's lock it takes anyway (`attach` then
    // finds it so).
    let activate = !ctx.active;
    let conn = pools.take_idle(
        &ctx.key,
        &|conn| usable(shared, target, conn),
        &|conn| conn.fits == Some(print) && !check_due(conn),
        activate,
        now,
    )?;
    ctx.active |= activate;
    if let Some(entry) = &ctx.entry {
        entry.now().requested = now;
    }
    Some(conn)
}

/// A server connection for the client: from the pool (checked when it idled long), or new.
pub(crate) async fn acquire(ctx: &Ctx) -> Result<ServerConn, Fatal> {
    let pools = &ctx.pooling.pools;
    let settings = pools.settings();
    ctx.waiting();
    for _attempt in 0..5 {
        let shared = ctx.shared.clone();
        let target = ctx.target;
        let check = move |conn: &ServerConn| usable(&shared, target, conn);
        let checked_out = pools.checkout(&ctx.key, &check).await.map_err(|e| {
            tracing::info!(pool = %ctx.key, error = %e, "a client waited too long for a server connection");
            Fatal {
                code: "57014",
                message: format!("pgbaton router: {e}"),
                raw: None,
            }
        })?;
        let mut conn = match checked_out {
            Checkout::Open(slot) => open_server(ctx, slot).await?,
            Checkout::Idle(mut conn) => {
                let stale = !settings.server_check_query.is_empty()
                    && conn.idle_since.elapsed() >= settings.server_check_delay;
                if stale {
                    let run = conn.simple_query(&settings.server_check_query);
                    let ok = matches!(
                        tokio::time::timeout(ctx.shared.cfg.connect_timeout, run).await,
                        Ok(Ok(answer)) if answer.error.is_none()
                    );
                    if !ok {
                        tracing::info!(pool = %ctx.key, conn = conn.id, "server_check_query failed; closing the connection");
                        continue;
                    }
                }
                conn
            }
        };
        match apply_params(ctx, &mut conn).await {
            Ok(()) => return Ok(conn),
            Err(Some(fatal)) => return Err(fatal),
            Err(None) => continue,
        }
    }
    Err(Fatal {
        code: "08006",
        message: format!(
            "pgbaton router: no usable server connection for pool {}",
            ctx.key
        ),
        raw: None,
    })
}

/// Parameters PostgreSQL accepts at startup that a pool cannot keep per client are refused
/// (as PgBouncer does); tracked ones are set on each server connection the client gets.
fn startup_params(startup: &StartupMessage) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, value) in &startup.params {
        let name = String::from_utf8_lossy(name);
        let value = String::from_utf8_lossy(value).into_owned();
        match name.as_ref() {
            "user" | "database" => {}
            "options" if value.trim().is_empty() => {}
            // Served before this (replication.rs), never pooled.
            "replication" => return Err("a replication connection cannot be pooled".into()),
            other => match tracked(other) {
                Some(canonical) => {
                    params.insert(canonical.to_string(), value);
                }
                None => return Err(format!("unsupported startup parameter: {other}")),
            },
        }
    }
    Ok(params)
}

fn random_key(pooling: &Pooling) -> CancelKey {
    let cancels = pooling.cancels.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let key = CancelKey {
            pid: (u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) >> 1) as i32,
            secret: i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        };
        if !cancels.contains_key(&key) {
            return key;
        }
    }
}

/// Counts the client for max_client_conn and its pool; undone on drop.
struct ClientGuard {
    pooling: Arc<Pooling>,
    key: Option<PoolKey>,
    /// The other pool a read-your-writes client belongs to.
    other: Option<PoolKey>,
    cancel: Option<CancelKey>,
    entry: Option<u64>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.pooling.clients.fetch_sub(1, Ordering::Relaxed);
        for key in self.key.iter().chain(&self.other) {
            self.pooling.pools.client_left(key);
        }
        if let Some(id) = self.entry {
            self.pooling
                .registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        if let Some(key) = &self.cancel {
            self.pooling
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
    }
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_parameter_status(&mut out, name, value);
    out
}

/// Append a ParameterStatus message to `out` (no buffer of its own).
fn put_parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    let len = 4 + name.len() + 1 + value.len() + 1;
    out.reserve(1 + len);
    out.push(b'S');
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// What a client is told at login: the server's parameters, its own where it set them (the
/// ParameterStatus messages); from then on it keeps what it was told of the tracked ones
/// (PgBouncer's tracked parameters), added to `params`.
fn greet(params: &mut ClientParams, told: &Params) -> Vec<u8> {
    let mut statuses = Vec::with_capacity(1024);
    for (name, value) in told.iter() {
        put_parameter_status(&mut statuses, name, params.get(name).unwrap_or(value));
    }
    for (name, value) in params.iter() {
        if !told.contains_key(name) {
            put_parameter_status(&mut statuses, name, value);
        }
    }
    for name in crate::pooled::txn::TRACKED {
        if let Some(value) = told.get(name) {
            if params.get(name).is_none() {
                params.insert(name.to_string(), value.clone());
            }
        }
    }
    statuses
}

/// Serve one client of a pooled listener after its startup packet.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve(
    shared: Arc<Shared>,
    pooling: Arc<Pooling>,
    client: Client,
    startup: StartupMessage,
    listener: Target,
    target: Target,
    alias: Option<DatabaseAlias>,
    peer: SocketAddr,
    ryw: Option<crate::pooled::ryw::ReadYourWrites>,
) -> impl std::future::Future<Output = ()> + Send {
    // The login is boxed here, with its arguments, and over once the relay starts: the
    // client's task then holds only the relay's state (what an idle client costs), not the
    // login's nor room for the arguments.
    let starting = Box::pin(start(
        shared, pooling, client, startup, listener, target, alias, peer, ryw,
    ));
    async move {
        let Some(Started {
            mut ctx,
            client,
            server,
            guard,
        }) = starting.await
        else {
            return;
        };
        crate::pooled::txn::relay(&mut ctx, client, server).await;
        drop(guard);
    }
}

/// AuthenticationOk, then `fatal`: a client logged in and then refused (as PostgreSQL's
/// "too many connections").
pub(crate) fn logged_in_then(fatal: &Fatal) -> Vec<u8> {
    let mut answer = crate::auth::authentication_ok();
    answer.extend_from_slice(&fatal.bytes());
    answer
}

/// Check the client's password (`auth`); the credential the router logs in with as this
/// user, or None when the client was refused (told why) or left. AuthenticationOk is the
/// caller's to send, with what follows it.
pub(crate) async fn check_password(
    shared: &Arc<Shared>,
    pooling: &Pooling,
    client: &mut Client,
    user: &str,
    database: &str,
    peer: SocketAddr,
) -> Option<ServerLogin> {
    let certificate = client.certificate_name();
    let who = Peer {
        user,
        database,
        ip: peer.ip(),
        tls: client.is_tls(),
        certificate: certificate.as_deref(),
    };
    let auth = pooling.auth();
    let leader = QueryLeader {
        find: wait_for_leader(shared, None),
        connect_timeout: shared.cfg.connect_timeout,
        startup_timeout: shared.cfg.startup_timeout,
    };
    match authenticate(leader, &auth, client, &who).await {
        Ok(login) => Some(login),
        Err(Refusal::Fatal {
            code,
            reason,
            message,
        }) => {
            Metrics::count(&shared.metrics.refusals, &[("reason", reason)]);
            tracing::info!(%peer, %user, %database, reason, "client authentication failed");
            send_and_close(client, &error_message("FATAL", code, &message)).await;
            None
        }
        Err(Refusal::Client(e)) => {
            tracing::debug!(%peer, %user, error = %e, "client left during authentication");
            None
        }
    }
}

/// A logged-in client ready for the relay.
struct Started {
    ctx: Ctx,
    client: Client,
    /// Its server connection in session mode.
    server: Option<ServerConn>,
    guard: ClientGuard,
}

/// Check the client's startup and password, find its pool, tell it the server's parameters
/// and a cancel key; None when it was refused, left, or was handed to the kernel (a
/// session-mode session, over when this returns).
#[allow(clippy::too_many_arguments)]
async fn start(
    shared: Arc<Shared>,
    pooling: Arc<Pooling>,
    mut client: Client,
    startup: StartupMessage,
    listener: Target,
    target: Target,
    alias: Option<DatabaseAlias>,
    peer: SocketAddr,
    ryw: Option<crate::pooled::ryw::ReadYourWrites>,
) -> Option<Started> {
    let settings = pooling.pools.settings();
    let now = pooling.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let mut guard = ClientGuard {
        pooling: pooling.clone(),
        key: None,
        other: None,
        cancel: None,
        entry: None,
    };
    if now > settings.max_client_conn {
        let message = format!(
            "sorry, too many clients already (pgbaton router: max_client_conn {})",
            settings.max_client_conn
        );
        refuse(&shared, &mut client, "53300", "max_client_conn", &message).await;
        return None;
    }
    let user = String::from_utf8_lossy(startup.param("user").unwrap_or_default()).into_owned();
    if user.is_empty() {
        refuse(
            &shared,
            &mut client,
            "28000",
            "no_user",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return None;
    }
    if startup.param("replication").is_some() {
        // No pool's: counted among the clients (max_client_conn) while it lasts.
        Box::pin(replication::serve(
            shared, pooling, client, startup, target, peer,
        ))
        .await;
        drop(guard);
        return None;
    }
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_else(|| user.clone());
    let params = match startup_params(&startup) {
        Ok(params) => params,
        Err(message) => {
            refuse(
                &shared,
                &mut client,
                PROTOCOL_VIOLATION,
                "startup_parameter",
                &message,
            )
            .await;
            return None;
        }
    };
    let listener_mode = match listener {
        Target::Write => shared.cfg.write_pool_mode,
        _ => shared.cfg.read_pool_mode,
    };
    // The auto listener routes each transaction: transaction pooling, always.
    let auto = ryw.as_ref().is_some_and(|r| r.auto);
    let mode = if auto {
        PoolMode::Transaction
    } else {
        alias
            .as_ref()
            .and_then(|a| a.pool_mode)
            .or(listener_mode)
            .unwrap_or(settings.pool_mode)
    };
    let alias_size = alias.as_ref().and_then(|a| a.pool_size);
    let size = alias_size.unwrap_or(settings.default_pool_size);
    let key = PoolKey {
        database: database.clone(),
        user: user.clone(),
        target: target.label(),
    };
    pooling
        .pools
        .client_joined(&key, size, alias_size.is_some(), mode);
    guard.key = Some(key.clone());
    // A read-your-writes client may run on the leader too (its write pool).
    let other = ryw.as_ref().map(|_| PoolKey {
        target: match target {
            Target::Write => Target::Read.label(),
            _ => Target::Write.label(),
        },
        ..key.clone()
    });
    if let Some(other) = &other {
        pooling
            .pools
            .client_joined(other, size, alias_size.is_some(), mode);
        guard.other = Some(other.clone());
    }
    // Boxed (as every step that does not last the session): the client's task keeps only
    // what the relay needs while the client is idle.
    let login = Box::pin(check_password(
        &shared,
        &pooling,
        &mut client,
        &user,
        &database,
        peer,
    ))
    .await?;
    if let Some(other) = &other {
        pooling.pools.remember_login(other, login.clone());
    }
    pooling.pools.remember_login(&key, login);
    let entry = Arc::new(ClientEntry {
        id: pooling.next_client.fetch_add(1, Ordering::Relaxed),
        key: key.clone(),
        addr: peer,
        local: match (listener, shared.auto_addr) {
            (_, Some(addr)) if auto => addr,
            (Target::Write, _) => shared.write_addr,
            _ => shared.read_addr,
        },
        connect_time: chrono::Utc::now(),
        application_name: params.get("application_name").cloned(),
        tls: client.is_tls(),
        mode,
        now: Mutex::new(ClientNow {
            state: "idle",
            requested: Instant::now(),
            wait_since: None,
            server: None,
        }),
    });
    pooling
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(entry.id, entry.clone());
    guard.entry = Some(entry.id);
    let mut ctx = Ctx {
        shared: shared.clone(),
        pooling: pooling.clone(),
        key: key.clone(),
        target,
        mode,
        params: ClientParams::new(params),
        cancel: Arc::new(Mutex::new(None)),
        queries: 0,
        transactions: 0,
        bytes_to_server: 0,
        bytes_to_client: 0,
        query_time_us: 0,
        xact_time_us: 0,
        entry: Some(entry),
        unmovable: None,
        ryw: ryw.map(Box::new),
        kernel: None,
        resumed: None,
        active: false,
    };
    // In transaction mode a client that logs in needs no server connection once the pool
    // knows what its servers report; otherwise (the first client, session mode) it gets one.
    let cached = match mode {
        PoolMode::Transaction => pooling.pools.server_params(&key),
        PoolMode::Session => None,
    };
    let from_pool = cached.is_some();
    let (conn, told) = match cached {
        Some(params) => (None, params),
        None => match Box::pin(crate::pooled::ryw::acquire(&mut ctx)).await {
            Ok(conn) => {
                let params = Arc::new(conn.params.clone());
                (Some(conn), params)
            }
            Err(fatal) => {
                tracing::info!(%peer, pool = %key, error = %fatal.message, "no server connection for a new client");
                send_and_close(&mut client, &logged_in_then(&fatal)).await;
                return None;
            }
        },
    };
    // AuthenticationOk goes with the parameters, the key and ReadyForQuery: one write.
    let mut held = crate::auth::authentication_ok();
    let known = from_pool
        .then(|| pooling.greetings.find(&told, ctx.params.map()))
        .flatten();
    match known {
        Some(greeting) => {
            held.extend_from_slice(&greeting.statuses);
            ctx.params = ClientParams::shared(greeting.params, greeting.print);
        }
        None => {
            let sent = from_pool.then(|| (**ctx.params.map()).clone());
            let statuses = greet(&mut ctx.params, &told);
            held.extend_from_slice(&statuses);
            ctx.params.share(&pooling.shared_params);
            if let Some(sent) = sent {
                let print = ctx.params.print();
                let params = ctx.params.map().clone();
                pooling
                    .greetings
                    .remember(&told, sent, statuses.into(), params, print);
            }
        }
    }
    crate::route::decision(&shared, target, "pooled");
    let kernel = mode == PoolMode::Session && shared.offload.is_some() && !client.is_tls();
    if kernel {
        let (Client::Plain(tcp), Some(conn)) = (client, conn) else {
            return None;
        };
        ctx.attach(&conn);
        let crate::pool::server::ServerParts {
            id,
            read,
            write,
            key: server_key,
            backend,
            params,
            created,
            slot,
            view,
            ..
        } = conn.into_parts();
        let server = match read.reunite(write) {
            Ok(server) => server,
            Err(_) => return None,
        };
        if let Some(k) = server_key {
            held.extend_from_slice(&crate::protocol::backend_key_message(k));
        }
        held.extend_from_slice(&ready_for_query(b'I'));
        let ready = Ready {
            held,
            key: server_key,
            opaque: false,
        };
        // A write session can be taken out of the kernel and moved at a switchover.
        let takeout =
            server_key
                .filter(|_| ctx.target == Target::Write)
                .map(|k| crate::takeout::Takeout {
                    pooling: pooling.clone(),
                    key: ctx.key.clone(),
                    pid: k.pid,
                    counted: crate::takeout::KernelWrite::new(&pooling.kernel_writes),
                });
        let taken = Box::pin(crate::relay::forward(
            shared.clone(),
            tcp,
            server,
            ready,
            backend.clone(),
            ctx.target,
            ctx.target == Target::Write,
            takeout,
        ))
        .await;
        let Some(taken) = taken else {
            // The server connection ends with the session (its Terminate went through).
            drop(slot);
            return None;
        };
        let (read, write) = taken.server.into_split();
        let conn = ServerConn::new(crate::pool::server::ServerParts {
            id,
            backend,
            read,
            write,
            key: server_key,
            params,
            fits: None,
            prepared: Default::default(),
            created,
            idle_since: Instant::now(),
            slot,
            view,
        });
        // The client's cancel key is its first server's: from now on it names whichever
        // server connection the client holds.
        if let Some(k) = server_key {
            pooling
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, ctx.cancel.clone());
            guard.cancel = Some(k);
        }
        let crate::takeout::Settled {
            status,
            held,
            from_server,
            counted,
        } = taken.settled;
        let mut client = taken.client;
        if !from_server.is_empty() && client.write_all(&from_server).await.is_err() {
            return None;
        }
        ctx.kernel = Some(counted);
        ctx.resumed = Some(Box::new((status, held)));
        return Some(Started {
            ctx,
            client: Client::Plain(client),
            server: Some(conn),
            guard,
        });
    }
    let router_key = random_key(&pooling);
    pooling
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(router_key, ctx.cancel.clone());
    guard.cancel = Some(router_key);
    held.extend_from_slice(&crate::protocol::backend_key_message(router_key));
    held.extend_from_slice(&ready_for_query(b'I'));
    if client.write_all(&held).await.is_err() || client.flush().await.is_err() {
        if let Some(conn) = conn {
            pooling.pools.checkin(&key, conn);
        }
        return None;
    }
    let server = match (mode, conn) {
        (PoolMode::Session, conn) => conn,
        (PoolMode::Transaction, Some(conn)) => {
            pooling.pools.checkin(&key, conn);
            None
        }
        (PoolMode::Transaction, None) => None,
    };
    Some(Started {
        ctx,
        client,
        server,
        guard,
    })
}
