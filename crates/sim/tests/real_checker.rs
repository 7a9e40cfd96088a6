//! Checks of the checker for the agent's own duties: each is switched off in the real runtime
//! (`pgbaton_agent::flaws`, through `RealFlaw::Agent`), and the simulator must catch what
//! follows; the same schedules with the duty done pass.

use pgbaton_agent::flaws::Flaw;
use pgbaton_sim::{
    run_real, FaultKind, RealConfig, RealFlaw, RealReport, ScriptedFault, Target, ViolationKind,
};

fn at(at_ms: u64, target: Target, kind: FaultKind) -> ScriptedFault {
    ScriptedFault {
        at_ms,
        target,
        kind,
    }
}

/// Two members: the leader's node crashes; the replica takes the leader key, decides to
/// promote on the read that shows the key is its own, and its agent is stopped (SIGSTOP) for
/// longer than a ttl between that decision and the promotion.
fn stopped_between_deciding_and_promoting(seed: u64, flaws: Vec<RealFlaw>) -> RealReport {
    let faults = vec![
        at(
            9_000,
            Target::Replica,
            FaultKind::StallAgent {
                ms: 12_000,
                mid_cycle: true,
            },
        ),
        at(
            10_000,
            Target::Leader,
            FaultKind::CrashMember { down_ms: 20_000 },
        ),
    ];
    run_real(&RealConfig {
        members: 2,
        scripted: Some(faults),
        duration_ms: 40_000,
        flaws,
        ..RealConfig::new(seed)
    })
}

#[test]
fn promoting_on_a_stale_decision_after_a_stop_is_caught() {
    for seed in 0..5 {
        let r = stopped_between_deciding_and_promoting(
            seed,
            vec![RealFlaw::Agent(Flaw::NoRecheckBeforePrimary)],
        );
        let v = r
            .violations
            .first()
            .unwrap_or_else(|| panic!("seed {seed}: not caught\n{}", r.describe(80)));
        assert_eq!(v.kind, ViolationKind::PrimaryWithoutLease, "{v}");
    }
}

#[test]
fn the_agent_checks_its_lease_again_before_promoting() {
    for seed in 0..5 {
        let r = stopped_between_deciding_and_promoting(seed, Vec::new());
        assert!(r.violations.is_empty(), "{}", r.describe(80));
        assert!(
            r.trace
                .iter()
                .any(|l| l.contains("agent stopped (SIGSTOP) after its decision as key holder")),
            "seed {seed}: the stop did not hit\n{}",
            r.describe(80)
        );
        assert!(r.converged_at.is_some(), "{}", r.describe(80));
    }
}

/// The leader is cut from etcd and from its peers; its agent waits for each DCS request a
/// full `retry_timeout` (`Flaw::UncappedDcsTimeout`) instead of no longer than its demotion
/// deadline, and (to see the agent's own duty, not the lease guard's) no lease-guard
/// process stops its PostgreSQL: it decides to demote after its lease expired in etcd, while
/// another member is promoted. Each alone is safe: the same schedule with the guard, or with
/// the capped wait, passes.
#[test]
fn a_leader_blocked_in_a_slow_dcs_read_past_its_deadline_is_caught() {
    let faults = vec![
        at(
            10_000,
            Target::Leader,
            FaultKind::PartitionFromDcs { ms: 8_000 },
        ),
        at(
            10_000,
            Target::Leader,
            FaultKind::IsolateFromMembers { ms: 8_000 },
        ),
    ];
    let mut caught = 0;
    for seed in 0..20 {
        let cfg = RealConfig {
            scripted: Some(faults.clone()),
            duration_ms: 30_000,
            ..RealConfig::new(seed)
        };
        let flawed = run_real(&RealConfig {
            flaws: vec![
                RealFlaw::Agent(Flaw::UncappedDcsTimeout),
                RealFlaw::LeaseGuardIgnored,
            ],
            ..cfg.clone()
        });
        if flawed
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::TwoPrimaries)
        {
            caught += 1;
        }
        for flaws in [
            vec![RealFlaw::Agent(Flaw::UncappedDcsTimeout)],
            vec![RealFlaw::LeaseGuardIgnored],
            Vec::new(),
        ] {
            let r = run_real(&RealConfig {
                flaws: flaws.clone(),
                ..cfg.clone()
            });
            assert!(r.violations.is_empty(), "{flaws:?}: {}", r.describe(60));
        }
    }
    println!("a leader blocked past its deadline caught in {caught} of 20 seeds");
    assert!(
        caught > 0,
        "a leader blocked past its deadline was never caught"
    );
}
