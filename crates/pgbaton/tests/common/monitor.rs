//! [`PrimaryMonitor`]: asks every member `SELECT pg_is_in_recovery()` every 100 ms, in
//! parallel, over kept-open connections (reopened when they break), and records every round
//! in which two or more members answered `false`: two writable primaries at the same time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::sql::connect;

const PERIOD: Duration = Duration::from_millis(100);
const ANSWER_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, Default, Clone)]
pub struct MonitorReport {
    pub rounds: u64,
    /// (ms since start, members answering false) for rounds with two or more.
    pub split_brain: Vec<(u128, Vec<String>)>,
    /// Every member seen as primary at least once.
    pub primaries_seen: BTreeSet<String>,
}

pub struct PrimaryMonitor {
    report: Arc<Mutex<MonitorReport>>,
    task: JoinHandle<()>,
}

impl PrimaryMonitor {
    /// Watch `members` (name, PostgreSQL port).
    pub fn start(members: Vec<(String, u16)>) -> PrimaryMonitor {
        let report = Arc::new(Mutex::new(MonitorReport::default()));
        let shared = report.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut clients: Vec<Option<Client>> = members.iter().map(|_| None).collect();
            loop {
                let round_start = Instant::now();
                let asks = members
                    .iter()
                    .zip(clients.iter_mut())
                    .map(|((_, port), slot)| {
                        let port = *port;
                        async move { ask(port, slot).await }
                    });
                let answers = join_all(asks).await;
                let primaries: Vec<String> = members
                    .iter()
                    .zip(answers)
                    .filter(|(_, a)| *a == Some(false))
                    .map(|((name, _), _)| name.clone())
                    .collect();
                if let Ok(mut r) = shared.lock() {
                    r.rounds += 1;
                    r.primaries_seen.extend(primaries.iter().cloned());
                    if primaries.len() > 1 {
                        r.split_brain.push((start.elapsed().as_millis(), primaries));
                    }
                }
                tokio::time::sleep_until((round_start + PERIOD).into()).await;
            }
        });
        PrimaryMonitor { report, task }
    }

    /// Stop and return what was seen.
    pub fn stop(self) -> MonitorReport {
        self.task.abort();
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for PrimaryMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `pg_is_in_recovery()` on the kept connection; None when the member does not answer.
async fn ask(port: u16, slot: &mut Option<Client>) -> Option<bool> {
    if !matches!(slot, Some(c) if !c.is_closed()) {
        *slot = connect(port, ANSWER_TIMEOUT).await.ok();
    }
    let client = slot.as_ref()?;
    let answer = tokio::time::timeout(
        ANSWER_TIMEOUT,
        client.query_one("SELECT pg_is_in_recovery()", &[]),
    )
    .await;
    match answer {
        Ok(Ok(row)) => row.try_get::<_, bool>(0).ok(),
        _ => {
            *slot = None;
            None
        }
    }
}

/// Poll futures together (they borrow, so no spawning).
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

impl super::cluster::Cluster {
    /// Watch every current member for two simultaneous primaries.
    pub fn monitor_primaries(&self) -> PrimaryMonitor {
        PrimaryMonitor::start(
            self.members()
                .into_iter()
                .map(|n| {
                    let port = self.pg_port(&n);
                    (n, port)
                })
                .collect(),
        )
    }
}

/// Assert that no round saw two primaries.
pub fn assert_single_primary(report: &MonitorReport) {
    assert!(
        report.split_brain.is_empty(),
        "two writable primaries at once in {} of {} rounds: {:?}",
        report.split_brain.len(),
        report.rounds,
        &report.split_brain[..report.split_brain.len().min(10)]
    );
}
