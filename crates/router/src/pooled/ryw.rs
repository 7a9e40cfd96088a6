//! Read-your-writes routing: the `auto` listener sends each transaction the client declares
//! read-only to a replica that has replayed the client's last commit, and everything else
//! to the leader; the read listener honours a token passed at startup.
//!
//! - **Declared read-only**: `BEGIN READ ONLY` / `START TRANSACTION ... READ ONLY` (simple
//!   or extended protocol), `BEGIN` followed by `SET TRANSACTION ... READ ONLY` (in the
//!   same query string, or as the next message: a lone simple-protocol `BEGIN` is answered
//!   by the router and sent on with the statement after it), and every transaction while
//!   the session's `default_transaction_read_only` is on (a startup parameter, `SET`, or
//!   `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`: PostgreSQL reports it, so the
//!   router follows the server's own value). `BEGIN READ WRITE` always goes to the leader.
//! - **The token** is read on the same server connection right after a transaction on the
//!   leader ended (one round trip): the leader's WAL flush position, which a commit with
//!   `synchronous_commit` on (any value but `off`) has reached before it is acknowledged;
//!   when the session's `synchronous_commit` is `off`, or the transaction mentioned
//!   `synchronous_commit` (a `SET LOCAL`), the insert position, which every commit record
//!   has reached (and which the replica reaches once the WAL writer has flushed it, within
//!   `wal_writer_delay`: such reads may wait, then run on the leader). The client sees it
//!   as the ParameterStatus `pgbaton.last_commit_lsn`, sent before the ReadyForQuery that
//!   ends the transaction, and as `SHOW pgbaton.last_commit_lsn` (simple protocol); it
//!   passes a token to a new connection with the startup option `pgbaton.min_lsn`.
//! - **A replica qualifies** when `pg_last_wal_replay_lsn()` on the server connection it
//!   got has reached the token; when it has not, another replica's connection (idle, or
//!   a new one when the pool has room) is asked once, and then the first again every 2 ms
//!   up to `read_your_writes_wait`; a server that is not in recovery has everything.
//!   Otherwise the transaction runs on the
//!   leader (the auto listener), or, on the read listener, on the leader when
//!   `read.fallback` is `leader` and refused with 57P03 when it is `refuse`.
//!   Never a replica that has not replayed the token.

use std::time::Duration;

use crate::metrics::Metrics;
use crate::pool::server::ServerConn;
use crate::pool::Checkout;
use crate::pooled::txn::frontend::{message, Frontend};
use crate::pooled::{Ctx, Fatal};
use crate::protocol::Target;
use crate::topology::Backend;

/// The ParameterStatus name (and `SHOW` name) of the client's token.
pub(crate) const TOKEN_NAME: &str = "pgbaton.last_commit_lsn";

/// How often a replica's replay position is asked while a read waits for it.
const POLL: Duration = Duration::from_millis(2);

/// One client's read-your-writes state.
#[derive(Debug)]
pub(crate) struct ReadYourWrites {
    /// On the auto listener: each transaction is routed; otherwise (the read listener
    /// with `pgbaton.min_lsn`) only the startup token is honoured.
    pub auto: bool,
    /// The leader's WAL insert position after this client's last transaction there.
    pub last_commit: u64,
    /// `pgbaton.min_lsn` from the startup.
    pub min_lsn: u64,
    /// `read_your_writes_wait`
    pub wait: Duration,
    /// A lone `BEGIN` the router answered and has not sent yet.
    pub deferred_begin: bool,
    /// The transaction in progress mentioned `synchronous_commit`: it may commit without
    /// a flush, so its token is the insert position.
    pub maybe_async_commit: bool,
    /// `SHOW pgbaton.last_commit_lsn` prepared through the extended protocol.
    pub local_show: crate::pooled::show::LocalShow,
}

impl ReadYourWrites {
    /// What a replica must have replayed (0: anything will do).
    pub(crate) fn token(&self) -> u64 {
        self.last_commit.max(self.min_lsn)
    }
}

