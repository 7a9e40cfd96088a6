//! Failsafe mode in the real-runtime simulation: the agents run with `failsafe_mode`, a leader
//! that loses etcd sends `POST /failsafe` rounds through its peers port, and the members'
//! own agents answer them (their `FailsafeMember`, as the REST API does). Scripted: an etcd
//! outage (or a partition of the leader from etcd) with every member reachable keeps the
//! leader's primary up the whole time; the same outage with one replica's agent dead makes
//! the leader demote within a ttl; a leader cut from etcd and then from the members is
//! demoted before anyone is promoted. Then many seeds of DCS trouble. Every promise is
//! checked on every tick (never two primaries accepting writes, no long leaderless stretch
//! while a member may race, every member following again).
//!
//! `PGBATON_SIM_REAL_FAILSAFE_SEEDS=<n>` seeds per shard of the soak (two shards, default
//! 1,500 each: 3,000 in all), `PGBATON_SIM_REAL_FIRST_SEED=<n>` the first.

use pgbaton_agent::flaws::Flaw;
use pgbaton_sim::{
    random_dcs_schedule, run_real, FaultKind, Happening, Millis, RealConfig, RealFlaw, RealReport,
    ScriptedFault, Target, ViolationKind,
};

mod common;

use common::env_u64;

const TTL: Millis = 4_000;
const OUTAGE_AT: Millis = 10_000;
const OUTAGE_MS: Millis = 20_000;
const SEEDS: std::ops::Range<u64> = 0..10;

fn config(seed: u64, faults: Vec<ScriptedFault>) -> RealConfig {
    RealConfig {
        scripted: Some(faults),
        duration_ms: 45_000,
        failsafe: true,
        ..RealConfig::new(seed)
    }
}

fn run_faults(seed: u64, faults: Vec<ScriptedFault>) -> RealReport {
    let r = run_real(&config(seed, faults));
    assert!(r.violations.is_empty(), "{}", r.describe(usize::MAX));
    assert!(
        r.converged_at.is_some(),
        "never healthy again: {}",
        r.describe(usize::MAX)
    );
    r
}

fn outage(kind: FaultKind) -> ScriptedFault {
    ScriptedFault {
        at_ms: OUTAGE_AT,
        target: Target::Leader,
        kind,
    }
}

/// The leader when the outage began (whom `Target::Leader` hit).
fn leader_at_outage(r: &RealReport) -> String {
    r.happenings
        .iter()
        .find_map(|h| match h {
            Happening::FaultStarted { at, member, .. } if *at >= OUTAGE_AT => Some(member.clone()),
            _ => None,
        })
        .expect("the outage started")
}

fn stopped_after(r: &RealReport, leader: &str, t: Millis) -> Option<Millis> {
    r.happenings.iter().find_map(|h| match h {
        Happening::PrimaryStopped { at, member } if *at >= t && member == leader => Some(*at),
        _ => None,
    })
}

fn promoted_after(r: &RealReport, t: Millis) -> Vec<(Millis, String)> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::BecamePrimary { at, member, .. } if *at >= t => Some((*at, member.clone())),
            _ => None,
        })
        .collect()
}

fn check_leader_stays_primary(kind: FaultKind) {
    for seed in SEEDS {
        let r = run_faults(seed, vec![outage(kind)]);
        let leader = leader_at_outage(&r);
        assert_eq!(
            stopped_after(&r, &leader, OUTAGE_AT),
            None,
            "the leader's primary stopped (a write gap): {}",
            r.describe(usize::MAX)
        );
        assert_eq!(
            promoted_after(&r, OUTAGE_AT),
            vec![],
            "{}",
            r.describe(usize::MAX)
        );
    }
}

#[test]
fn etcd_down_20s_every_member_linked_the_leader_stays_primary_the_whole_time() {
    check_leader_stays_primary(FaultKind::DcsOutage { ms: OUTAGE_MS });
}

#[test]
fn leader_cut_from_etcd_20s_stays_primary_and_takes_its_expired_key_back() {
    check_leader_stays_primary(FaultKind::PartitionFromDcs { ms: OUTAGE_MS });
}

#[test]
fn etcd_down_and_a_replica_agent_dead_the_leader_demotes_within_ttl() {
    const KILL_AT: Millis = OUTAGE_AT + 2_000;
    for seed in SEEDS {
        let kill = ScriptedFault {
            at_ms: KILL_AT,
            target: Target::Replica,
            kind: FaultKind::KillAgent { down_ms: 25_000 },
        };
        let r = run_faults(
            seed,
            vec![outage(FaultKind::DcsOutage { ms: OUTAGE_MS }), kill],
        );
        let leader = leader_at_outage(&r);
        let stopped = stopped_after(&r, &leader, OUTAGE_AT)
            .unwrap_or_else(|| panic!("the leader never demoted: {}", r.describe(usize::MAX)));
        assert!(
            stopped > KILL_AT && stopped <= KILL_AT + TTL,
            "demoted at {stopped}, not within ttl of the kill at {KILL_AT}: {}",
            r.describe(usize::MAX)
        );
    }
}

#[test]
fn without_failsafe_mode_the_same_outage_demotes_the_leader() {
    let cfg = RealConfig {
        failsafe: false,
        ..config(0, vec![outage(FaultKind::DcsOutage { ms: OUTAGE_MS })])
    };
    let r = run_real(&cfg);
    assert!(r.violations.is_empty(), "{}", r.describe(usize::MAX));
    let leader = leader_at_outage(&r);
    let stopped = stopped_after(&r, &leader, OUTAGE_AT).expect("demoted");
    assert!(stopped <= OUTAGE_AT + TTL, "{}", r.describe(usize::MAX));
}

