//! Moving a session the kernel forwards (pooled, session mode, write) at a planned
//! switchover.
//!
//! The kernel passes the session's bytes without the router reading them, so the router
//! knows neither where its messages begin nor whether a transaction is open. When a
//! switchover holds the write traffic, such a session is **taken out** of the kernel:
//!
//! 1. The client's entry leaves the partner map of `offload`: what the client sends from then on stays
//!    on its socket (the forwarding program passes data whose partner it cannot find to
//!    the socket itself), and the router reads it and keeps it; the server's data still
//!    goes to the client in the kernel. So the server finishes what it was sent and then has
//!    nothing more to do.
//! 2. Once everything the kernel passed on has been delivered both ways (the TCP counters of
//!    both sockets say so), the router asks the server how that backend is
//!    (`pg_stat_activity`, on a connection of its own as the session's user, one per pool
//!    and member, `Prober`), until the backend waits for the client (`idle`, `idle in
//!    transaction`, or aborted) since long enough that its ReadyForQuery was sent. Then the
//!    server's entry leaves the map too, and the sockets leave the kernel's hands. (A socket
//!    leaving them drops what the kernel still had on its way to it: hence the counters, and
//!    the second map of `offload` that keeps the sockets there until then.)
//! 3. The session then continues in the router's message-aware relay (`txn::relay`) with
//!    that transaction status, its client's unread bytes first. Once the session is idle,
//!    before it gives up its server connection, the relay asks the old server what the
//!    session holds ([`carried_state`]): parameters it `SET`, protocol-level prepared
//!    statements (carried: applied and prepared again on the new leader), or state that
//!    cannot be carried (`LISTEN`, temporary tables, session advisory locks, `WITH HOLD`
//!    cursors, SQL `PREPARE`, `SET ROLE`: then the session is closed at the leader change
//!    with a message that names it, as before).
//!
//! Until then the session counts as busy for the switchover's drain ([`KernelWrite`]), so
//! the router acknowledges the switchover only when it has been taken out (or the drain
//! timeout passed). A session that cannot be taken out (the backend stays busy until the
//! leader changes, the router cannot ask the server) goes on relayed unread and is closed
//! at the leader change, as a kernel-forwarded session always was.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::offload::{Flow, Pair};
use crate::pool::server::{login_within, ServerConn};
use crate::pool::PoolKey;
use crate::pooling::{Pooling, Prober};
use crate::topology::Backend;

/// How long the client's bytes must have been delivered to the server before an idle
/// backend is believed to have read them all.
const DELIVERED_FOR: Duration = Duration::from_millis(10);
/// How long a backend must have been waiting for its client: PostgreSQL reports the state
/// just before it sends ReadyForQuery.
const IDLE_FOR_MS: i64 = 5;
/// How often the backend is asked while it is busy.
const ASK_EVERY: Duration = Duration::from_millis(10);

/// A pooled write session forwarded by the kernel, counted in
/// [`Pooling::kernel_writes`] until it has been taken out and its state read (or ends).
pub(crate) struct KernelWrite(Arc<AtomicUsize>);

impl KernelWrite {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> KernelWrite {
        count.fetch_add(1, Ordering::Relaxed);
        KernelWrite(count.clone())
    }
}

impl Drop for KernelWrite {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a taken-out session needs to ask about its backend.
pub(crate) struct Takeout {
    pub pooling: Arc<Pooling>,
    pub key: PoolKey,
    /// The backend's process id (its BackendKeyData).
    pub pid: i32,
    pub counted: KernelWrite,
}

/// A session out of the kernel's hands, at a point where its server waits for the client.
pub(crate) struct TakenOut {
    pub client: TcpStream,
    pub server: TcpStream,
    pub settled: Settled,
}

/// Where a session taken out of the kernel stands.
pub(crate) struct Settled {
    /// The transaction status of the server (`I`, `T`, `E`).
    pub status: u8,
    /// What the client sent since it was held (not yet sent to the server).
    pub held: Vec<u8>,
    /// What the server sent after it waited for its client (a notice, if anything), for the
    /// client.
    pub from_server: Vec<u8>,
    pub counted: KernelWrite,
}

/// Why a session could not be taken out.
#[derive(Debug)]
pub(crate) enum Unsettled {
    /// It ended meanwhile (a side closed, the backend exited, the router stops): nothing to
    /// tell the client.
    Over(String),
    /// It was still busy when it had to be given up: the client is told why.
    Stuck(String),
}

/// A backend as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Activity {
    pub state: String,
    /// Milliseconds since its state last changed.
    pub since_ms: i64,
}

