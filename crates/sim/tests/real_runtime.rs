//! The real runtime (`pgbaton_agent::Agent`, every member) in the simulator: simulated DCS,
//! PostgreSQL, peers and clock on a paused current-thread tokio runtime
//! (`pgbaton_sim::run_real`). Random schedules run in four shards (tests that nextest runs
//! side by side): `PGBATON_SIM_REAL_SEEDS=<n>` seeds per shard (default 2,000: 8,000 in all),
//! `PGBATON_SIM_REAL_FIRST_SEED=<n>` the first seed of the first shard;
//! `PGBATON_SIM_REAL_SEED=<n>` replays one seed with its trace (`real_replay`).

use pgbaton_sim::{
    run_real, FaultKind, RealConfig, RealFlaw, ScriptedFault, Target, ViolationKind,
};

mod common;

use common::env_u64;

#[test]
fn a_quiet_cluster_bootstraps_one_leader_and_two_streaming_replicas() {
    let cfg = RealConfig {
        scripted: Some(Vec::new()),
        duration_ms: 5_000,
        ..RealConfig::new(1)
    };
    let report = run_real(&cfg);
    assert!(report.violations.is_empty(), "{}", report.describe(60));
    let converged = report.converged_at.expect("converged");
    assert!(converged < 30_000, "{}", report.describe(60));
    assert!(
        report.trace.iter().any(|l| l.contains("initdb")),
        "{}",
        report.describe(60)
    );
    assert_eq!(
        report
            .trace
            .iter()
            .filter(|l| l.contains("cloned from"))
            .count(),
        2,
        "{}",
        report.describe(60)
    );
}

/// Each run has a tokio runtime of its own (whose random seed, which tokio draws anew for
/// every runtime, must not matter): the same seed twice gives the same trace.
#[test]
fn one_seed_gives_one_trace() {
    for seed in [5, 7, 11] {
        let cfg = RealConfig::random(seed);
        let a = run_real(&cfg);
        let b = run_real(&cfg);
        assert!(a.trace.len() > 10, "{}", a.describe(60));
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.trace_digest, b.trace_digest);
    }
}

/// SIGSTOP of the leader's agent for longer than ttl: the lease guard stops its PostgreSQL
/// before the lease can expire, another member takes over, the old leader rejoins.
#[test]
fn a_stopped_leader_agent_loses_its_primary_to_the_lease_guard() {
    let faults = vec![ScriptedFault {
        at_ms: 15_000,
        target: Target::Leader,
        kind: FaultKind::StallAgent {
            ms: 20_000,
            mid_cycle: false,
        },
    }];
    let cfg = RealConfig {
        scripted: Some(faults),
        duration_ms: 40_000,
        ..RealConfig::new(3)
    };
    let report = run_real(&cfg);
    assert!(report.violations.is_empty(), "{}", report.describe(60));
    assert!(
        report
            .trace
            .iter()
            .any(|l| l.contains("SIGQUIT from the lease guard")),
        "{}",
        report.describe(60)
    );
    assert!(report.converged_at.is_some(), "{}", report.describe(60));
}

#[test]
fn real_runtime_random_schedules_shard_1() {
    random_schedules(0);
}

#[test]
fn real_runtime_random_schedules_shard_2() {
    random_schedules(1);
}

#[test]
fn real_runtime_random_schedules_shard_3() {
    random_schedules(2);
}

#[test]
fn real_runtime_random_schedules_shard_4() {
    random_schedules(3);
}

