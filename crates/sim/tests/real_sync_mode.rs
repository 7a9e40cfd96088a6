//! Synchronous replication in the real-runtime simulation: the real agents
//! (`pgbaton_agent::Agent`) set `synchronous_standby_names` and the `sync` key, the simulated
//! PostgreSQL acknowledges client commits by PostgreSQL's rules, and no acknowledged commit
//! may be lost (invariants 6–8 in `crates/sim/src/real/commits.rs`), besides every promise of
//! the asynchronous runs.
//!
//! Every configuration (FIRST 1 and 2, strict or not; ANY 1 and 2) with 3 members (even
//! seeds) and 5 (odd seeds), 30 s of random faults at 12 per minute, slow standbys and
//! switchovers to the synchronous standby or an asynchronous replica included.
//! `PGBATON_SIM_REAL_SYNC_SEEDS=<n>` seeds per configuration (default 1,500: 9,000 in all),
//! `PGBATON_SIM_REAL_FIRST_SEED=<n>`; `PGBATON_SIM_SYNC=<label>` one configuration only.
//! Replay one: `PGBATON_SIM_SYNC=<label> PGBATON_SIM_REAL_SEED=<n> cargo test -p pgbaton-sim
//! --test real_sync_mode real_sync_replay -- --nocapture`.

use pgbaton_sim::{run_real, RealConfig, RealReport, SyncConfig, SyncMode};

const CONFIGS: [(&str, SyncConfig); 6] = [
    ("on1", sync(SyncMode::On, false, 1)),
    ("on1-strict", sync(SyncMode::On, true, 1)),
    ("on2", sync(SyncMode::On, false, 2)),
    ("on2-strict", sync(SyncMode::On, true, 2)),
    ("quorum1", sync(SyncMode::Quorum, false, 1)),
    ("quorum2", sync(SyncMode::Quorum, false, 2)),
];

const fn sync(mode: SyncMode, strict: bool, count: u32) -> SyncConfig {
    SyncConfig {
        mode,
        strict,
        count,
    }
}

mod common;

use common::env_u64;

fn config(label: &str, seed: u64) -> RealConfig {
    let (_, sync) = CONFIGS
        .iter()
        .find(|(l, _)| *l == label)
        .unwrap_or_else(|| panic!("PGBATON_SIM_SYNC={label:?}: not one of {CONFIGS:?}"));
    RealConfig {
        members: if seed.is_multiple_of(2) { 3 } else { 5 },
        duration_ms: 30_000,
        fault_rate: 12.0,
        ..RealConfig::synchronous(seed, *sync)
    }
}

fn show(label: &str, report: &RealReport) -> String {
    let mut out = format!(
        "{label} seed {}: ended at {} ms, converged at {:?}, {} commits acknowledged, faults {:?}\n",
        report.seed,
        report.end_ms,
        report.converged_at,
        report.acks.len(),
        report.faults
    );
    for line in report
        .trace
        .iter()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        out.push_str(line);
        out.push('\n');
    }
    for v in &report.violations {
        out.push_str(&format!("{:?} at {} ms: {}\n", v.kind, v.at, v.description));
    }
    out
}

fn soak(label: &str) -> Result<String, String> {
    let count = env_u64("PGBATON_SIM_REAL_SYNC_SEEDS", 1_500);
    let first = env_u64("PGBATON_SIM_REAL_FIRST_SEED", 0);
    let mut acks = 0;
    let mut by_design = 0;
    let mut failed: Vec<RealReport> = Vec::new();
    for seed in first..first + count {
        let report = run_real(&config(label, seed));
        acks += report.acks.len();
        by_design += usize::from(report.leaderless_by_design.is_some());
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    let summary = format!(
        "{label}: {count} seeds, {acks} commits acknowledged, {by_design} ended leaderless by design, {} broke a promise",
        failed.len()
    );
    match failed.first() {
        None => Ok(summary),
        Some(report) => {
            let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
            Err(format!(
                "{summary} (seeds {seeds:?}); the first:\n{}\nreplay: PGBATON_SIM_SYNC={label} PGBATON_SIM_REAL_SEED={} cargo test -p pgbaton-sim --test real_sync_mode real_sync_replay -- --nocapture",
                show(label, report),
                report.seed
            ))
        }
    }
}

fn soak_one(label: &str) {
    if std::env::var("PGBATON_SIM_SYNC").is_ok_and(|only| only.trim() != label) {
        return;
    }
    match soak(label) {
        Ok(summary) => println!("{summary}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn real_sync_first_1() {
    soak_one("on1");
}

#[test]
fn real_sync_first_1_strict() {
    soak_one("on1-strict");
}

#[test]
fn real_sync_first_2() {
    soak_one("on2");
}

#[test]
fn real_sync_first_2_strict() {
    soak_one("on2-strict");
}

#[test]
fn real_sync_quorum_1() {
    soak_one("quorum1");
}

#[test]
fn real_sync_quorum_2() {
    soak_one("quorum2");
}

#[test]
fn real_sync_replay() {
    let label = std::env::var("PGBATON_SIM_SYNC").unwrap_or_else(|_| "on1".to_string());
    let seed = env_u64("PGBATON_SIM_REAL_SEED", 1);
    let report = run_real(&config(label.trim(), seed));
    for line in &report.trace {
        println!("{line}");
    }
    println!("{}", show(label.trim(), &report));
    assert!(
        report.violations.is_empty(),
        "{}",
        show(label.trim(), &report)
    );
}

/// A quiet synchronous cluster acknowledges commits, through its synchronous standby.
#[test]
fn a_quiet_synchronous_cluster_acknowledges_commits() {
    for (label, _) in CONFIGS {
        let cfg = RealConfig {
            scripted: Some(Vec::new()),
            duration_ms: 10_000,
            ..config(label, 2)
        };
        let report = run_real(&cfg);
        assert!(report.violations.is_empty(), "{}", show(label, &report));
        assert!(report.converged_at.is_some(), "{}", show(label, &report));
        assert!(report.acks.len() > 100, "{}", show(label, &report));
    }
}