impl Activity {
    /// The transaction status of a backend waiting for its client since long enough, or
    /// None (busy, or waiting only for a moment).
    pub(crate) fn waiting_status(&self) -> Option<u8> {
        if self.since_ms < IDLE_FOR_MS {
            return None;
        }
        match self.state.as_str() {
            "idle" => Some(b'I'),
            "idle in transaction" => Some(b'T'),
            "idle in transaction (aborted)" => Some(b'E'),
            _ => None,
        }
    }
}

impl Prober {
    /// How backend `pid` is now; None when it is gone (its session ended).
    async fn activity(
        &self,
        pooling: &Pooling,
        shared: &crate::shared::Shared,
        pid: i32,
    ) -> Result<Option<Activity>, String> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let login = pooling.pools.login(&self.key);
            let opened = login_within(
                pooling.pools.settings().server_connect_timeout,
                &self.backend,
                &self.key.user,
                &self.key.database,
                &login,
                shared.cfg.connect_timeout,
                shared.cfg.startup_timeout,
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot open a connection to ask {} about the session: {e}",
                    self.backend.name
                )
            })?;
            *conn = Some(opened);
        }
        let Some(c) = conn.as_mut() else {
            return Err("no connection".into());
        };
        let pid = pid.to_string();
        let args = [pid.as_str()];
        let asked = c.query_params(
            "SELECT state, (extract(epoch FROM pg_catalog.clock_timestamp() - state_change) * 1000)::int8 FROM pg_catalog.pg_stat_activity WHERE pid = $1::int4",
            &args,
        );
        let answer = match tokio::time::timeout(shared.cfg.startup_timeout, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                *conn = None;
                return Err(format!(
                    "asking {} about the session: {e}",
                    self.backend.name
                ));
            }
            Err(_) => {
                *conn = None;
                return Err(format!(
                    "{} did not answer about the session in time",
                    self.backend.name
                ));
            }
        };
        if let Some((code, message)) = answer.error {
            return Err(format!(
                "{} refused the question about the session: {code} {message}",
                self.backend.name
            ));
        }
        match answer.rows.first().map(|r| r.as_slice()) {
            Some([Some(state), Some(since)]) => Ok(Some(Activity {
                state: state.clone(),
                since_ms: since.parse().unwrap_or(0),
            })),
            Some(_) => {
                Err("pg_stat_activity does not show the session's state to its own user".into())
            }
            None => Ok(None),
        }
    }
}

