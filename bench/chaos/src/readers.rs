//! The reading clients: R tasks, each alternating a read on the leader path (the member
//! accepting writes, reached like the writers reach it — the same [`Route`]: libpq
//! `target_session_attrs=read-write`, or the router's write address — kept until a read
//! fails) and a read on the replica path (every member in turn, directly, over kept
//! connections: hot-standby reads). One statement returns `pg_is_in_recovery()`, the member's
//! timeline and, for every writing client, the largest of its ids visible, all from one
//! snapshot. Successful reads are recorded with invoke and completion times for
//! [`crate::read_check`]; failed ones are only counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use crate::db::connect;
use crate::history::{Clock, Read, ReadPath};
use crate::workload::{first_writable, Route, CONNECT_TIMEOUT};

/// `$1` = number of writing clients. `pg_is_in_recovery()` is evaluated once (a materialized
/// CTE), so the timeline branch never runs `pg_current_wal_lsn()` on a standby.
const READ: &str = "WITH r AS MATERIALIZED (SELECT pg_is_in_recovery() AS rec) \
     SELECT r.rec, \
     CASE WHEN r.rec THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     ARRAY(SELECT coalesce((SELECT max(id) FROM chaos_writes w WHERE w.client = c), 0) \
           FROM generate_series(0, $1::int - 1) AS c ORDER BY c) \
     FROM r";
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after each pair of reads (keeps the 2-core machine usable).
const THINK: Duration = Duration::from_millis(50);

/// What the readers did.
#[derive(Debug, Default)]
pub struct ReadLog {
    pub reads: Vec<Read>,
    /// Reads that got no answer (connection refused or lost, timeout, error).
    pub failed: usize,
}

pub struct Readers {
    handles: Vec<JoinHandle<ReadLog>>,
    stop: Arc<AtomicBool>,
}

impl Readers {
    /// Start `readers` tasks reading the ids of `writers` writing clients.
    pub fn start(route: Route, readers: u16, writers: u16, clock: Clock) -> Readers {
        let route = Arc::new(route);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..readers)
            .map(|r| {
                tokio::spawn(reader_loop(
                    r,
                    route.clone(),
                    i32::from(writers),
                    clock,
                    stop.clone(),
                ))
            })
            .collect();
        Readers { handles, stop }
    }

    /// Stop every reader (each finishes its read in flight); every read, by invoke time.
    pub async fn stop(self) -> ReadLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut log = ReadLog::default();
        for h in self.handles {
            match h.await {
                Ok(mut l) => {
                    log.reads.append(&mut l.reads);
                    log.failed += l.failed;
                }
                Err(e) => tracing::error!("a reader task failed: {e}"),
            }
        }
        log.reads.sort_by(|a, b| a.invoke.total_cmp(&b.invoke));
        log
    }
}

/// A kept connection with the read prepared on it.
struct Session {
    member: usize,
    client: Client,
    read: Statement,
}

async fn open(member: usize, client: Client) -> Option<Session> {
    let read = tokio::time::timeout(CONNECT_TIMEOUT, client.prepare(READ))
        .await
        .ok()?
        .ok()?;
    Some(Session {
        member,
        client,
        read,
    })
}

async fn reader_loop(
    r: u16,
    route: Arc<Route>,
    writers: i32,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> ReadLog {
    let mut log = ReadLog::default();
    let mut leader: Option<Session> = None;
    let members = &route.members;
    let mut replicas: Vec<Option<Session>> = members.iter().map(|_| None).collect();
    // Readers start on different members.
    let mut turn = usize::from(r);
    while !stop.load(Ordering::SeqCst) {
        if leader.is_none() {
            leader = match first_writable(&route).await {
                Some((member, client)) => open(member, client).await,
                None => None,
            };
        }
        if let Some(s) = leader.as_ref() {
            match read_once(s, r, ReadPath::Leader, writers, clock).await {
                Some(read) => log.reads.push(read),
                None => {
                    log.failed += 1;
                    leader = None;
                }
            }
        }

        let k = turn % members.len();
        turn += 1;
        if replicas[k].is_none() {
            replicas[k] = match connect(members[k], CONNECT_TIMEOUT).await {
                Ok(client) => open(k, client).await,
                Err(_) => None,
            };
        }
        match replicas[k].as_ref() {
            Some(s) => match read_once(s, r, ReadPath::Replica, writers, clock).await {
                Some(read) => log.reads.push(read),
                None => {
                    log.failed += 1;
                    replicas[k] = None;
                }
            },
            None => log.failed += 1,
        }
        tokio::time::sleep(THINK).await;
    }
    log
}

/// One read on the session's connection; None when it does not answer in time or errs.
async fn read_once(
    s: &Session,
    reader: u16,
    path: ReadPath,
    writers: i32,
    clock: Clock,
) -> Option<Read> {
    let invoke = clock.now();
    let row = tokio::time::timeout(READ_TIMEOUT, s.client.query_one(&s.read, &[&writers]))
        .await
        .ok()?
        .ok()?;
    let complete = clock.now();
    Some(Read {
        reader,
        path,
        member: s.member,
        invoke,
        complete,
        in_recovery: row.try_get(0).ok()?,
        timeline: row.try_get(1).ok()?,
        max_ids: row.try_get(2).ok()?,
    })
}
