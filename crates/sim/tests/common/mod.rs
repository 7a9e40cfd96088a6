//! Shared by the soaks and the replay: the configuration of a seed, with the exploration
//! overrides from the environment, and the parallel soak runner.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use pgbaton_sim::{run, SimConfig, SimReport, ViolationKind};

pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={s:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// The configuration of one seed, with the exploration overrides.
pub fn config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    // Every third seed ranks the members by `failover_priority` (m1 lowest); every fourth
    // runs in failsafe mode.
    cfg.ha = match (seed % 3 == 2, seed % 4 == 1) {
        (false, false) => pgbaton_sim::HaConfig::with_defaults,
        (true, false) => ranked,
        (false, true) => failsafe,
        (true, true) => ranked_failsafe,
    };
    overrides(&mut cfg);
    cfg
}

/// Defaults with `failsafe_mode: true`.
pub fn failsafe(name: &str) -> pgbaton_sim::HaConfig {
    pgbaton_sim::HaConfig {
        failsafe_mode: true,
        ..pgbaton_sim::HaConfig::with_defaults(name)
    }
}

fn ranked_failsafe(name: &str) -> pgbaton_sim::HaConfig {
    pgbaton_sim::HaConfig {
        failsafe_mode: true,
        ..ranked(name)
    }
}

/// A seed of the failsafe soak: failsafe mode, 3 members for even seeds and 5 for odd ones,
/// 60 s of a DCS-focused schedule (etcd outages, partitions from etcd, agent kills and
/// stops, isolation) at 10 faults per minute.
pub fn failsafe_config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    cfg.ha = failsafe;
    cfg.members = if seed.is_multiple_of(2) { 3 } else { 5 };
    cfg.fault_rate = 10.0;
    overrides(&mut cfg);
    let ttl = failsafe("m1").ttl_ms;
    cfg.scripted = Some(pgbaton_sim::random_dcs_schedule(
        seed,
        cfg.members,
        ttl,
        cfg.fault_window_start_ms,
        cfg.duration_ms,
        cfg.fault_rate,
    ));
    cfg
}

/// Defaults, with `failover_priority` = the member's number (m1: 1, m2: 2, ...).
fn ranked(name: &str) -> pgbaton_sim::HaConfig {
    pgbaton_sim::HaConfig {
        failover_priority: name.trim_start_matches('m').parse().unwrap_or(1),
        ..pgbaton_sim::HaConfig::with_defaults(name)
    }
}

/// `PGBATON_SIM_RATE`, `PGBATON_SIM_QUICK` (quick-succession sequences per minute),
/// `PGBATON_SIM_MEMBERS`, `PGBATON_SIM_SSN_RELOAD_MS` (reload delay of
/// synchronous_standby_names), `PGBATON_SIM_NO_KEY_CHECK` (invariant 7 off) and
/// `PGBATON_SIM_OLD_TIMELINES` (the old adapter's timeline source, see `timeline_sources.rs`),
/// when set.
pub fn overrides(cfg: &mut SimConfig) {
    if let Ok(rate) = std::env::var("PGBATON_SIM_QUICK") {
        cfg.quick_succession_rate = rate
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("PGBATON_SIM_QUICK={rate:?}: {e}"));
    }
    if std::env::var("PGBATON_SIM_OLD_TIMELINES").is_ok() {
        cfg.timeline_model = pgbaton_sim::TimelineModel::ControlFileWhenNotStreaming;
    }
    if let Ok(rate) = std::env::var("PGBATON_SIM_RATE") {
        cfg.fault_rate = rate
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("PGBATON_SIM_RATE={rate:?}: {e}"));
    }
    if std::env::var("PGBATON_SIM_NO_KEY_CHECK").is_ok() {
        cfg.check_sync_key = false;
    }
    if let Ok(ms) = std::env::var("PGBATON_SIM_SSN_RELOAD_MS") {
        cfg.ssn_reload_max_ms = ms
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("PGBATON_SIM_SSN_RELOAD_MS={ms:?}: {e}"));
    }
    if std::env::var("PGBATON_SIM_MEMBERS").is_ok() {
        cfg.members = env_u64("PGBATON_SIM_MEMBERS", 3) as usize;
    }
}

/// What a soak saw.
pub struct Soak {
    pub first: u64,
    pub runs: u64,
    pub events: u64,
    pub leader_changes: u64,
    pub acks: u64,
    pub leaderless_by_design: u64,
    /// Runs in which the sync key named a member lacking an acknowledged commit (invariant
    /// 7, counted when it does not stop the run).
    pub key_breaches: Vec<u64>,
    pub seconds: f64,
    /// Reports with a violation, by seed.
    pub failures: Vec<SimReport>,
}

