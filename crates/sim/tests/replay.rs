//! Replays one seed with its full trace: `PGBATON_SIM_SEED=<n> cargo test -p pgbaton-sim replay -- --nocapture`.
//! Without the variable it replays seed 1 (and still checks it). `PGBATON_SIM_RATE` and
//! `PGBATON_SIM_MEMBERS` apply as in `many_random_schedules`; `PGBATON_SIM_SYNC=<label>`
//! replays a seed of `sync_mode_random_schedules` (labels in `common::SYNC_CONFIGS`).

use pgbaton_sim::run;

mod common;

#[test]
fn replay() {
    let seed = match std::env::var("PGBATON_SIM_SEED") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("PGBATON_SIM_SEED={s:?} is not a number: {e}")),
        Err(_) => 1,
    };
    let mut cfg = common::replay_config(seed);
    cfg.trace_lines = 100_000;
    let report = run(&cfg);
    for line in &report.trace {
        println!("{line}");
    }
    println!(
        "seed {seed}: {} events checked, {} leader changes, ended at {} ms, converged at {:?}",
        report.events_checked, report.leader_changes, report.end_ms, report.converged_at
    );
    for v in &report.violations {
        println!("{v}");
    }
    assert!(report.violations.is_empty(), "{}", report.violations[0]);
}
