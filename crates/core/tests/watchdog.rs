//! The watchdog rule (`crates/core/src/watchdog.rs`): with `watchdog.mode: required` and no
//! usable device a member never leads — it does not race, does not promote, does not take a
//! switchover, does not create the cluster, and a leader in that state stops its primary
//! before giving the key up. Without the requirement (`automatic`, `off`) nothing changes.

use pgbaton_core::{DcsAction, JobAction};
use std::collections::BTreeMap;

use pgbaton_core::*;

const ME: &str = "node2";
const NOW: Millis = 100_000;

fn cfg() -> HaConfig {
    HaConfig::with_defaults(ME)
}

fn running(in_recovery: bool) -> LocalPg {
    LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery,
        timeline: 1,
        lsn: 100,
        streaming: in_recovery,
        replicas: Vec::new(),
    })
}

fn member(is_primary: bool) -> MemberView {
    MemberView {
        state: "running".into(),
        is_primary,
        is_standby_leader: false,
        lsn: Some(100),
        timeline: Some(1),
        nofailover: false,
        replicatefrom: None,
        nosync: false,
        clonefrom: false,
    }
}

fn view(leader: Option<&str>) -> DcsView {
    let mut members = BTreeMap::new();
    for m in ["node1", "node2", "node3"] {
        members.insert(m.to_string(), member(Some(m) == leader));
    }
    DcsView {
        initialize: Initialize::SystemId(42),
        leader: leader.map(str::to_string),
        members,
        leader_optime: Some(100),
        history: Default::default(),
        config_revision: None,
        failover: None,
        sync: None,
        failsafe: None,
        leader_oldest_wal: None,
        routers: Default::default(),
    }
}

fn obs(pg: LocalPg, view: DcsView, watchdog: WatchdogState) -> Observation {
    Observation {
        now: NOW,
        pg,
        job: JobView::Idle,
        dcs: Some(view),
        lease_valid_until: Some(NOW + 3_000),
        peers: BTreeMap::new(),
        configured_upstream: Some("node1".into()),
        follows_remote_primary: false,
        unix_now_ms: 1_800_000_000_000,
        configured_sync: None,
        failsafe_acked_at: None,
        failsafe_promised_until: None,
        missing_wal_segment: None,
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        watchdog,
    }
}

fn unusable() -> WatchdogState {
    WatchdogState::Unusable("/dev/watchdog: No such file or directory".into())
}

fn in_phase(phase: Phase) -> MemberState {
    MemberState {
        phase,
        ..MemberState::new()
    }
}

fn has(d: &Decision, wanted: &Action) -> bool {
    d.actions.iter().any(|a| a == wanted)
}

fn refused(d: &Decision, what: WatchdogRefusal) -> bool {
    matches!(&d.reason, Reason::WatchdogRequired { what: w, why } if *w == what && why.contains("No such file"))
}

#[test]
fn required_without_a_device_does_not_race() {
    let o = obs(running(true), view(None), unusable());
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        !has(&d, &Action::Dcs(DcsAction::AcquireLeader)),
        "{:?}",
        d.actions
    );
    assert!(refused(&d, WatchdogRefusal::NotRacing), "{}", d.reason);
    assert_eq!(d.state.phase, Phase::Replica);
    // The sentence the log and `last_decision` carry says why.
    let text = d.reason.to_string();
    assert!(
        text.contains("not racing") && text.contains("watchdog.mode is required"),
        "{text}"
    );
}

#[test]
fn required_with_a_usable_device_races() {
    let o = obs(running(true), view(None), WatchdogState::Ready);
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        has(&d, &Action::Dcs(DcsAction::AcquireLeader)),
        "{}",
        d.reason
    );
}

#[test]
fn automatic_without_a_device_still_leads() {
    // `automatic` (and `off`) report NotRequired whatever the device: race, then promote.
    let o = obs(running(true), view(None), WatchdogState::NotRequired);
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        has(&d, &Action::Dcs(DcsAction::AcquireLeader)),
        "{}",
        d.reason
    );
    let o = obs(running(true), view(Some(ME)), WatchdogState::NotRequired);
    let d = decide(&in_phase(Phase::Candidate), &o, &cfg());
    assert!(has(&d, &Action::Job(JobAction::Promote)), "{}", d.reason);
}

