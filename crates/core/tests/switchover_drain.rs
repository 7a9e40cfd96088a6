//! The leader waits for the routers to pause their write traffic before it stops PostgreSQL
//! for a switchover, at most `switchover_drain_timeout` (ARCHITECTURE.md, "Handover").

use pgbaton_core::*;
use pgbaton_core::{DcsAction, JobAction};

mod common;
use common::*;

/// The leader's view with a switchover to node2 (request revision 7) and these routers.
fn switchover_view(routers: &[(&str, Option<i64>)]) -> DcsView {
    let mut v = view(Some(ME));
    v.failover = request(Some(ME), Some("node2")).map(|r| FailoverRequest { revision: 7, ..r });
    v.routers = routers
        .iter()
        .map(|(name, ack)| (name.to_string(), *ack))
        .collect();
    v
}

fn at(now: Millis, v: DcsView) -> Observation {
    let mut o = obs(primary(1000, vec![conn("node2", 1000, false)]), v);
    o.now = now;
    o.lease_valid_until = Some(now + 3_000);
    o
}

fn stops(d: &Decision) -> bool {
    ops(d).contains(&Action::Job(JobAction::Stop {
        mode: StopMode::CheckpointThenFast,
    }))
}

#[test]
fn without_routers_the_leader_hands_over_at_once() {
    let d = decide(&leader_state(), &at(50_000, switchover_view(&[])), &cfg());
    assert!(stops(&d), "{:?}", d.actions);
    assert_eq!(d.state.phase, Phase::HandingOver);
    assert_eq!(d.state.drain_started, None);
}

#[test]
fn the_leader_waits_until_every_router_acknowledged_the_request() {
    let routers = [("r1", Some(7)), ("r2", None), ("r3", Some(6))];
    let d = decide(
        &leader_state(),
        &at(50_000, switchover_view(&routers)),
        &cfg(),
    );
    assert!(
        !stops(&d),
        "no stop while routers still drain: {:?}",
        d.actions
    );
    assert_eq!(d.state.phase, Phase::Leader);
    assert_eq!(d.state.drain_started, Some((7, 50_000)));
    assert_eq!(
        d.reason,
        Reason::SwitchoverDraining {
            to: "node2".into(),
            waiting_for: vec!["r2".into(), "r3".into()],
            remaining_ms: 5_000,
        }
    );
    assert!(
        d.actions.contains(&Action::Dcs(DcsAction::RenewLease)),
        "the leader keeps its lease meanwhile: {:?}",
        d.actions
    );
    assert!(d.next_wake <= 55_000, "wakes at the timeout at the latest");
    assert!(
        d.reason.to_string().contains("r2, r3"),
        "the reason names the routers: {}",
        d.reason
    );

    // One second later r2 acknowledged, r3 (an acknowledgement of an older request) not yet.
    let routers = [("r1", Some(7)), ("r2", Some(7)), ("r3", Some(6))];
    let d = decide(&d.state, &at(51_000, switchover_view(&routers)), &cfg());
    assert!(!stops(&d));
    assert_eq!(
        d.state.drain_started,
        Some((7, 50_000)),
        "the timeout runs on"
    );
    assert!(matches!(
        d.reason,
        Reason::SwitchoverDraining {
            remaining_ms: 4_000,
            ..
        }
    ));

    // Every router acknowledged: checkpoint and clean stop.
    let routers = [("r1", Some(7)), ("r2", Some(7)), ("r3", Some(7))];
    let d = decide(&d.state, &at(51_200, switchover_view(&routers)), &cfg());
    assert!(stops(&d), "{:?}", d.actions);
    assert_eq!(d.reason, Reason::HandingOver { to: "node2".into() });
    assert_eq!(d.state.phase, Phase::HandingOver);
    assert_eq!(d.state.drain_started, None);
}

#[test]
fn a_router_that_does_not_answer_holds_the_switchover_at_most_the_drain_timeout() {
    let cfg = HaConfig {
        switchover_drain_timeout_ms: 2_000,
        ..cfg()
    };
    let routers = [("r1", Some(7)), ("silent", None)];
    let d = decide(
        &leader_state(),
        &at(50_000, switchover_view(&routers)),
        &cfg,
    );
    assert!(!stops(&d));
    let d = decide(&d.state, &at(51_999, switchover_view(&routers)), &cfg);
    assert!(!stops(&d), "not before the timeout");
    let d = decide(&d.state, &at(52_000, switchover_view(&routers)), &cfg);
    assert!(stops(&d), "at the timeout: {:?}", d.actions);
    assert_eq!(
        d.reason,
        Reason::HandingOverUnpaused {
            to: "node2".into(),
            not_paused: vec!["silent".into()],
        }
    );
    assert!(d.reason.to_string().contains("silent"));
}

#[test]
fn a_zero_drain_timeout_does_not_wait_for_routers() {
    let cfg = HaConfig {
        switchover_drain_timeout_ms: 0,
        ..cfg()
    };
    let d = decide(
        &leader_state(),
        &at(50_000, switchover_view(&[("r1", None)])),
        &cfg,
    );
    assert!(stops(&d));
}

#[test]
fn a_new_request_starts_its_own_drain_and_a_cancelled_one_is_forgotten() {
    let routers = [("r1", None)];
    let d = decide(
        &leader_state(),
        &at(50_000, switchover_view(&routers)),
        &cfg(),
    );
    assert_eq!(d.state.drain_started, Some((7, 50_000)));
    // The request is deleted (ctl cancelled it): the drain is forgotten.
    let mut none = switchover_view(&routers);
    none.failover = None;
    let d = decide(&d.state, &at(51_000, none), &cfg());
    assert_eq!(d.state.drain_started, None);
    assert_eq!(d.reason, Reason::LeaderHealthy);
    // A later request (another revision) waits its own full timeout.
    let mut later = switchover_view(&routers);
    if let Some(r) = later.failover.as_mut() {
        r.revision = 9;
    }
    let d = decide(&d.state, &at(60_000, later.clone()), &cfg());
    assert_eq!(d.state.drain_started, Some((9, 60_000)));
    let d = decide(&d.state, &at(64_999, later), &cfg());
    assert!(!stops(&d));
}

#[test]
fn a_refused_switchover_does_not_wait_for_routers() {
    let mut v = switchover_view(&[("r1", None)]);
    if let Some(r) = v.failover.as_mut() {
        r.candidate = Some("nobody".into());
    }
    let d = decide(&leader_state(), &at(50_000, v), &cfg());
    assert!(ops(&d).contains(&Action::Dcs(DcsAction::ClearFailover)));
    assert_eq!(d.state.drain_started, None);
}
