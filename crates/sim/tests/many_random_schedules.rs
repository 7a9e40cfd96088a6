//! The soak: many seeds, each a random fault schedule over 60 s of virtual time, every
//! invariant checked after every event. `PGBATON_SIM_SEEDS=<n>` changes the number of seeds
//! (default 2,000), `PGBATON_SIM_FIRST_SEED=<n>` the first one; `PGBATON_SIM_RATE=<faults
//! per minute>` and `PGBATON_SIM_MEMBERS=<n>` change the schedule for exploration (a seed
//! found that way replays with the same variables set).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use common::config;
use pgbaton_sim::{run, SimReport};

mod common;

#[test]
fn many_random_schedules() {
    let count = common::env_u64("PGBATON_SIM_SEEDS", 2_000);
    let first = common::env_u64("PGBATON_SIM_FIRST_SEED", 0);
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let failures: Mutex<Vec<SimReport>> = Mutex::new(Vec::new());
    let events = AtomicU64::new(0);
    let leader_changes = AtomicU64::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    break;
                }
                let report = run(&config(seed));
                events.fetch_add(report.events_checked, Ordering::Relaxed);
                leader_changes.fetch_add(u64::from(report.leader_changes), Ordering::Relaxed);
                if !report.violations.is_empty() {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(report);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|r| r.seed);
    eprintln!(
        "{count} seeds in {:.1} s: {} events checked, {} leader changes, {} failing",
        started.elapsed().as_secs_f64(),
        events.load(Ordering::Relaxed),
        leader_changes.load(Ordering::Relaxed),
        failures.len()
    );
    for report in &failures {
        for v in &report.violations {
            eprintln!("{v}");
        }
    }
    if let Some(report) = failures.first() {
        eprintln!("--- trace of seed {} (last lines) ---", report.seed);
        for line in &report.trace {
            eprintln!("{line}");
        }
        panic!(
            "{} of {count} seeds broke a promise; replay the first: PGBATON_SIM_SEED={} cargo test -p pgbaton-sim replay -- --nocapture",
            failures.len(),
            report.seed
        );
    }
}
