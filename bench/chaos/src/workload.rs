//! The writing clients: K tasks, each inserting unique ids one at a time into `chaos_writes`
//! on whichever member accepts writes, found through the [`Route`]: libpq-style
//! (`target_session_attrs=read-write`: try each member in order, keep the first that is not
//! in recovery), or through the router's write address (still checking that the session is
//! not in recovery, as libpq would). The member a session landed on is known from
//! `inet_server_addr()`. Each write is recorded as invoke, then ok / fail / unknown: a
//! timeout or a lost connection after the statement was sent is unknown, only a definite
//! refusal is a failure.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Statement};

use crate::db::connect_to;
use crate::history::{parse_lsn, Clock, Op, Outcome};

/// The table, and the index the readers' per-client `max(id)` uses.
pub const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS chaos_writes (\
     id bigint PRIMARY KEY, client int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
     CREATE INDEX IF NOT EXISTS chaos_writes_client_id ON chaos_writes (client, id); \
     CREATE TABLE IF NOT EXISTS chaos_ryw (id bigint PRIMARY KEY)";
/// The insert; returns the timeline the server writes on and its WAL position.
const INSERT: &str = "INSERT INTO chaos_writes (id, client) VALUES ($1, $2) RETURNING \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, \
     pg_current_wal_lsn()::text";
/// A write with no answer within this is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two writes of one client (keeps the 2-core machine usable).
const THINK: Duration = Duration::from_millis(20);

/// How clients reach the member accepting writes.
#[derive(Debug, Clone)]
pub struct Route {
    /// Addresses tried in order: every member (libpq multi-host), or the router's write
    /// listener alone.
    pub entry: Vec<SocketAddrV4>,
    /// Every member's address, by member index: a session's server is found among them.
    pub members: Vec<Ipv4Addr>,
}

pub struct Workload {
    handles: Vec<JoinHandle<Vec<Op>>>,
    stop: Arc<AtomicBool>,
}

impl Workload {
    pub fn start(route: Route, clients: u16, clock: Clock) -> Workload {
        let route = Arc::new(route);
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicI64::new(1));
        let handles = (0..clients)
            .map(|c| {
                tokio::spawn(client_loop(
                    c,
                    route.clone(),
                    clock,
                    next_id.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Workload { handles, stop }
    }

    /// Stop every client (each finishes its write in flight) and return every operation.
    pub async fn stop(self) -> Vec<Op> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ops = Vec::new();
        for h in self.handles {
            match h.await {
                Ok(mut o) => ops.append(&mut o),
                Err(e) => tracing::error!("a client task failed: {e}"),
            }
        }
        ops.sort_by(|a, b| a.invoke.total_cmp(&b.invoke));
        ops
    }
}

/// A connection to the member that accepted writes when it was chosen.
struct Writer {
    member: usize,
    client: Client,
    insert: Statement,
}

async fn client_loop(
    c: u16,
    route: Arc<Route>,
    clock: Clock,
    next_id: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut writer: Option<Writer> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(w) = writer.as_ref() else {
            writer = find_writable(&route).await;
            if writer.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let invoke = clock.now();
        let answer = tokio::time::timeout(
            OP_TIMEOUT,
            w.client.query_one(&w.insert, &[&id, &i32::from(c)]),
        )
        .await;
        let complete = clock.now();
        let (outcome, timeline, lsn, error) = classify(answer);
        ops.push(Op {
            id,
            client: c,
            member: w.member,
            invoke,
            complete,
            outcome,
            timeline,
            lsn,
            error,
        });
        if outcome != Outcome::Ok {
            writer = None;
        }
        tokio::time::sleep(THINK).await;
    }
    ops
}

type Answer = Result<Result<Row, tokio_postgres::Error>, tokio::time::error::Elapsed>;

fn classify(answer: Answer) -> (Outcome, Option<i32>, Option<u64>, Option<String>) {
    match answer {
        Err(_) => (
            Outcome::Unknown,
            None,
            None,
            Some(format!("no answer within {OP_TIMEOUT:?}")),
        ),
        Ok(Ok(row)) => {
            let timeline = row.try_get::<_, i32>(0).ok();
            let lsn = row.try_get::<_, String>(1).ok().and_then(|t| parse_lsn(&t));
            (Outcome::Ok, timeline, lsn, None)
        }
        Ok(Err(e)) => {
            let outcome = match e.code() {
                Some(code) if definitely_not_committed(code) => Outcome::Fail,
                _ => Outcome::Unknown,
            };
            (outcome, None, None, Some(e.to_string()))
        }
    }
}

/// Errors after which the insert certainly did not commit.
fn definitely_not_committed(code: &SqlState) -> bool {
    [
        SqlState::READ_ONLY_SQL_TRANSACTION,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::UNDEFINED_TABLE,
    ]
    .contains(code)
}

/// libpq's multi-host rule with `target_session_attrs=read-write`: the first entry address,
/// in order, that accepts a connection whose server is not in recovery; with the index of
/// that server among the members.
pub async fn first_writable(route: &Route) -> Option<(usize, Client)> {
    for addr in &route.entry {
        let attempt = async {
            let client = connect_to(*addr, CONNECT_TIMEOUT).await?;
            let row = client
                .query_one("SELECT pg_is_in_recovery(), host(inet_server_addr())", &[])
                .await?;
            if row.try_get::<_, bool>(0)? {
                anyhow::bail!("{addr} is in recovery");
            }
            let server: Option<String> = row.try_get(1)?;
            let member = server
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .and_then(|ip| route.members.iter().position(|m| *m == ip))
                .ok_or_else(|| anyhow::anyhow!("{addr}: the server is not a member"))?;
            anyhow::Ok((member, client))
        };
        if let Ok(Ok(found)) = tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
            return Some(found);
        }
    }
    None
}

async fn find_writable(route: &Route) -> Option<Writer> {
    let (member, client) = first_writable(route).await?;
    let insert = tokio::time::timeout(CONNECT_TIMEOUT, client.prepare(INSERT))
        .await
        .ok()?
        .ok()?;
    Some(Writer {
        member,
        client,
        insert,
    })
}
