//! The soak: many seeds, each a random fault schedule over 60 s of virtual time, every
//! invariant checked after every event. `PGBATON_SIM_SEEDS=<n>` changes the number of seeds
//! (default 2,000), `PGBATON_SIM_FIRST_SEED=<n>` the first one; `PGBATON_SIM_RATE=<faults
//! per minute>` and `PGBATON_SIM_MEMBERS=<n>` change the schedule for exploration (a seed
//! found that way replays with the same variables set).

use common::config;

mod common;

#[test]
fn many_random_schedules() {
    let count = common::env_u64("PGBATON_SIM_SEEDS", 2_000);
    let first = common::env_u64("PGBATON_SIM_FIRST_SEED", 0);
    let soak = common::soak(first, count, &config);
    soak.print("asynchronous");
    if let Some(report) = soak.failures.first() {
        panic!(
            "{} of {count} seeds broke a promise; replay the first: PGBATON_SIM_SEED={} cargo test -p pgbaton-sim replay -- --nocapture",
            soak.failures.len(),
            report.seed
        );
    }
}
