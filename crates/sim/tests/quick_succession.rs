//! Operations in quick succession, seconds apart, before any restartpoint (pg_control still
//! names the old timeline on every replica): the kind of sequence that once left a cluster
//! leaderless for minutes. Each scenario runs over several seeds (message delays, job
//! durations and failures vary) with every invariant checked after every event, the
//! continuous liveness check (`liveness.rs`) included.

use pgbaton_sim::{
    run, Candidate, FaultKind, Happening, Millis, ScriptedFault, SimConfig, SimReport, Target,
};

const TTL: Millis = 4_000;
const LOOP_WAIT: Millis = 1_000;
/// Promise 4: a new leader within ttl + loop_wait + 2 s.
const BOUND: Millis = TTL + LOOP_WAIT + 2_000;
const SEEDS: std::ops::Range<u64> = 0..25;

fn at(at_ms: Millis, target: Target, kind: FaultKind) -> ScriptedFault {
    ScriptedFault {
        at_ms,
        target,
        kind,
    }
}

fn switchover(at_ms: Millis, candidate: Candidate) -> ScriptedFault {
    at(
        at_ms,
        Target::Leader,
        FaultKind::Switchover {
            candidate,
            scheduled_in_ms: None,
        },
    )
}

fn leader_lost(at_ms: Millis) -> ScriptedFault {
    at(
        at_ms,
        Target::Leader,
        FaultKind::CrashMember { down_ms: 15_000 },
    )
}

fn scenario(seed: u64, duration_ms: Millis, faults: Vec<ScriptedFault>) -> SimReport {
    let mut cfg = SimConfig::scripted(seed, duration_ms, faults);
    cfg.trace_lines = 400;
    let r = run(&cfg);
    assert!(
        r.violations.is_empty(),
        "{}\n{}",
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

/// Members that became a writable primary at or after `t`, with when and on which timeline.
fn promotions(r: &SimReport, t: Millis) -> Vec<(Millis, String, u32)> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::BecamePrimary {
                at,
                member,
                timeline,
            } if *at >= t => Some((*at, member.clone(), *timeline)),
            _ => None,
        })
        .collect()
}

/// Whom each fault hit, in order.
fn victims(r: &SimReport) -> Vec<(Millis, String)> {
    r.happenings
        .iter()
        .filter_map(|h| match h {
            Happening::FaultStarted { at, member, .. } => Some((*at, member.clone())),
            _ => None,
        })
        .collect()
}

fn trace(r: &SimReport) -> String {
    r.trace.join("\n")
}

#[test]
fn switchover_then_the_new_leader_lost_a_new_leader_within_ttl_plus_loop_wait_plus_2s() {
    for seed in SEEDS {
        // With a named candidate and without; the new leader is lost 1–5 s after the request.
        let candidate = if seed % 2 == 0 {
            Candidate::Any
        } else {
            Candidate::Replica
        };
        let lost_at = 10_000 + 1_000 + (seed % 5) * 1_000;
        let r = scenario(
            seed,
            40_000,
            vec![switchover(10_000, candidate), leader_lost(lost_at)],
        );
        let v = victims(&r);
        let (old, lost) = (&v[0].1, &v[1].1);
        let first = promotions(&r, 10_000);
        let (_, new, tl) = first.first().expect("the switchover promoted someone");
        assert_ne!(new, old, "seed {seed}: the old leader promoted itself");
        assert_eq!(lost, new, "seed {seed}: the loss hits the new leader");
        let after = promotions(&r, lost_at);
        let (when, next, next_tl) = after
            .first()
            .unwrap_or_else(|| panic!("seed {seed}: no leader after the loss\n{}", trace(&r)));
        assert_ne!(next, lost, "seed {seed}");
        assert!(
            *when <= lost_at + BOUND,
            "seed {seed}: new leader {next} only at {when} ms, lost at {lost_at} ms\n{}",
            trace(&r)
        );
        assert_eq!(*next_tl, tl + 1, "seed {seed}: one timeline per promotion");
    }
}

#[test]
fn ten_switchovers_without_candidate_each_hands_over_to_another_member() {
    let faults: Vec<ScriptedFault> = (0..10)
        .map(|i| switchover(10_000 + i * 5_000, Candidate::Any))
        .collect();
    for seed in 0..10 {
        let r = scenario(seed, 70_000, faults.clone());
        let v = victims(&r);
        let promoted = promotions(&r, 10_000);
        assert_eq!(
            promoted.len(),
            10,
            "seed {seed}: one promotion per switchover: {promoted:?}\n{}",
            trace(&r)
        );
        let first_tl = promoted[0].2;
        for (i, ((_, from), (when, to, tl))) in v.iter().zip(&promoted).enumerate() {
            assert_ne!(
                to, from,
                "seed {seed}: switchover {i} from {from}: the old leader took the key back at {when}\n{}",
                trace(&r)
            );
            assert_eq!(*tl, first_tl + i as u32, "seed {seed}: switchover {i}");
        }
    }
}

#[test]
fn failover_then_failover_10s_later_each_within_ttl_plus_loop_wait_plus_2s() {
    for seed in SEEDS {
        let r = scenario(seed, 45_000, vec![leader_lost(10_000), leader_lost(20_000)]);
        let v = victims(&r);
        assert_ne!(
            v[0].1, v[1].1,
            "seed {seed}: the second loss hits the new leader"
        );
        for (lost_at, lost) in &v {
            let (when, next, _) = promotions(&r, *lost_at)
                .into_iter()
                .find(|(_, m, _)| m != lost)
                .unwrap_or_else(|| panic!("seed {seed}: no new leader\n{}", trace(&r)));
            assert!(
                when <= lost_at + BOUND,
                "seed {seed}: {lost} lost at {lost_at} ms, {next} promoted only at {when} ms\n{}",
                trace(&r)
            );
        }
        let timelines: Vec<u32> = promotions(&r, 10_000).iter().map(|p| p.2).collect();
        assert_eq!(timelines[1], timelines[0] + 1, "seed {seed}: {timelines:?}");
    }
}
