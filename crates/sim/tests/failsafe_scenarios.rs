//! Failsafe mode, scripted: an etcd outage (or a partition of the leader from etcd) with
//! every member reachable keeps the leader's primary up the whole time; the same outage
//! with one replica's agent dead makes the leader demote before a ttl has passed. Each runs
//! over several seeds (which vary delays and timings) with every invariant checked.

use pgbaton_sim::{
    run, FaultKind, HaConfig, Happening, Millis, ScriptedFault, SimConfig, SimReport, Target,
};

const TTL: Millis = 4_000;
const OUTAGE_AT: Millis = 10_000;
const OUTAGE_MS: Millis = 20_000;
const SEEDS: std::ops::Range<u64> = 0..20;

fn failsafe(name: &str) -> HaConfig {
    HaConfig {
        failsafe_mode: true,
        ..HaConfig::with_defaults(name)
    }
}

fn run_faults(seed: u64, faults: Vec<ScriptedFault>) -> SimReport {
    let mut cfg = SimConfig::scripted(seed, 45_000, faults);
    cfg.ha = failsafe;
    let r = run(&cfg);
    assert!(
        r.violations.is_empty(),
        "seed {seed}: {}\n{}",
        r.violations[0],
        r.trace.join("\n")
    );
    assert!(
        r.converged_at.is_some(),
        "seed {seed}: never healthy again\n{}",
        r.trace.join("\n")
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
fn leader_at_outage(r: &SimReport) -> String {
    r.happenings
        .iter()
        .find_map(|h| match h {
            Happening::FaultStarted { member, at, .. } if *at == OUTAGE_AT => Some(member.clone()),
            _ => None,
        })
        .expect("the outage started")
}

fn stopped_after(r: &SimReport, who: &str, t: Millis) -> Option<Millis> {
    r.happenings.iter().find_map(|h| match h {
        Happening::PrimaryStopped { at, member } if member == who && *at >= t => Some(*at),
        _ => None,
    })
}

fn acked_rounds(r: &SimReport, who: &str) -> usize {
    r.happenings
        .iter()
        .filter(
            |h| matches!(h, Happening::FailsafeRound { member, acked: true, .. } if member == who),
        )
        .count()
}

fn primaries_after(r: &SimReport, t: Millis) -> Vec<String> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::BecamePrimary { at, member, .. } if *at >= t => Some(member.clone()),
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
            "seed {seed}: the leader's primary stopped (a write gap)\n{}",
            r.trace.join("\n")
        );
        assert_eq!(
            primaries_after(&r, OUTAGE_AT),
            Vec::<String>::new(),
            "seed {seed}: another member was promoted"
        );
        // A round per cycle or so: at least one per ttl of outage.
        assert!(
            acked_rounds(&r, &leader) as u64 >= OUTAGE_MS / TTL,
            "seed {seed}: only {} acknowledged rounds",
            acked_rounds(&r, &leader)
        );
    }
}

#[test]
fn etcd_down_20s_every_member_linked_the_leader_stays_primary_the_whole_time() {
    check_leader_stays_primary(FaultKind::DcsOutage { ms: OUTAGE_MS });
}

#[test]
fn leader_cut_from_etcd_20s_stays_primary_and_takes_its_expired_key_back() {
    for seed in SEEDS {
        let r = run_faults(
            seed,
            vec![outage(FaultKind::PartitionFromDcs { ms: OUTAGE_MS })],
        );
        let leader = leader_at_outage(&r);
        // Its lease expired in etcd while it could not renew it: the key went away...
        assert!(
            r.happenings.iter().any(|h| matches!(
                h,
                Happening::LeaderKeyGone { member, expired: true, .. } if *member == leader
            )),
            "seed {seed}: the key did not expire\n{}",
            r.trace.join("\n")
        );
        // ...nobody else took it, and the leader took it back once etcd was reachable.
        let takers: Vec<String> = r
            .happenings
            .iter()
            .filter_map(|h| match h {
                Happening::LeaderKeyTaken { at, member } if *at >= OUTAGE_AT => {
                    Some(member.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(takers, vec![leader.clone()], "seed {seed}");
        assert_eq!(
            stopped_after(&r, &leader, OUTAGE_AT),
            None,
            "seed {seed}: the leader's primary stopped\n{}",
            r.trace.join("\n")
        );
    }
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
        let stopped = stopped_after(&r, &leader, OUTAGE_AT).unwrap_or_else(|| {
            panic!(
                "seed {seed}: the leader never demoted\n{}",
                r.trace.join("\n")
            )
        });
        assert!(
            stopped > KILL_AT && stopped < KILL_AT + TTL,
            "seed {seed}: demoted at {stopped}, not within ttl of the kill at {KILL_AT}\n{}",
            r.trace.join("\n")
        );
    }
}

#[test]
fn without_failsafe_mode_the_same_outage_demotes_the_leader() {
    let mut cfg = SimConfig::scripted(
        0,
        45_000,
        vec![outage(FaultKind::DcsOutage { ms: OUTAGE_MS })],
    );
    cfg.ha = HaConfig::with_defaults;
    let r = run(&cfg);
    assert!(r.violations.is_empty());
    let leader = leader_at_outage(&r);
    let stopped = stopped_after(&r, &leader, OUTAGE_AT).expect("demoted");
    assert!(stopped < OUTAGE_AT + TTL);
    assert_eq!(acked_rounds(&r, &leader), 0);
}

/// The leader is cut from etcd, and 2.5 s later from the members too (right after a round
/// they acknowledged): its lease expires in etcd while its failsafe right still runs, and
/// the members cannot see that it still runs a primary.
fn cut_from_etcd_then_from_members(seed: u64, flaw: Option<pgbaton_sim::Flaw>) -> SimReport {
    let faults = vec![
        outage(FaultKind::PartitionFromDcs { ms: OUTAGE_MS }),
        ScriptedFault {
            at_ms: OUTAGE_AT + 2_500,
            target: Target::Leader,
            kind: FaultKind::IsolateFromMembers { ms: OUTAGE_MS },
        },
    ];
    let mut cfg = SimConfig::scripted(seed, 45_000, faults);
    cfg.ha = failsafe;
    cfg.flaw = flaw;
    run(&cfg)
}

#[test]
fn a_member_that_does_not_keep_its_promise_is_caught() {
    let caught = SEEDS
        .filter(|seed| {
            !cut_from_etcd_then_from_members(*seed, Some(pgbaton_sim::Flaw::FailsafeForgetsPromise))
                .violations
                .is_empty()
        })
        .count();
    assert!(caught > 0, "no seed caught the broken promise");
}

#[test]
fn kept_promises_hold_the_members_back_until_the_cut_off_leader_demoted() {
    for seed in SEEDS {
        let r = cut_from_etcd_then_from_members(seed, None);
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {}\n{}",
            r.violations[0],
            r.trace.join("\n")
        );
        assert!(r.converged_at.is_some(), "seed {seed}: never healthy again");
        let leader = leader_at_outage(&r);
        let stopped = stopped_after(&r, &leader, OUTAGE_AT).expect("the cut-off leader demotes");
        let promoted = r
            .happenings
            .iter()
            .find_map(|h| match h {
                Happening::BecamePrimary { at, member, .. } if *member != leader => Some(*at),
                _ => None,
            })
            .expect("another member is promoted");
        assert!(
            stopped < promoted,
            "seed {seed}: promoted at {promoted}, old primary stopped at {stopped}"
        );
    }
}