/// Seeds at which the agent is known to break a promise (found by these shards; to be fixed,
/// then removed from here). A known seed is excused only for its kind; one that passes is
/// reported so it can be removed.
///
/// 415106: a replica whose upstream removed a WAL segment it needs, while a switchover
/// follows every 5–6 s: each leader change restarts its not-streaming clock (a new leader
/// may still hold the segment, so the clock is kept only for a forked history), and it is
/// re-cloned 27 s after it last streamed, over the 30 s bound by the clone's start.
/// The earlier ones, leaderless stretches over a slow DCS (message delays beyond
/// `retry_timeout`: 2209, 5098, 5388), pass since a peer ahead is waited for only loop_wait
/// in asynchronous mode, a leader restarting in place without a certain lease gives its key
/// up even without a read, and an agent that just started renews no lease before its first
/// read.
const KNOWN: &[(u64, ViolationKind)] = &[(415_106, ViolationKind::NotLive)];

fn random_schedules(shard: u64) {
    let count = env_u64("PGBATON_SIM_REAL_SEEDS", 2_000);
    let first = env_u64("PGBATON_SIM_REAL_FIRST_SEED", 0) + shard * count;
    let mut failed = Vec::new();
    let mut longest = (0, 0);
    let mut not_following = (0, 0);
    for seed in first..first + count {
        let report = run_real(&RealConfig::random(seed));
        longest = longest.max((report.longest_leaderless_ms, seed));
        not_following = not_following.max((report.longest_not_following_ms, seed));
        let known = KNOWN.iter().any(|&(s, _)| s == seed);
        match report.violations.first() {
            Some(v) if KNOWN.contains(&(seed, v.kind)) => {
                println!("known seed {seed}: {:?} at {} ms", v.kind, v.at)
            }
            Some(v) => {
                println!(
                    "seed {seed}: {:?} at {} ms: {}",
                    v.kind, v.at, v.description
                );
                failed.push(report);
            }
            None if known => println!("known seed {seed} passes now: remove it from KNOWN"),
            None => {}
        }
    }
    println!(
        "real runtime: seeds {first}..{}, {} broke a promise; longest leaderless stretch with a healthy candidate {} ms (seed {}); longest stretch a member could follow the leader and did not {} ms (seed {})",
        first + count,
        failed.len(),
        longest.0,
        longest.1,
        not_following.0,
        not_following.1
    );
    if let Some(report) = failed.first() {
        panic!(
            "{} of {count} seeds broke a promise; the first:\n{}\nreplay: PGBATON_SIM_REAL_SEED={} cargo test -p pgbaton-sim --test real_runtime real_replay -- --nocapture",
            failed.len(),
            report.describe(60),
            report.seed
        );
    }
}

/// The old leader, stopped by its lease guard with WAL nobody else received, comes back as a
/// replica whose history forked off the new leader's, while switchovers follow one another
/// every few seconds (seed 408062 of a soak): it is rewound once it has not streamed for the
/// timeout. Each leader change used to restart that clock, so it waited until the
/// switchovers stopped and was then re-cloned, 27 s without streaming.
#[test]
fn a_forked_replica_is_rewound_while_switchovers_follow_one_another() {
    let report = run_real(&RealConfig::random(408_062));
    assert!(report.violations.is_empty(), "{}", report.describe(60));
    let rewound = |line: &&String| line.contains(" m1 ") && line.contains("rewound to");
    let at = report
        .trace
        .iter()
        .find(rewound)
        .and_then(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("m1 was not rewound\n{}", report.describe(60)));
    assert!(at < 30_000, "m1 rewound only at {at} ms");
    assert!(
        !report
            .trace
            .iter()
            .any(|l| l.contains(" m1 ") && l.contains("moved aside")),
        "m1 was re-cloned\n{}",
        report.describe(60)
    );
}

#[test]
fn real_replay() {
    let seed = env_u64("PGBATON_SIM_REAL_SEED", 7);
    let report = run_real(&RealConfig::random(seed));
    for line in &report.trace {
        println!("{line}");
    }
    println!(
        "seed {seed}: ended at {} ms, converged at {:?}, digest {:x}",
        report.end_ms, report.converged_at, report.trace_digest
    );
    assert!(report.violations.is_empty(), "{}", report.describe(60));
}

