//! The soak: many seeds, each a random fault schedule over 60 s of virtual time (with
//! quick-succession sequences: switchover then the new leader lost, failover then another,
//! switchovers seconds apart), every invariant checked after every event, the continuous
//! liveness check included. `PGBATON_SIM_SEEDS=<n>` changes the number of seeds (default
//! 2,000), `PGBATON_SIM_FIRST_SEED=<n>` the first one; `PGBATON_SIM_RATE=<faults per minute>`,
//! `PGBATON_SIM_QUICK=<sequences per minute>` and `PGBATON_SIM_MEMBERS=<n>` change the
//! schedule for exploration (a seed found that way replays with the same variables set).

use pgbaton_sim::ViolationKind;

mod common;

/// Seeds at which the HA core is known to break a promise (found by this soak; to be fixed
/// in `crates/core`, then removed from here). A known seed is excused only for its kind.
const KNOWN_CORE_BUG_SEEDS: &[(u64, ViolationKind)] = &[
    // A leader demoted over a slow DCS learns from etcd that its lease still lives (keepalives
    // it sent while it led arrived late) and restarts its primary in place; the keepalive it
    // sends with that attempt also arrives late and keeps the key alive after the start
    // failed (a modelled job failure), while the slow DCS keeps it from releasing the key.
    // Leaderless for 7.0 s. (Seed 722, the same start failure over a DCS that still took the
    // release, no longer breaks the bound: a failed start in place releases the key at once.)
    (1762, ViolationKind::Leaderless),
];

#[test]
fn many_random_schedules() {
    let count = common::env_u64("PGBATON_SIM_SEEDS", 2_000);
    let first = common::env_u64("PGBATON_SIM_FIRST_SEED", 0);
    let soak = common::soak(first, count, &common::config);
    soak.print("asynchronous", KNOWN_CORE_BUG_SEEDS);
    let unexpected = soak.unexpected(KNOWN_CORE_BUG_SEEDS);
    if let Some(report) = unexpected.first() {
        panic!(
            "{} of {count} seeds broke a promise (besides the known ones); replay the first: PGBATON_SIM_SEED={} cargo test -p pgbaton-sim replay -- --nocapture",
            unexpected.len(),
            report.seed
        );
    }
}