#[test]
fn required_without_a_device_does_not_promote_and_releases_the_key() {
    // It holds the key (it raced before the device went away, or a stale race): no promotion.
    let o = obs(running(true), view(Some(ME)), unusable());
    let d = decide(&in_phase(Phase::Candidate), &o, &cfg());
    assert!(
        !has(&d, &Action::Job(JobAction::Promote)),
        "{:?}",
        d.actions
    );
    assert!(
        has(&d, &Action::Dcs(DcsAction::ReleaseLeader)),
        "{:?}",
        d.actions
    );
    assert!(
        refused(&d, WatchdogRefusal::ReleasingLeaderKey),
        "{}",
        d.reason
    );
    assert_eq!(d.state.phase, Phase::Replica);
}

#[test]
fn required_without_a_device_refuses_a_switchover_to_it() {
    // The leader released the key for a switchover naming this member.
    let mut v = view(None);
    v.failover = Some(FailoverRequest {
        leader: Some("node1".into()),
        candidate: Some(ME.into()),
        scheduled_at_unix_ms: None,
        revision: 1,
    });
    let o = obs(running(true), v.clone(), unusable());
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        !has(&d, &Action::Dcs(DcsAction::AcquireLeader)),
        "{:?}",
        d.actions
    );
    assert!(refused(&d, WatchdogRefusal::NotRacing), "{}", d.reason);
    // The same request with a usable device: it races as the candidate.
    let o = obs(running(true), v, WatchdogState::Ready);
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        has(&d, &Action::Dcs(DcsAction::AcquireLeader)),
        "{}",
        d.reason
    );

    // The leader's side: the adapter publishes the member as one that may not be promoted
    // (its document and REST API say `watchdog_failed`); the leader refuses the request.
    let mut v = view(Some("node1"));
    v.members.get_mut(ME).unwrap().nofailover = true;
    v.failover = Some(FailoverRequest {
        leader: Some("node1".into()),
        candidate: Some(ME.into()),
        scheduled_at_unix_ms: None,
        revision: 1,
    });
    let leader_cfg = HaConfig::with_defaults("node1");
    let leader_pg = RunningPg {
        system_id: 42,
        in_recovery: false,
        timeline: 1,
        lsn: 100,
        streaming: false,
        replicas: vec![ReplicaConnection {
            name: ME.into(),
            streaming: true,
            synchronous: false,
            flush_lsn: Some(100),
        }],
    };
    let o = obs(LocalPg::Running(leader_pg), v, WatchdogState::NotRequired);
    let d = decide(&in_phase(Phase::Leader), &o, &leader_cfg);
    assert!(
        matches!(&d.reason, Reason::SwitchoverRefused(why) if why.contains("watchdog")),
        "{}",
        d.reason
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::Job(JobAction::Stop { .. }))),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_leader_whose_required_device_is_gone_stops_its_primary_before_releasing() {
    // First cycle: the primary runs; stop it, keep the key (releasing it now could let another
    // member promote while this primary still accepts writes).
    let o = obs(running(false), view(Some(ME)), unusable());
    let d = decide(&in_phase(Phase::Leader), &o, &cfg());
    assert!(
        has(
            &d,
            &Action::Job(JobAction::Stop {
                mode: StopMode::Immediate
            })
        ),
        "{:?}",
        d.actions
    );
    assert!(
        !has(&d, &Action::Dcs(DcsAction::ReleaseLeader)),
        "{:?}",
        d.actions
    );
    assert!(refused(&d, WatchdogRefusal::Demoting), "{}", d.reason);
    // Next cycle: stopped; release the key, never restart it as a primary.
    let stopped = LocalPg::Stopped {
        system_id: 42,
        was_primary: true,
        timeline: 1,
        lsn: 100,
    };
    let o = obs(stopped, view(Some(ME)), unusable());
    let d = decide(&d.state, &o, &cfg());
    assert!(
        has(&d, &Action::Dcs(DcsAction::ReleaseLeader)),
        "{:?}",
        d.actions
    );
    assert!(
        !has(&d, &Action::Job(JobAction::StartPrimary)),
        "{:?}",
        d.actions
    );
}

#[test]
fn required_without_a_device_does_not_create_the_cluster() {
    let mut v = view(None);
    v.initialize = Initialize::Absent;
    let o = obs(LocalPg::NoData, v.clone(), unusable());
    let d = decide(&MemberState::new(), &o, &cfg());
    assert!(
        !has(&d, &Action::Dcs(DcsAction::ClaimInitialize)),
        "{:?}",
        d.actions
    );
    assert!(
        refused(&d, WatchdogRefusal::NotBootstrapping),
        "{}",
        d.reason
    );
    let o = obs(LocalPg::NoData, v, WatchdogState::Ready);
    let d = decide(&MemberState::new(), &o, &cfg());
    assert!(
        has(&d, &Action::Dcs(DcsAction::ClaimInitialize)),
        "{}",
        d.reason
    );
}