/// Read what is waiting on a non-blocking socket into `into`; Ok(false) once the peer
/// closed its end.
fn read_waiting(mut socket: &std::net::TcpStream, into: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    loop {
        match std::io::Read::read(&mut socket, &mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Where the two directions stand while the client's data is held.
fn settled(flow: &Flow, held: usize) -> bool {
    // Everything the kernel sent on to the server (what arrived from the client but the
    // router's share) has reached it, and everything from the server has reached the client.
    let forwarded = flow.from_client.saturating_sub(held as u64);
    flow.acked_by_server >= forwarded && flow.acked_by_client >= flow.from_server
}

/// Steps 1 to 3 of the module's description, from the kernel's hands to the relay's. Err
/// when the leader changed first, the router stops or a side closed: the session is then
/// over (the caller closes it).
pub(crate) async fn settle(
    shared: &Arc<crate::shared::Shared>,
    takeout: Takeout,
    mut pair: Pair,
    backend: &Backend,
    client: &std::net::TcpStream,
    server: &std::net::TcpStream,
) -> Result<Settled, Unsettled> {
    let Takeout {
        pooling,
        key,
        pid,
        counted,
    } = takeout;
    pair.hold_client()
        .map_err(|e| Unsettled::Stuck(format!("cannot hold the client's data: {e}")))?;
    let prober = pooling.probers.get(&key, backend);
    let mut leader = shared.leader.clone();
    let mut stop = shared.stop.clone();
    // The client's data since the hold, in order, for the relay.
    let mut held = Vec::new();
    let mut client_open = true;
    // Since when both directions have been settled.
    let mut settled_since: Option<Instant> = None;
    // A question under way, in a task of its own: a question dropped half-way would leave
    // its answer on the prober's connection.
    let mut asking: Option<tokio::task::JoinHandle<Result<Option<Activity>, String>>> = None;
    let mut complained = false;
    let mut last = String::from("never");
    let status = loop {
        if client_open {
            client_open = read_waiting(client, &mut held)
                .map_err(|e| Unsettled::Over(format!("the client's socket failed: {e}")))?;
        }
        let flow = pair
            .flow()
            .ok_or_else(|| Unsettled::Over("the session's counters cannot be read".into()))?;
        if flow.closed || flow.server_finished {
            return Err(Unsettled::Over("the server closed the session".into()));
        }
        let now = Instant::now();
        if settled(&flow, held.len()) {
            settled_since.get_or_insert(now);
        } else {
            settled_since = None;
        }
        let ask_now = asking.is_none() && settled_since.is_some_and(|at| now >= at + DELIVERED_FOR);
        if ask_now {
            let (prober, pooling, shared) = (prober.clone(), pooling.clone(), shared.clone());
            asking = Some(tokio::spawn(
                async move { prober.activity(&pooling, &shared, pid).await }.in_current_span(),
            ));
        }
        tokio::select! {
            joined = async { asking.as_mut().expect("asking").await }, if asking.is_some() => {
                asking = None;
                match joined {
                    Ok(Ok(None)) => return Err(Unsettled::Over("the session's backend exited".into())),
                    Ok(Ok(Some(activity))) => {
                        let still = pair.flow().is_some_and(|f| settled(&f, held.len()));
                        last = format!("{} for {} ms, data {}", activity.state, activity.since_ms, if still { "delivered" } else { "in flight" });
                        if let Some(status) = activity.waiting_status().filter(|_| still && settled_since.is_some()) {
                            tracing::info!(pool = %key, member = %backend.name, pid, state = %activity.state, "a kernel-forwarded session taken out of the kernel for the switchover");
                            break status;
                        }
                    }
                    Ok(Err(why)) => {
                        if !complained {
                            tracing::warn!(pool = %key, member = %backend.name, reason = %why, "cannot ask the leader about a kernel-forwarded session; trying again until the switchover goes ahead");
                            complained = true;
                        }
                    }
                    Err(e) => return Err(Unsettled::Stuck(e.to_string())),
                }
            }
            _ = tokio::time::sleep(ASK_EVERY / 2) => {}
            _ = async { leader.wait_for(|l| l.as_ref() != Some(backend)).await.is_ok() } => {
                let flow = pair.flow();
                return Err(Unsettled::Stuck(format!("{} stopped being the leader before the session was between transactions; its backend was last seen {last}; {flow:?}, {} bytes held", backend.name, held.len())));
            }
            _ = crate::stop::stopped(&mut stop) => return Err(Unsettled::Over("the router stops".into())),
        }
    };
    // The backend waits for its client: nothing more comes from it (a notice at most).
    pair.hold_server()
        .map_err(|e| Unsettled::Stuck(format!("cannot hold the server's data: {e}")))?;
    let deadline = Instant::now() + Duration::from_millis(200);
    while !pair.flow().is_some_and(|f| settled(&f, held.len())) {
        if Instant::now() > deadline {
            return Err(Unsettled::Stuck(
                "data between the client and the server was not delivered in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // What is on the sockets' forwarding state is lost when they leave the kernel's hands:
    // read it first, and what arrived in between after.
    let mut from_server = Vec::new();
    let _ = read_waiting(server, &mut from_server);
    if client_open {
        client_open = read_waiting(client, &mut held).unwrap_or(false);
    }
    drop(pair);
    if client_open {
        let _ = read_waiting(client, &mut held);
    }
    let _ = read_waiting(server, &mut from_server);
    Ok(Settled {
        status,
        held,
        from_server,
        counted,
    })
}

/// What an idle session holds on its server that moves with it.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Parameters the session `SET`, with their current values.
    pub params: Vec<(String, String)>,
    /// Protocol-level prepared statements: client name, definition as in a Parse after the
    /// name (query, parameter type count and OIDs).
    pub statements: Vec<(Vec<u8>, Vec<u8>)>,
}

const HOLDS: &str = "SELECT (SELECT count(*) FROM pg_catalog.pg_listening_channels()), \
(SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
(SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() AND locktype = 'advisory'), \
(SELECT count(*) FROM pg_catalog.pg_cursors), \
(SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql), \
current_user = session_user";
const SET_PARAMETERS: &str = "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'";
const PREPARED: &str = "SELECT name, statement, parameter_types::pg_catalog.oid[]::text FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql";

/// What the session on `conn` (idle) holds: Ok with what moves, Err naming what cannot.
pub(crate) async fn carried_state(conn: &mut ServerConn) -> Result<Carried, String> {
    let ask = |e: std::io::Error| format!("the session's state could not be read: {e}");
    let holds = conn.simple_query(HOLDS).await.map_err(ask)?;
    if let Some((code, message)) = holds.error {
        return Err(format!(
            "the session's state could not be read: {code} {message}"
        ));
    }
    let row = holds.rows.first().cloned().unwrap_or_default();
    let count = |i: usize| -> i64 {
        row.get(i)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let what = [
        (0, "LISTEN"),
        (1, "a temporary table"),
        (2, "a session advisory lock"),
        (3, "a cursor WITH HOLD"),
        (4, "a statement prepared with SQL PREPARE"),
    ];
    for (i, name) in what {
        if count(i) > 0 {
            return Err(name.to_string());
        }
    }
    if row.get(5).and_then(|v| v.as_deref()) != Some("t") {
        return Err("SET ROLE or SET SESSION AUTHORIZATION".into());
    }
    let set = conn.simple_query(SET_PARAMETERS).await.map_err(ask)?;
    let mut carried = Carried::default();
    for row in set.rows {
        if let [Some(name), Some(value)] = row.as_slice() {
            carried.params.push((name.clone(), value.clone()));
        }
    }
    let prepared = conn.simple_query(PREPARED).await.map_err(ask)?;
    for row in prepared.rows {
        let [Some(name), Some(query), Some(types)] = row.as_slice() else {
            continue;
        };
        let Some(definition) = parse_definition(query, types) else {
            return Err(format!(
                "prepared statement {name} whose parameter types cannot be read"
            ));
        };
        carried
            .statements
            .push((name.as_bytes().to_vec(), definition));
    }
    Ok(carried)
}

/// A Parse message's definition (after the name) from a query and `{23,25}`.
fn parse_definition(query: &str, types: &str) -> Option<Vec<u8>> {
    let inner = types.strip_prefix('{')?.strip_suffix('}')?;
    let oids: Vec<u32> = if inner.is_empty() {
        Vec::new()
    } else {
        inner
            .split(',')
            .map(|t| t.trim().parse().ok())
            .collect::<Option<_>>()?
    };
    let mut out = query.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(&u16::try_from(oids.len()).ok()?.to_be_bytes());
    for oid in oids {
        out.extend_from_slice(&oid.to_be_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_backend_waiting_long_enough_counts() {
        let at = |state: &str, since_ms| Activity {
            state: state.into(),
            since_ms,
        };
        assert_eq!(at("idle", 50).waiting_status(), Some(b'I'));
        assert_eq!(at("idle in transaction", 6).waiting_status(), Some(b'T'));
        assert_eq!(
            at("idle in transaction (aborted)", 100).waiting_status(),
            Some(b'E')
        );
        assert_eq!(at("idle", 1).waiting_status(), None);
        assert_eq!(at("active", 500).waiting_status(), None);
        assert_eq!(at("fastpath function call", 500).waiting_status(), None);
    }

    #[test]
    fn a_prepared_statements_definition_is_rebuilt_as_parse_sends_it() {
        let d = parse_definition("SELECT $1::int + $2", "{23,25}").expect("parsed");
        let mut want = b"SELECT $1::int + $2\0".to_vec();
        want.extend_from_slice(&[0, 2, 0, 0, 0, 23, 0, 0, 0, 25]);
        assert_eq!(d, want);
        assert_eq!(
            parse_definition("SELECT 1", "{}").expect("parsed"),
            b"SELECT 1\0\0\0".to_vec()
        );
        assert!(parse_definition("SELECT 1", "{x}").is_none());
    }
}