/// Run `count` seeds from `first` on up to 4 threads.
pub fn soak(first: u64, count: u64, make: &(dyn Fn(u64) -> SimConfig + Sync)) -> Soak {
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let failures: Mutex<Vec<SimReport>> = Mutex::new(Vec::new());
    let events = AtomicU64::new(0);
    let leader_changes = AtomicU64::new(0);
    let acks = AtomicU64::new(0);
    let by_design = AtomicU64::new(0);
    let key_breaches: Mutex<Vec<u64>> = Mutex::new(Vec::new());
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
                let report = run(&make(seed));
                events.fetch_add(report.events_checked, Ordering::Relaxed);
                leader_changes.fetch_add(u64::from(report.leader_changes), Ordering::Relaxed);
                acks.fetch_add(report.acks.len() as u64, Ordering::Relaxed);
                if report.sync_key_breach.is_some() {
                    key_breaches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(seed);
                }
                if report.leaderless_by_design.is_some() {
                    by_design.fetch_add(1, Ordering::Relaxed);
                }
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
    let mut key_breaches = key_breaches.into_inner().unwrap_or_else(|p| p.into_inner());
    key_breaches.sort_unstable();
    Soak {
        key_breaches,
        first,
        runs: count,
        events: events.into_inner(),
        leader_changes: leader_changes.into_inner(),
        acks: acks.into_inner(),
        leaderless_by_design: by_design.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
        failures,
    }
}

impl Soak {
    /// The failing runs that are not known findings: a known seed is excused only for the
    /// kind of violation it is known for (`print` names known seeds that pass now).
    pub fn unexpected(&self, known: &[(u64, ViolationKind)]) -> Vec<&SimReport> {
        let excused = |r: &&SimReport| {
            r.violations
                .first()
                .is_some_and(|v| known.contains(&(r.seed, v.kind)))
        };
        self.failures.iter().filter(|r| !excused(r)).collect()
    }

    fn covers(&self, seed: u64) -> bool {
        (self.first..self.first + self.runs).contains(&seed)
    }

    /// Print the summary and every violation (the known ones marked); the trace of the first
    /// failing seed that is not known.
    pub fn print(&self, label: &str, known: &[(u64, ViolationKind)]) {
        eprintln!(
            "{label}: {} seeds in {:.1} s: {} events checked, {} leader changes, {} commits acknowledged, {} leaderless by design, {} with a wrong sync key (first seeds {:?}), {} failing ({} known)",
            self.runs,
            self.seconds,
            self.events,
            self.leader_changes,
            self.acks,
            self.leaderless_by_design,
            self.key_breaches.len(),
            &self.key_breaches[..self.key_breaches.len().min(5)],
            self.failures.len(),
            self.failures.len() - self.unexpected(known).len(),
        );
        let passing: Vec<u64> = known
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| self.covers(*s) && !self.failures.iter().any(|r| r.seed == *s))
            .collect();
        if !passing.is_empty() {
            eprintln!(
                "{label}: known failing seeds {passing:?} pass now: remove them from the list"
            );
        }
        for report in &self.failures {
            for v in &report.violations {
                let mark = if known.contains(&(report.seed, v.kind)) {
                    "known: "
                } else {
                    ""
                };
                eprintln!("{mark}{v}");
            }
        }
        if let Some(report) = self.unexpected(known).first() {
            eprintln!("--- trace of seed {} (last lines) ---", report.seed);
            for line in &report.trace {
                eprintln!("{line}");
            }
        }
    }
}

/// The synchronous configurations the soak runs, by the label `PGBATON_SIM_SYNC` takes.
pub const SYNC_CONFIGS: [(&str, pgbaton_sim::SyncConfig); 6] = [
    ("on1", sync(pgbaton_sim::SyncMode::On, false, 1)),
    ("on1-strict", sync(pgbaton_sim::SyncMode::On, true, 1)),
    ("on2", sync(pgbaton_sim::SyncMode::On, false, 2)),
    ("on2-strict", sync(pgbaton_sim::SyncMode::On, true, 2)),
    ("quorum1", sync(pgbaton_sim::SyncMode::Quorum, false, 1)),
    ("quorum2", sync(pgbaton_sim::SyncMode::Quorum, false, 2)),
];

const fn sync(mode: pgbaton_sim::SyncMode, strict: bool, count: u32) -> pgbaton_sim::SyncConfig {
    pgbaton_sim::SyncConfig {
        mode,
        strict,
        count,
    }
}

/// A seed of the synchronous soak: 3 members for even seeds, 5 for odd ones, 30 s of faults
/// at 12 per minute. Invariant 7
/// stops the run unless `PGBATON_SIM_NO_KEY_CHECK` is set.
pub fn sync_config(seed: u64, label: &str) -> SimConfig {
    let (_, sync) = SYNC_CONFIGS
        .iter()
        .find(|(l, _)| *l == label)
        .unwrap_or_else(|| panic!("PGBATON_SIM_SYNC={label:?}: not one of {SYNC_CONFIGS:?}"));
    let mut cfg = SimConfig::synchronous(seed, *sync);
    cfg.members = if seed.is_multiple_of(2) { 3 } else { 5 };
    // Half the asynchronous soak's 60 s at twice its fault rate: as many faults, denser,
    // and 6,000 runs in about a minute of debug build.
    cfg.duration_ms = 30_000;
    cfg.fault_rate = 12.0;
    overrides(&mut cfg);
    cfg
}

/// The replay's configuration: synchronous when `PGBATON_SIM_SYNC` names one,
/// and the failsafe soak's when `PGBATON_SIM_FAILSAFE` is set.
pub fn replay_config(seed: u64) -> SimConfig {
    if std::env::var("PGBATON_SIM_FAILSAFE").is_ok() {
        return failsafe_config(seed);
    }
    match std::env::var("PGBATON_SIM_SYNC") {
        Ok(label) => sync_config(seed, label.trim()),
        Err(_) => config(seed),
    }
}