pub(crate) use pgbaton_core::pg_text::{format_lsn, parse_lsn};

/// A `pgbaton.min_lsn` value, or the error the client gets.
pub(crate) fn parse_token(raw: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(raw);
    parse_lsn(&text).ok_or_else(|| {
        format!(
            "invalid value for parameter \"pgbaton.min_lsn\": \"{text}\"; expected a WAL position such as 0/16B3748, as SHOW pgbaton.last_commit_lsn gives it"
        )
    })
}

/// How the first statement of a transaction routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`, or `BEGIN; SET TRANSACTION READ ONLY`.
    ReadOnly,
    /// `BEGIN READ WRITE`
    ReadWrite,
    /// `BEGIN` (or with an isolation level) and nothing after it in the same string.
    LoneBegin,
    /// `BEGIN` followed by other statements, or any other statement.
    Other,
}

/// The statements of `text`, lower case, split on `;` (literals are not looked into: a
/// `;` inside one only makes the router see a statement that is not there, which at worst
/// sends a transaction to the leader).
fn statements(text: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(text)
        .to_ascii_lowercase()
        .split(';')
        .map(|s| {
            s.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}

/// `read only` / `read write` among the words of a transaction mode list.
fn access_mode(words: &[String]) -> Option<bool> {
    words
        .windows(2)
        .find_map(|w| match (w[0].as_str(), w[1].as_str()) {
            ("read", "only") => Some(true),
            ("read", "write") => Some(false),
            _ => None,
        })
}

fn is_begin(words: &[String]) -> bool {
    match words.first().map(String::as_str) {
        Some("begin") => true,
        Some("start") => words.get(1).map(String::as_str) == Some("transaction"),
        _ => false,
    }
}

/// `SET TRANSACTION ... READ ONLY` (or `SET LOCAL transaction_read_only`... is not seen).
pub(crate) fn sets_transaction_read_only(text: &[u8]) -> bool {
    statements(text).first().is_some_and(|words| {
        words.first().map(String::as_str) == Some("set")
            && words.get(1).map(String::as_str) == Some("transaction")
            && access_mode(words) == Some(true)
    })
}

/// How a transaction opened by `text` routes.
pub(crate) fn opening(text: &[u8]) -> Opening {
    let all = statements(text);
    let Some(first) = all.first() else {
        return Opening::Other;
    };
    if !is_begin(first) {
        return Opening::Other;
    }
    match access_mode(first) {
        Some(true) => Opening::ReadOnly,
        Some(false) => Opening::ReadWrite,
        None => match all.get(1) {
            None => Opening::LoneBegin,
            Some(next)
                if next.first().map(String::as_str) == Some("set")
                    && next.get(1).map(String::as_str) == Some("transaction")
                    && access_mode(next) == Some(true) =>
            {
                Opening::ReadOnly
            }
            Some(_) => Opening::Other,
        },
    }
}

/// Where the next transaction goes, from its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Read,
    Write,
    /// A lone `BEGIN`: answered by the router, routed with the next message.
    Defer,
}

/// Route a transaction of the auto listener that starts with `first`; `session_read_only`:
/// the session's `default_transaction_read_only` is on; `deferred`: a lone `BEGIN` waits.
pub(crate) fn route(first: &Frontend<'_>, session_read_only: bool, deferred: bool) -> Route {
    let text = match *first {
        Frontend::Query(text) => Some(text),
        Frontend::Parse { definition, .. } => definition.split(|b| *b == 0).next(),
        _ => None,
    };
    let read = |yes: bool| if yes { Route::Read } else { Route::Write };
    let Some(text) = text else {
        return read(session_read_only && !deferred);
    };
    if deferred {
        return read(session_read_only || sets_transaction_read_only(text));
    }
    match opening(text) {
        Opening::ReadOnly => Route::Read,
        Opening::ReadWrite => Route::Write,
        Opening::LoneBegin if session_read_only => Route::Read,
        Opening::LoneBegin if matches!(first, Frontend::Query(_)) => Route::Defer,
        Opening::LoneBegin | Opening::Other => read(session_read_only),
    }
}

/// Does `text` mention `synchronous_commit` (a `SET LOCAL` that may make the commit
/// asynchronous)?
pub(crate) fn mentions_synchronous_commit(text: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"synchronous_commit";
    text.windows(NEEDLE.len())
        .any(|w| w.eq_ignore_ascii_case(NEEDLE))
}

/// `SHOW pgbaton.last_commit_lsn` (one statement, simple protocol).
pub(crate) fn is_show_token(text: &[u8]) -> bool {
    // Most queries are not a SHOW: answered without splitting the text.
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    if !start.is_some_and(|i| text[i..].len() > 4 && text[i..i + 4].eq_ignore_ascii_case(b"show")) {
        return false;
    }
    let all = statements(text);
    all.len() == 1 && all[0].len() == 2 && all[0][0] == "show" && all[0][1] == TOKEN_NAME
}

/// The answer to `SHOW pgbaton.last_commit_lsn`: one text column, then ReadyForQuery.
pub(crate) fn show_answer(token: u64, status: u8) -> Vec<u8> {
    let mut out = crate::pooled::show::row_description(false);
    out.extend(crate::pooled::show::data_row(token));
    out.extend(message(b'C', &[b"SHOW\0"]));
    out.extend(crate::pooled::txn::ready_for_query(status));
    out
}

/// What the router answers a lone `BEGIN` it keeps for the next message.
pub(crate) fn begin_answer() -> Vec<u8> {
    let mut out = message(b'C', &[b"BEGIN\0"]);
    out.extend(crate::pooled::txn::ready_for_query(b'T'));
    out
}

/// The ParameterStatus carrying the client's token.
pub(crate) fn token_message(lsn: u64) -> Vec<u8> {
    let value = format_lsn(lsn);
    message(
        b'S',
        &[TOKEN_NAME.as_bytes(), b"\0", value.as_bytes(), b"\0"],
    )
}

/// Run the `BEGIN` the router answered for the client; false: the connection failed.
pub(crate) async fn begin(conn: &mut ServerConn, bound: Duration) -> bool {
    let run = conn.begin();
    match tokio::time::timeout(bound, run).await {
        Ok(Ok(answer)) if answer.error.is_none() => true,
        outcome => {
            tracing::info!(member = %conn.backend.name, ?outcome, "the BEGIN the router held failed");
            false
        }
    }
}

/// What a client's commit on the leader has reached: the flush position (the insert
/// position when the commit may have been asynchronous), read on the connection that just
/// ended the transaction.
pub(crate) async fn commit_lsn(
    conn: &mut ServerConn,
    maybe_async: bool,
    bound: Duration,
) -> Option<u64> {
    let sql = if maybe_async {
        "SELECT pg_catalog.pg_current_wal_insert_lsn()"
    } else {
        "SELECT CASE WHEN pg_catalog.current_setting('synchronous_commit') = 'off' THEN pg_catalog.pg_current_wal_insert_lsn() ELSE pg_catalog.pg_current_wal_flush_lsn() END"
    };
    let run = conn.simple_query(sql);
    let answer = tokio::time::timeout(bound, run).await.ok()?.ok()?;
    if answer.error.is_some() {
        return None;
    }
    answer.rows.first()?.first()?.as_deref().and_then(parse_lsn)
}

/// A transaction of the auto listener ended on the leader: the client's new token (read on
/// the same connection) goes before the ReadyForQuery that ended it, the last message in
/// `cout`. A connection that does not answer is closed, not given back.
pub(crate) async fn token_before_ready(
    ctx: &mut Ctx,
    server: &mut Option<ServerConn>,
    cout: &mut bytes::BytesMut,
) {
    let bound = ctx.shared.cfg.startup_timeout;
    let maybe_async = ctx
        .ryw
        .as_deref_mut()
        .is_some_and(|r| std::mem::take(&mut r.maybe_async_commit));
    let lsn = match server.as_mut() {
        Some(conn) => commit_lsn(conn, maybe_async, bound).await,
        None => None,
    };
    match (lsn, ctx.ryw.as_deref_mut()) {
        (Some(lsn), Some(ryw)) if cout.len() >= READY_LEN => {
            ryw.last_commit = ryw.last_commit.max(lsn);
            let ready = cout.split_off(cout.len() - READY_LEN);
            cout.extend_from_slice(&token_message(ryw.token()));
            cout.extend_from_slice(&ready);
        }
        _ => {
            tracing::info!(pool = %ctx.key, "reading the leader's WAL position after a transaction failed; closing that server connection");
            ctx.detach();
            *server = None;
        }
    }
}

/// A ReadyForQuery's length on the wire.
const READY_LEN: usize = 6;

/// ReadyForQuery, idle, on the wire.
pub(crate) const READY_IDLE: &[u8] = &[b'Z', 0, 0, 0, 5, b'I'];

/// Has the server of `conn` replayed `token`? Err: the connection failed.
async fn has_replayed(conn: &mut ServerConn, token: u64) -> std::io::Result<bool> {
    let answer = conn
        .simple_query("SELECT pg_catalog.pg_last_wal_replay_lsn()")
        .await?;
    if answer.error.is_some() {
        return Err(std::io::Error::other("pg_last_wal_replay_lsn() failed"));
    }
    let replay = answer.rows.first().and_then(|row| row.first()).cloned();
    Ok(match replay {
        // Not in recovery: a primary has everything it wrote.
        Some(None) => true,
        Some(Some(text)) => parse_lsn(&text).is_some_and(|at| at >= token),
        None => false,
    })
}

/// A server connection for the client's next transaction, honouring its token: the pool
/// of `ctx.target`, else the leader (see the module's rules). A `BEGIN` the router
/// answered runs on it first.
pub(crate) async fn acquire(ctx: &mut Ctx) -> Result<ServerConn, Fatal> {
    let mut conn = routed(ctx).await?;
    let Some(ryw) = ctx.ryw.as_deref_mut().filter(|r| r.deferred_begin) else {
        return Ok(conn);
    };
    ryw.deferred_begin = false;
    if begin(&mut conn, ctx.shared.cfg.startup_timeout).await {
        Ok(conn)
    } else {
        Err(Fatal {
            code: "08006",
            message: format!(
                "pgbaton router: the transaction's BEGIN failed on {}; connect again",
                conn.backend.name
            ),
            raw: None,
        })
    }
}

/// [`acquire`] without the deferred BEGIN.
async fn routed(ctx: &mut Ctx) -> Result<ServerConn, Fatal> {
    let Some(ryw) = ctx.ryw.as_deref() else {
        return crate::pooled::acquire(ctx).await;
    };
    if ctx.target == Target::Write {
        return crate::pooled::acquire(ctx).await;
    }
    let (token, wait, auto) = (ryw.token(), ryw.wait, ryw.auto);
    let metrics = ctx.shared.metrics.clone();
    let outcome =
        |what: &'static str| Metrics::count(&metrics.read_your_writes, &[("outcome", what)]);
    match crate::pooled::acquire(ctx).await {
        Ok(conn) if token == 0 => {
            outcome("replica");
            return Ok(conn);
        }
        Ok(conn) => {
            // Asked at once; when it has not, another replica too (an idle connection, or a
            // new one when the pool has room), then both every 2 ms within
            // read_your_writes_wait: the first that has the commit serves the transaction.
            let bound = ctx.shared.cfg.connect_timeout;
            let deadline = tokio::time::Instant::now() + wait;
            let mut held = vec![conn];
            let mut asked_another = false;
            loop {
                let mut i = 0;
                while i < held.len() {
                    match tokio::time::timeout(bound, has_replayed(&mut held[i], token)).await {
                        Ok(Ok(true)) => {
                            let conn = held.swap_remove(i);
                            for other in held {
                                ctx.pooling.pools.checkin(&ctx.key, other);
                            }
                            outcome("replica");
                            return Ok(conn);
                        }
                        Ok(Ok(false)) => i += 1,
                        _ => {
                            let failed = held.swap_remove(i);
                            tracing::info!(pool = %ctx.key, member = %failed.backend.name, "asking a replica for its replay position failed; closing that server connection");
                        }
                    }
                }
                if !asked_another {
                    asked_another = true;
                    if let Some(first) = held.first() {
                        let avoid = first.backend.clone();
                        if let Some(other) = another_replica(ctx, &avoid).await {
                            held.push(other);
                            continue;
                        }
                    }
                }
                if held.is_empty() || tokio::time::Instant::now() + POLL > deadline {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            if !held.is_empty() {
                tracing::debug!(pool = %ctx.key, token = %format_lsn(token), "no replica has replayed the client's last commit in time");
            }
            for conn in held {
                ctx.pooling.pools.checkin(&ctx.key, conn);
            }
        }
        Err(fatal) if !auto => return Err(fatal),
        Err(fatal) => {
            tracing::debug!(pool = %ctx.key, error = %fatal.message, "no replica connection for a read-only transaction; it runs on the leader");
        }
    }
    if !auto && ctx.shared.cfg.read_fallback == crate::config::ReadFallback::Refuse {
        outcome("refused");
        return Err(Fatal {
            code: crate::reply::CANNOT_CONNECT_NOW,
            message: format!(
                "pgbaton router: cannot connect now: no replica has replayed pgbaton.min_lsn {} within read_your_writes_wait ({wait:?}) and read.fallback is refuse",
                format_lsn(token)
            ),
            raw: None,
        });
    }
    outcome("leader");
    ctx.route(Target::Write);
    crate::pooled::acquire(ctx).await
}

/// A server connection of the client's read pool to a replica other than `avoid`, without
/// waiting: an idle one, or a new one when the pool has room; None otherwise.
async fn another_replica(ctx: &Ctx, avoid: &Backend) -> Option<ServerConn> {
    let (shared, target) = (ctx.shared.clone(), ctx.target);
    let usable = move |c: &ServerConn| crate::pooled::usable(&shared, target, c);
    let other = avoid.clone();
    let wanted = move |c: &ServerConn| c.backend != other;
    let checkout = ctx.pooling.pools.try_checkout(&ctx.key, &usable, &wanted)?;
    let mut conn = match checkout {
        Checkout::Idle(conn) => conn,
        Checkout::Open(slot) => crate::pooled::open_for(
            &ctx.shared,
            &ctx.pooling,
            &ctx.key,
            ctx.target,
            slot,
            Some(avoid),
        )
        .await
        .ok()?,
    };
    crate::pooled::apply_params(ctx, &mut conn).await.ok()?;
    Some(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn(" 1/0 "), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0", "-1/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
        assert_eq!(format_lsn(0x16B3748), "0/16B3748");
        assert_eq!(format_lsn((3 << 32) | 0xA), "3/A");
        assert!(parse_token(b"garbage")
            .unwrap_err()
            .contains("pgbaton.min_lsn"));
    }

    #[test]
    fn transactions_declared_read_only_are_seen() {
        for (sql, expected) in [
            ("BEGIN READ ONLY", Opening::ReadOnly),
            (
                "begin transaction isolation level repeatable read, read only",
                Opening::ReadOnly,
            ),
            ("START TRANSACTION READ ONLY; SELECT 1", Opening::ReadOnly),
            (
                "BEGIN; SET TRANSACTION READ ONLY; SELECT * FROM t",
                Opening::ReadOnly,
            ),
            ("BEGIN READ WRITE", Opening::ReadWrite),
            ("BEGIN", Opening::LoneBegin),
            ("  begin work ;", Opening::LoneBegin),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", Opening::LoneBegin),
            ("BEGIN; INSERT INTO t VALUES (1)", Opening::Other),
            ("SELECT 1", Opening::Other),
            ("SELECT 'begin read only'", Opening::Other),
            ("START", Opening::Other),
            ("", Opening::Other),
        ] {
            assert_eq!(opening(sql.as_bytes()), expected, "{sql}");
        }
        assert!(mentions_synchronous_commit(
            b"SET LOCAL Synchronous_Commit = off"
        ));
        assert!(!mentions_synchronous_commit(b"SELECT 1"));
        assert!(sets_transaction_read_only(b"SET TRANSACTION READ ONLY"));
        assert!(sets_transaction_read_only(
            b"set transaction isolation level serializable, read only, deferrable"
        ));
        assert!(!sets_transaction_read_only(b"SET TRANSACTION READ WRITE"));
        assert!(!sets_transaction_read_only(b"SELECT 1"));
    }

    #[test]
    fn routing_follows_the_declaration_and_the_session_default() {
        let q = |s: &'static str| Frontend::Query(s.as_bytes());
        assert_eq!(route(&q("BEGIN READ ONLY"), false, false), Route::Read);
        assert_eq!(route(&q("SELECT 1"), false, false), Route::Write);
        assert_eq!(route(&q("SELECT 1"), true, false), Route::Read);
        assert_eq!(route(&q("BEGIN READ WRITE"), true, false), Route::Write);
        assert_eq!(route(&q("BEGIN"), false, false), Route::Defer);
        assert_eq!(route(&q("BEGIN"), true, false), Route::Read);
        // After a lone BEGIN: the statement that follows decides.
        assert_eq!(
            route(&q("SET TRANSACTION READ ONLY"), false, true),
            Route::Read
        );
        assert_eq!(route(&q("SELECT 1"), false, true), Route::Write);
        assert_eq!(route(&q("COMMIT"), false, true), Route::Write);
        // The extended protocol: no deferral (the batch usually holds the query too).
        let parse = Frontend::Parse {
            name: b"",
            definition: b"BEGIN READ ONLY\0\0\0",
        };
        assert_eq!(route(&parse, false, false), Route::Read);
        let parse = Frontend::Parse {
            name: b"",
            definition: b"BEGIN\0\0\0",
        };
        assert_eq!(route(&parse, false, false), Route::Write);
        assert_eq!(route(&Frontend::Sync, true, false), Route::Read);
        assert_eq!(route(&Frontend::Sync, false, false), Route::Write);
    }

    #[test]
    fn show_of_the_token_is_answered_by_the_router() {
        assert!(is_show_token(b"SHOW pgbaton.last_commit_lsn"));
        assert!(is_show_token(b"show pgbaton.last_commit_lsn;"));
        assert!(!is_show_token(b"SHOW work_mem"));
        assert!(!is_show_token(b"SHOW pgbaton.last_commit_lsn; SELECT 1"));
        assert!(is_show_token(b"  \n\tShow   pgbaton.last_commit_lsn"));
        assert!(!is_show_token(b"SELECT 1; SHOW pgbaton.last_commit_lsn"));
        assert!(!is_show_token(b"show"));
        assert!(!is_show_token(b""));
        let answer = show_answer(0x16B3748, b'I');
        assert_eq!(answer[0], b'T');
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("0/16B3748"), "{text}");
        assert!(answer.ends_with(&crate::pooled::txn::ready_for_query(b'I')));
        assert_eq!(
            READY_IDLE,
            crate::pooled::txn::ready_for_query(b'I').as_slice()
        );
        let status = token_message(1);
        assert_eq!(&status[5..], b"pgbaton.last_commit_lsn\x000/1\x00");
    }
}