/// The old leader comes back after a failover, is rewound and starts as a replica of the new
/// leader, needing the last of its WAL (pg_rewind copied what the new leader had written when
/// it listed the files); the new leader is lost at once, while it starts. The starting replica
/// follows the next leader at once (the chaos suite once found it waiting for WAL from the
/// lost one until its start timed out).
#[test]
fn a_starting_replica_follows_a_new_leader_at_once() {
    let faults = vec![
        ScriptedFault {
            at_ms: 15_000,
            target: Target::Leader,
            kind: FaultKind::CrashMember { down_ms: 12_000 },
        },
        ScriptedFault {
            at_ms: 27_250,
            target: Target::Leader,
            kind: FaultKind::CrashMember { down_ms: 30_000 },
        },
    ];
    let cfg = RealConfig {
        scripted: Some(faults),
        duration_ms: 30_000,
        liveness_bound_ms: 30_000,
        ..RealConfig::new(1)
    };
    let report = run_real(&cfg);
    assert!(report.violations.is_empty(), "{}", report.describe(60));
    assert!(
        report
            .trace
            .iter()
            .any(|l| l.contains("rewound") && l.contains("m1")),
        "{}",
        report.describe(60)
    );
    assert!(
        report
            .trace
            .iter()
            .any(|l| l.contains("primary_conninfo reloaded while starting")),
        "{}",
        report.describe(60)
    );
    assert!(report.converged_at.is_some(), "{}", report.describe(60));
}

/// The leader is cut from etcd, and its agent is killed and restarted while the cut lasts:
/// the new agent cannot reach etcd to learn about its lease. It keeps enforcing the lease
/// deadline its previous start left (the lease guard's file) and stops its primary before
/// another member can be promoted. (Found by the synchronous soak of this simulation: a new
/// start silenced the old deadline, and the old primary kept accepting writes next to the
/// new one.)
#[test]
fn an_agent_restarted_while_cut_from_etcd_keeps_its_predecessors_lease_deadline() {
    let faults = vec![
        ScriptedFault {
            at_ms: 15_000,
            target: Target::Leader,
            kind: FaultKind::PartitionFromDcs { ms: 10_000 },
        },
        ScriptedFault {
            at_ms: 15_100,
            target: Target::Leader,
            kind: FaultKind::KillAgent { down_ms: 1_000 },
        },
    ];
    let cfg = RealConfig {
        scripted: Some(faults),
        duration_ms: 30_000,
        ..RealConfig::new(4)
    };
    let report = run_real(&cfg);
    assert!(report.violations.is_empty(), "{}", report.describe(60));
    assert!(
        report
            .trace
            .iter()
            .any(|l| l.contains("SIGQUIT from the lease guard")),
        "{}",
        report.describe(60)
    );
    assert!(report.converged_at.is_some(), "{}", report.describe(60));
}

// Checks of the checker: the runtime faults the chaos suite once found, put back at a port
// (`RealFlaw`), are caught; the same schedules without the flaw pass.

/// No lease-guard process: a stopped (SIGSTOP) leader agent's primary keeps accepting writes
/// while another member is promoted.
#[test]
fn without_the_lease_guard_a_stopped_leader_agent_gives_two_primaries() {
    let faults = vec![ScriptedFault {
        at_ms: 15_000,
        target: Target::Leader,
        kind: FaultKind::StallAgent {
            ms: 20_000,
            mid_cycle: false,
        },
    }];
    for seed in 0..5 {
        let cfg = RealConfig {
            scripted: Some(faults.clone()),
            duration_ms: 40_000,
            ..RealConfig::new(seed)
        };
        let flawed = run_real(&RealConfig {
            flaws: vec![RealFlaw::LeaseGuardIgnored],
            ..cfg.clone()
        });
        assert_eq!(
            flawed.violations.first().map(|v| v.kind),
            Some(ViolationKind::TwoPrimaries),
            "{}",
            flawed.describe(60)
        );
        let r = run_real(&cfg);
        assert!(r.violations.is_empty(), "{}", r.describe(60));
    }
}

