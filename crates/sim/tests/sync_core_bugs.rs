//! Regression tests: seeds at which the simulator once showed the HA core deciding something
//! unsafe in synchronous mode (a quorum key narrower than the ANY names in force; a requested
//! candidate skipping the quorum check; a stale sync key after failover while a new leader's
//! names kept changing; a restarted leader acknowledging through any standby; a quorum key
//! written while asynchronous). Each asserts that every promise holds. Replay one with its
//! trace: `PGBATON_SIM_QUICK=0 PGBATON_SIM_SYNC=<label> PGBATON_SIM_SEED=<n>
//! [PGBATON_SIM_NO_KEY_CHECK=1] cargo test -p pgbaton-sim --test replay -- --nocapture`.

use pgbaton_sim::run;

mod common;

/// A seed of the soak as it was when the bug was found: without the quick-succession
/// sequences added to the schedules since (replay with `PGBATON_SIM_QUICK=0`).
fn as_found(seed: u64, label: &str) -> pgbaton_sim::SimConfig {
    let mut cfg = common::sync_config(seed, label);
    cfg.quick_succession_rate = 0.0;
    cfg
}

/// Run a seed of the soak and require every promise to hold.
fn holds(label: &str, seed: u64, key_check: bool) {
    let mut cfg = as_found(seed, label);
    cfg.check_sync_key = key_check;
    cfg.trace_lines = 400;
    let r = run(&cfg);
    if let Some(v) = r.violations.first() {
        panic!(
            "{v}\nfirst wrong sync key: {:?}\n{}",
            r.sync_key_breach.as_ref().map(|b| b.to_string()),
            r.trace.join("\n")
        );
    }
    if key_check {
        return;
    }
    assert!(r.sync_key_breach.is_none(), "{:?}", r.sync_key_breach);
}

/// Quorum mode, 3 members. The leader m2 puts `ANY 1 ("m1", "m3")` in force while the sync
/// key still names only `["m1"]` with quorum 1 (sync.rs `manage`: names first, key after
/// confirmation; for ANY that widens the set a commit may be acknowledged by before the
/// key, whose promotion rule `n - q + 1` then trusts m1 alone). Commits acknowledged by m3
/// only; the leader fails; m1 — named, behind — is promoted (20066 ms) without commit 2136.
#[test]
fn core_bug_quorum_key_narrower_than_the_any_names_loses_a_commit() {
    holds("quorum1", 566, false);
}

/// Quorum mode, 3 members. With no leader, m2 correctly refuses to race for 10 s ("quorum:
/// 1 of the 2 synchronous members answered, 2 needed"); then the `failover` key names m2
/// as candidate and m2 races at once: decide/leaderless.rs `leaderless` checks the request's candidate
/// with `sync::may_promote(cfg, view, usize::MAX / 2)`, which skips the quorum check and
/// the comparison with the other named members. m2 is promoted at 28760 ms without commit
/// 1140, which m3 holds. (Seed 196 is the same with a switchover whose leader crashed
/// before handing over.)
#[test]
fn core_bug_failover_candidate_skips_the_quorum_check() {
    holds("quorum1", 708, false);
}

/// FIRST 2, 5 members. After a failover the new leader m1 keeps the previous leader's sync
/// key (m3: ["m4", "m1"]) and changes synchronous_standby_names every cycle (sync.rs
/// `desired_names` keeps only members of *its own* key first, and ranks the rest by flush
/// position, which changes every second; step 2 then returns before step 3 ever writes the
/// key). Commits are acknowledged through standbys the stale key does not name; the
/// leader fails; m4 — named in the stale key — is promoted at 31947 ms without commit 2846.
#[test]
fn core_bug_stale_sync_key_after_failover_loses_a_commit() {
    holds("on2", 739, false);
}

/// FIRST 1, 5 members. The leader m5's node crashes briefly; its new agent adopts the
/// lease and restarts PostgreSQL with `synchronous_standby_names = '*'` (decide/leader.rs
/// `holding_leader_key`: configured_sync unknown) while the sync key still names m1 (which
/// does not even stream). '*' lets any standby acknowledge: at 34720 ms commits are
/// acknowledged that m1 lacks, and the key would let m1 be promoted without them.
#[test]
fn core_bug_restarted_leader_acknowledges_through_any_standby() {
    let mut cfg = as_found(317, "on1");
    cfg.trace_lines = 400;
    let r = run(&cfg);
    assert!(
        r.violations.is_empty(),
        "{}\n{}",
        r.violations[0],
        r.trace.join("\n")
    );
}
