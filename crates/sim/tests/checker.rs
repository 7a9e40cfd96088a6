//! Checks of the checker: deliberately flawed agents must be caught by the invariants, and
//! the agent's own guard (checking the lease again right before promoting) must hold.

use pgbaton_sim::{
    run, FaultKind, Flaw, Happening, ScriptedFault, SimConfig, Target, ViolationKind,
};

/// Two members: the leader's node crashes; the replica is stopped (SIGSTOP) for 3 ttl right
/// after deciding to promote, before pg_promote is sent.
fn stop_before_promote(seed: u64, flaw: Option<Flaw>) -> pgbaton_sim::SimReport {
    let faults = vec![
        ScriptedFault {
            at_ms: 9_000,
            target: Target::Replica,
            kind: FaultKind::StallAgent {
                ms: 12_000,
                mid_cycle: true,
            },
        },
        ScriptedFault {
            at_ms: 10_000,
            target: Target::Leader,
            kind: FaultKind::CrashMember { down_ms: 20_000 },
        },
    ];
    let mut cfg = SimConfig::scripted(seed, 40_000, faults);
    cfg.members = 2;
    cfg.flaw = flaw;
    run(&cfg)
}

#[test]
fn promoting_on_a_stale_decision_after_a_stop_is_caught() {
    for seed in 0..10 {
        let r = stop_before_promote(seed, Some(Flaw::NoRecheckBeforePrimary));
        let v = r
            .violations
            .first()
            .unwrap_or_else(|| panic!("seed {seed}: not caught\n{}", r.trace.join("\n")));
        assert_eq!(v.kind, ViolationKind::PrimaryWithoutLease, "{v}");
    }
}

#[test]
fn the_agent_checks_its_lease_again_before_promoting() {
    for seed in 0..10 {
        let r = stop_before_promote(seed, None);
        assert!(
            r.violations.is_empty(),
            "{}\n{}",
            r.violations[0],
            r.trace.join("\n")
        );
        assert!(
            r.trace
                .iter()
                .any(|l| l.contains("not carrying out Promote")),
            "seed {seed}: the guard was not exercised"
        );
        assert!(r.converged_at.is_some());
        assert!(r
            .happenings
            .iter()
            .any(|h| matches!(h, Happening::BecamePrimary { at, .. } if *at > 21_000)));
    }
}

#[test]
fn a_lease_counted_from_the_answer_instead_of_the_request_is_caught() {
    // The leader's DCS answers are slow (but within retry_timeout), then it is cut off from the DCS and from its peers
    // (whose "a peer still runs a primary" rule would otherwise hold them back): a lease
    // counted from the answer outlives the lease in etcd by up to the answer's delay.
    let faults = vec![
        ScriptedFault {
            at_ms: 5_000,
            target: Target::Leader,
            kind: FaultKind::DelayMessages {
                ms: 20_000,
                max_delay_ms: 700,
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
    for seed in 0..50 {
        let mut cfg = SimConfig::scripted(seed, 30_000, faults.clone());
        cfg.flaw = Some(Flaw::LeaseFromAnswerTime);
        let r = run(&cfg);
        if let Some(v) = r.violations.first() {
            assert!(
                matches!(
                    v.kind,
                    ViolationKind::TwoLeaseHolders | ViolationKind::TwoPrimaries
                ),
                "seed {seed}: {v}"
            );
            caught += 1;
        }
        // The same schedule with the agent counting from the request is safe.
        let r = run(&SimConfig::scripted(seed, 30_000, faults.clone()));
        assert!(r.violations.is_empty(), "{}", r.violations[0]);
    }
    eprintln!("caught in {caught} of 50 seeds");
    assert!(
        caught > 0,
        "a lease measured from its answer was never caught"
    );
}

#[test]
fn a_leader_blocked_in_a_slow_dcs_read_past_its_deadline_is_caught() {
    // The leader is cut off from the DCS (its reads hang) and from its peers. An agent that
    // waits a full retry_timeout (1.5 s) for the DCS decides to demote up to 1 s after its
    // lease could have expired; capping the wait at the demotion deadline is safe.
    let faults = vec![
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
    for seed in 0..50 {
        let mut cfg = SimConfig::scripted(seed, 30_000, faults.clone());
        cfg.flaw = Some(Flaw::UncappedDcsTimeout);
        let r = run(&cfg);
        if let Some(v) = r.violations.first() {
            assert!(
                matches!(
                    v.kind,
                    ViolationKind::TwoLeaseHolders | ViolationKind::TwoPrimaries
                ),
                "seed {seed}: {v}"
            );
            caught += 1;
        }
        let r = run(&SimConfig::scripted(seed, 30_000, faults.clone()));
        assert!(r.violations.is_empty(), "{}", r.violations[0]);
    }
    eprintln!("caught in {caught} of 50 seeds");
    assert!(
        caught > 0,
        "a leader blocked past its deadline was never caught"
    );
}

fn never_failover(name: &str) -> pgbaton_sim::HaConfig {
    pgbaton_sim::HaConfig {
        nofailover: true,
        ..pgbaton_sim::HaConfig::with_defaults(name)
    }
}

#[test]
fn a_cluster_that_stays_without_leader_is_caught() {
    // Every member is tagged nofailover and the leader's node crashes for good measure:
    // after it returns nobody may race for the key, so the cluster never heals.
    let faults = vec![ScriptedFault {
        at_ms: 10_000,
        target: Target::Leader,
        kind: FaultKind::CrashMember { down_ms: 5_000 },
    }];
    let mut cfg = SimConfig::scripted(7, 20_000, faults);
    cfg.ha = never_failover;
    let r = run(&cfg);
    let v = r.violations.first().expect("liveness violation");
    assert_eq!(v.kind, ViolationKind::NotLive, "{v}");
    assert!(v.to_string().contains("PGBATON_SIM_SEED=7"), "{v}");
}
