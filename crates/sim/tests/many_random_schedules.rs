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
/// Empty: seed 1762 (a leader demoted over a slow DCS restarting its primary in place while
/// its late keepalives kept the key alive) passes since such a leader gives its key up even
/// without a read (found again, and fixed, by the real-runtime simulation).
const KNOWN_CORE_BUG_SEEDS: &[(u64, ViolationKind)] = &[];

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
