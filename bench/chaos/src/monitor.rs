//! The primary monitor: every 100 ms it asks every member `SELECT pg_is_in_recovery()` over a
//! kept-open connection (one task per member, rounds aligned on one tick). It keeps every
//! answer (the liveness checker needs to know when the leader key's holder was writable) and
//! the rounds in which two or more members answered `false`: two writable primaries at once.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::db::connect;
use crate::history::{Clock, DualRound};

const PERIOD: Duration = Duration::from_millis(100);
const ANSWER_TIMEOUT: Duration = Duration::from_millis(400);

/// One `false` answer: (round, member, asked at, answered at).
type Writable = (u64, usize, f64, f64);

/// One answer of one member: `in_recovery` is None when it did not answer within 400 ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub member: usize,
    pub asked: f64,
    pub answered: f64,
    pub in_recovery: Option<bool>,
}

pub struct Monitor {
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    writable: Arc<Mutex<Vec<Writable>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
    rounds: Arc<AtomicU64>,
}

/// What the monitor saw.
#[derive(Debug, Default)]
pub struct MonitorReport {
    pub rounds: u64,
    pub dual: Vec<DualRound>,
    /// Every answer, in the order they came.
    pub answers: Vec<Answer>,
}

impl Monitor {
    pub fn start(members: Vec<Ipv4Addr>, clock: Clock) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let writable = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let rounds = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let tasks = members
            .into_iter()
            .enumerate()
            .map(|(k, ip)| {
                let (stop, writable, rounds) = (stop.clone(), writable.clone(), rounds.clone());
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut slot: Option<Client> = None;
                    let mut round: u64 = 0;
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep_until((origin + PERIOD * round as u32).into()).await;
                        let asked = clock.now();
                        let answer = ask(ip, &mut slot).await;
                        if let Ok(mut a) = answers.lock() {
                            a.push(Answer {
                                member: k,
                                asked,
                                answered: clock.now(),
                                in_recovery: answer,
                            });
                        }
                        if answer == Some(false) {
                            if let Ok(mut w) = writable.lock() {
                                w.push((round, k, asked, clock.now()));
                            }
                        }
                        if k == 0 {
                            rounds.fetch_add(1, Ordering::Relaxed);
                        }
                        // Skip the rounds this answer overran.
                        let next = (origin.elapsed().as_millis() / PERIOD.as_millis()) as u64 + 1;
                        round = next.max(round + 1);
                    }
                })
            })
            .collect();
        Monitor {
            tasks,
            stop,
            writable,
            answers,
            rounds,
        }
    }

    pub async fn stop(self) -> MonitorReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        let writable = self.writable.lock().map(|w| w.clone()).unwrap_or_default();
        let answers = self.answers.lock().map(|a| a.clone()).unwrap_or_default();
        MonitorReport {
            rounds: self.rounds.load(Ordering::Relaxed),
            dual: dual_rounds(&writable),
            answers,
        }
    }
}

/// Group the `false` answers by round; keep rounds with two or more members.
pub fn dual_rounds(writable: &[Writable]) -> Vec<DualRound> {
    let mut by_round: BTreeMap<u64, DualRound> = BTreeMap::new();
    for &(round, k, asked, answered) in writable {
        let r = by_round.entry(round).or_insert(DualRound {
            start: asked,
            end: answered,
            writable: Vec::new(),
        });
        r.start = r.start.min(asked);
        r.end = r.end.max(answered);
        if !r.writable.contains(&k) {
            r.writable.push(k);
        }
    }
    by_round
        .into_values()
        .filter(|r| r.writable.len() > 1)
        .map(|mut r| {
            r.writable.sort_unstable();
            r
        })
        .collect()
}

/// `pg_is_in_recovery()` on the kept connection; None when the member does not answer.
async fn ask(ip: Ipv4Addr, slot: &mut Option<Client>) -> Option<bool> {
    if !matches!(slot, Some(c) if !c.is_closed()) {
        *slot = connect(ip, ANSWER_TIMEOUT).await.ok();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rounds_with_two_writable_members_are_kept() {
        let w = vec![
            (1, 0, 0.10, 0.11),
            (2, 0, 0.20, 0.21),
            (2, 1, 0.20, 0.23),
            (3, 1, 0.30, 0.31),
        ];
        let dual = dual_rounds(&w);
        assert_eq!(
            dual,
            vec![DualRound {
                start: 0.20,
                end: 0.23,
                writable: vec![0, 1]
            }]
        );
    }
}