/// A replica still starting that does not follow the new leader (the fault the chaos suite
/// found) is reported: it could follow and does not within the bound.
#[test]
fn a_starting_replica_that_waits_for_its_old_upstream_is_caught() {
    let faults = vec![
        ScriptedFault {
            at_ms: 15_000,
            target: Target::Leader,
            kind: FaultKind::CrashMember { down_ms: 12_000 },
        },
        ScriptedFault {
            at_ms: 27_250,
            target: Target::Leader,
            kind: FaultKind::CrashMember { down_ms: 30_000 },
        },
    ];
    let cfg = RealConfig {
        scripted: Some(faults),
        duration_ms: 30_000,
        liveness_bound_ms: 30_000,
        flaws: vec![RealFlaw::NoRepointWhileStarting],
        ..RealConfig::new(1)
    };
    let r = run_real(&cfg);
    assert!(
        r.violations
            .iter()
            .any(|v| v.kind == ViolationKind::NotLive),
        "{}",
        r.describe(60)
    );
}

/// A DCS adapter that counts a lease from the answer instead of the request: with slow
/// answers, then the leader cut from etcd and from its peers, its lease outlives etcd's and
/// another member is promoted while it still writes.
#[test]
fn a_lease_counted_from_the_answer_instead_of_the_request_is_caught() {
    let faults = vec![
        ScriptedFault {
            at_ms: 5_000,
            target: Target::Leader,
            kind: FaultKind::DelayMessages {
                ms: 20_000,
                max_delay_ms: 1_000,
            },
        },
        ScriptedFault {
            at_ms: 10_000,
            target: Target::Leader,
            kind: FaultKind::PartitionFromDcs { ms: 8_000 },
        },
        ScriptedFault {
            at_ms: 10_000,
            target: Target::Leader,
            kind: FaultKind::IsolateFromMembers { ms: 8_000 },
        },
    ];
    let mut caught = 0;
    for seed in 0..20 {
        let cfg = RealConfig {
            scripted: Some(faults.clone()),
            duration_ms: 30_000,
            ..RealConfig::new(seed)
        };
        let flawed = run_real(&RealConfig {
            flaws: vec![RealFlaw::LeaseFromAnswerTime],
            ..cfg.clone()
        });
        if flawed
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::TwoPrimaries)
        {
            caught += 1;
        }
        let r = run_real(&cfg);
        assert!(r.violations.is_empty(), "{}", r.describe(60));
    }
    println!("a lease counted from the answer caught in {caught} of 20 seeds");
    assert!(
        caught > 0,
        "a lease counted from its answer was never caught"
    );
}

/// Soak seeds (`make soak`, seeds from 100,000) that once broke a promise, each fixed in the
/// agent or the simulator, kept passing here: 101791, 106538, 108128, 109439 (a rewound
/// replica re-cloned because the simulated pg_rewind did not copy the source's WAL, and
/// two branches under one timeline id); 108739, 110993 (a start job wrote its configuration
/// after the next cycle's repoint, and the replica waited for a former leader); 104004,
/// 110124, 118652 (leaderless over a slow DCS: see `KNOWN`); 4313, 4409 (ranked members in
/// failsafe mode: a member deferred to a higher `failover_priority` peer at its position whose
/// DCS was too slow to race, leaderless for 7.05 s; found when the random schedules took up
/// the agent model's variations).
#[test]
fn soak_seeds_once_broken_pass() {
    for seed in [
        4_313, 4_409, 101_791, 104_004, 106_538, 108_128, 108_739, 109_439, 110_124, 110_993,
        118_652, 168_632, 341_044,
    ] {
        let report = run_real(&RealConfig::random(seed));
        assert!(report.violations.is_empty(), "{}", report.describe(60));
    }
}