/// The leader is cut from etcd, and 2.5 s later from the members too (right after a round
/// they acknowledged): its lease expires in etcd while its failsafe right still runs, and
/// the members cannot see that it still runs a primary.
fn cut_from_etcd_then_from_members() -> Vec<ScriptedFault> {
    vec![
        outage(FaultKind::PartitionFromDcs { ms: OUTAGE_MS }),
        ScriptedFault {
            at_ms: OUTAGE_AT + 2_500,
            target: Target::Leader,
            kind: FaultKind::IsolateFromMembers { ms: OUTAGE_MS },
        },
    ]
}

/// The members' promises hold them back until the cut-off leader has demoted.
#[test]
fn kept_promises_hold_the_members_back_until_the_cut_off_leader_demoted() {
    for seed in SEEDS {
        let r = run_faults(seed, cut_from_etcd_then_from_members());
        let leader = leader_at_outage(&r);
        let stopped = stopped_after(&r, &leader, OUTAGE_AT).expect("the cut-off leader demotes");
        let promoted = promoted_after(&r, OUTAGE_AT);
        let first = promoted
            .iter()
            .find(|(_, who)| *who != leader)
            .unwrap_or_else(|| panic!("another member is promoted: {}", r.describe(usize::MAX)));
        assert!(
            stopped < first.0,
            "promoted at {}, the old primary stopped at {stopped}: {}",
            first.0,
            r.describe(usize::MAX)
        );
    }
}

/// Check of the checker: members whose agents accept the leader's `POST /failsafe` but decide
/// as if they had promised nothing (`Flaw::FailsafeForgetsPromise`) race for the expired key
/// and promote while the cut-off leader still writes on its failsafe right.
#[test]
fn a_member_that_does_not_keep_its_promise_is_caught() {
    let caught = SEEDS
        .filter(|&seed| {
            let r = run_real(&RealConfig {
                flaws: vec![RealFlaw::Agent(Flaw::FailsafeForgetsPromise)],
                ..config(seed, cut_from_etcd_then_from_members())
            });
            r.violations
                .iter()
                .any(|v| v.kind == ViolationKind::TwoPrimaries)
        })
        .count();
    println!(
        "a broken failsafe promise caught in {caught} of {} seeds",
        SEEDS.end
    );
    assert!(caught > 0, "no seed caught the broken promise");
}

/// Many seeds of DCS trouble (etcd outages and partitions from etcd, with agent kills and
/// stops, isolation and node crashes mixed in), 3 members on even seeds and 5 on odd ones.
#[test]
fn real_failsafe_mode_under_dcs_outages_shard_1() {
    dcs_trouble(0);
}

#[test]
fn real_failsafe_mode_under_dcs_outages_shard_2() {
    dcs_trouble(1);
}

/// Known failing seeds (see `real_runtime.rs`, `KNOWN`): none.
const KNOWN: &[(u64, ViolationKind)] = &[];

/// One seed of DCS trouble: 3 members on even seeds, 5 on odd ones, operations failing now
/// and then.
fn dcs_trouble_config(seed: u64) -> RealConfig {
    let members = if seed.is_multiple_of(2) { 3 } else { 5 };
    let base = RealConfig::random(seed);
    let faults = random_dcs_schedule(
        seed,
        members,
        TTL,
        base.fault_window_start_ms,
        base.duration_ms,
        10.0,
    );
    RealConfig {
        members,
        failsafe: true,
        scripted: Some(faults),
        ..base
    }
}

fn dcs_trouble(shard: u64) {
    let count = env_u64("PGBATON_SIM_REAL_FAILSAFE_SEEDS", 1_500);
    let first = env_u64("PGBATON_SIM_REAL_FIRST_SEED", 0) + shard * count;
    let mut failed = Vec::new();
    for seed in first..first + count {
        let cfg = dcs_trouble_config(seed);
        let r = run_real(&cfg);
        match r.violations.first() {
            Some(v) if KNOWN.contains(&(seed, v.kind)) => println!("known seed {seed}"),
            Some(_) => failed.push(r),
            None if KNOWN.iter().any(|&(s, _)| s == seed) => {
                println!("known seed {seed} passes now: remove it from KNOWN")
            }
            None => {}
        }
    }
    println!(
        "failsafe (real runtime): seeds {first}..{}, {} broke a promise",
        first + count,
        failed.len()
    );
    if let Some(r) = failed.first() {
        let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
        panic!(
            "seeds {seeds:?} broke a promise; the first:\n{}",
            r.describe(usize::MAX)
        );
    }
}

/// Failsafe soak seeds that once broke a promise, kept passing here: 102036 (leaderless over
/// a slow DCS: a key holder restarting its primary without a certain lease); 200350 (a
/// starting replica repointed at a leader without a member document got no upstream, while
/// the agent took it as pointed there); 303735 (a leader's agent stopped between deciding and
/// writing the `failsafe` key wrote it after another member had taken the leader key,
/// naming only itself: nobody else could race, for good).
#[test]
fn failsafe_soak_seeds_once_broken_pass() {
    for seed in [102_036, 200_350, 303_735] {
        let r = run_real(&dcs_trouble_config(seed));
        assert!(r.violations.is_empty(), "{}", r.describe(80));
    }
}
