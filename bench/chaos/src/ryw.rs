//! Read-your-writes through the router's auto listener (`--via router`): C clients, each
//! inserting a unique id into `chaos_ryw` and then reading it back in a `START TRANSACTION
//! READ ONLY` transaction on the same connection (which the router may send to a replica
//! that has replayed the client's commit, else to the leader). A read that misses the
//! client's own acknowledged write is a violation — unless the cluster lost that write (an
//! asynchronous failover: the final leader does not have it either), which is counted apart.
//! Failed operations (during faults) are counted and the client connects again.

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::db::connect_to;
use crate::history::Clock;

/// An operation with no answer within this is a failure (the client connects again).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two pairs of one client.
const THINK: Duration = Duration::from_millis(30);

/// One acknowledged write and the read after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub id: i64,
    /// When the read was invoked, on the run clock.
    pub at: f64,
    /// The read saw the row.
    pub seen: bool,
    /// The read ran on a member in recovery.
    pub on_replica: bool,
}

#[derive(Debug, Default)]
pub struct RywLog {
    pub pairs: Vec<Pair>,
    /// Writes or reads that failed (no answer, an error, a lost connection).
    pub failed: usize,
}

pub struct RywClients {
    handles: Vec<JoinHandle<RywLog>>,
    stop: Arc<AtomicBool>,
}

impl RywClients {
    pub fn start(auto: SocketAddrV4, clients: u16, clock: Clock) -> RywClients {
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicI64::new(1));
        let handles = (0..clients)
            .map(|_| tokio::spawn(client_loop(auto, clock, next_id.clone(), stop.clone())))
            .collect();
        RywClients { handles, stop }
    }

    pub async fn stop(self) -> RywLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut log = RywLog::default();
        for h in self.handles {
            if let Ok(mut l) = h.await {
                log.pairs.append(&mut l.pairs);
                log.failed += l.failed;
            }
        }
        log
    }
}

async fn client_loop(
    auto: SocketAddrV4,
    clock: Clock,
    next_id: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) -> RywLog {
    let mut log = RywLog::default();
    let mut client = None;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            match connect_to(auto, Duration::from_secs(2)).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else {
            continue;
        };
        match tokio::time::timeout(OP_TIMEOUT, pair(c, &next_id, clock)).await {
            Ok(Ok(p)) => log.pairs.push(p),
            _ => {
                log.failed += 1;
                client = None;
            }
        }
        tokio::time::sleep(THINK).await;
    }
    log
}

async fn pair(
    client: &mut tokio_postgres::Client,
    next_id: &AtomicI64,
    clock: Clock,
) -> Result<Pair, tokio_postgres::Error> {
    let id = next_id.fetch_add(1, Ordering::SeqCst);
    client
        .execute("INSERT INTO chaos_ryw (id) VALUES ($1)", &[&id])
        .await?;
    let at = clock.now();
    let tx = client.build_transaction().read_only(true).start().await?;
    let row = tx
        .query_one(
            "SELECT count(*), pg_is_in_recovery() FROM chaos_ryw WHERE id = $1",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(Pair {
        id,
        at,
        seen: row.get::<_, i64>(0) == 1,
        on_replica: row.get(1),
    })
}

/// What the read-your-writes clients saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RywVerdict {
    pub pairs: usize,
    pub on_replica: usize,
    pub failed: usize,
    /// Reads that missed a write the cluster then lost.
    pub missed_lost: usize,
    /// Reads that missed the client's own write the cluster kept: (id, when).
    pub violations: Vec<(i64, f64)>,
}

/// Judge the pairs against the final leader's `chaos_ryw` ids (None: unreadable — every
/// miss then counts as a violation).
pub fn check(log: &RywLog, final_ids: Option<&HashSet<i64>>) -> RywVerdict {
    let mut v = RywVerdict {
        pairs: log.pairs.len(),
        on_replica: log.pairs.iter().filter(|p| p.on_replica).count(),
        failed: log.failed,
        ..RywVerdict::default()
    };
    for p in log.pairs.iter().filter(|p| !p.seen) {
        match final_ids {
            Some(ids) if !ids.contains(&p.id) => v.missed_lost += 1,
            _ => v.violations.push((p.id, p.at)),
        }
    }
    v
}

/// The summary line.
pub fn line(v: &RywVerdict) -> String {
    format!(
        "read-your-writes: pairs={} on_replica={} failed={} missed_lost={} violations={}",
        v.pairs,
        v.on_replica,
        v.failed,
        v.missed_lost,
        v.violations.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: i64, seen: bool) -> Pair {
        Pair {
            id,
            at: id as f64,
            seen,
            on_replica: id % 2 == 0,
        }
    }

    #[test]
    fn a_missed_own_write_is_a_violation_unless_the_cluster_lost_it() {
        let log = RywLog {
            pairs: vec![pair(1, true), pair(2, false), pair(3, false), pair(4, true)],
            failed: 2,
        };
        let kept: HashSet<i64> = [1, 2, 4].into_iter().collect();
        let v = check(&log, Some(&kept));
        assert_eq!(v.pairs, 4);
        assert_eq!(v.on_replica, 2);
        assert_eq!(v.missed_lost, 1, "id 3 is gone from the final leader: lost");
        assert_eq!(v.violations, vec![(2, 2.0)], "id 2 was kept: a stale read");
        assert_eq!(
            line(&v),
            "read-your-writes: pairs=4 on_replica=2 failed=2 missed_lost=1 violations=1"
        );
        let unknown = check(&log, None);
        assert_eq!(
            unknown.violations.len(),
            2,
            "no final state: every miss counts"
        );
    }
}
