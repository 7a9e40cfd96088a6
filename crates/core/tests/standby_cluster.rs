//! A standby cluster (`standby_cluster`): the member holding the leader key stays a replica
//! of the remote primary and is never promoted; the others follow it; a switchover hands the
//! key over without a stop; removing `standby_cluster` promotes the standby leader.

mod common;

use common::*;
use pgbaton_core::*;
use pgbaton_core::{DcsAction, JobAction, PgAction};

fn standby_cfg() -> HaConfig {
    HaConfig {
        standby_cluster: true,
        ..cfg()
    }
}

/// The standby leader's PostgreSQL: a replica of the remote primary, node2 cascading from it.
fn standby(lsn: Lsn) -> LocalPg {
    replica_of(lsn, vec![conn("node2", lsn, false)])
}

/// The view of a standby cluster whose leader key names `leader` (a standby leader).
fn standby_view(leader: Option<&str>) -> DcsView {
    let mut v = view(leader);
    for (name, m) in v.members.iter_mut() {
        m.is_primary = false;
        m.is_standby_leader = Some(name.as_str()) == leader;
    }
    v
}

fn standby_leader_state() -> MemberState {
    in_phase(Phase::StandbyLeader)
}

#[test]
fn the_key_holder_stays_a_replica_and_points_at_the_remote_primary() {
    let o = obs(standby(5_000), standby_view(Some(ME)));
    let d = decide(&MemberState::new(), &o, &standby_cfg());
    assert_eq!(d.state.phase, Phase::StandbyLeader);
    assert_eq!(d.reason, Reason::StandbyLeaderRepointing);
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::Repoint { upstream: None })]
    );
    assert!(d
        .actions
        .contains(&Action::Dcs(DcsAction::WriteStatus { optime: 5_000 })));
    assert!(d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
    assert!(!d.actions.contains(&Action::Job(JobAction::Promote)));

    // Once pointed there: nothing but the duties, again and again.
    let o = Observation {
        follows_remote_primary: true,
        ..o
    };
    let d = decide(&d.state, &o, &standby_cfg());
    assert_eq!(d.reason, Reason::StandbyLeaderFollowingRemote);
    assert_eq!(ops(&d), vec![]);
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Pg(PgAction::SyncSlots { members }) if members.len() == 2)));
}

#[test]
fn a_stopped_standby_leader_starts_as_a_replica_of_the_remote_primary() {
    let stopped = stopped(false, 5_000);
    let d = decide(
        &standby_leader_state(),
        &obs(stopped, standby_view(Some(ME))),
        &standby_cfg(),
    );
    assert_eq!(d.reason, Reason::StartingStandbyLeader);
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::StartReplica { upstream: None })]
    );
    assert_eq!(d.state.phase, Phase::StandbyLeader);
}

#[test]
fn removing_standby_cluster_promotes_the_standby_leader() {
    let o = Observation {
        follows_remote_primary: true,
        ..obs(standby(5_000), standby_view(Some(ME)))
    };
    let d = decide(&standby_leader_state(), &o, &cfg());
    assert_eq!(d.state.phase, Phase::Promoting);
    assert_eq!(ops(&d), vec![Action::Job(JobAction::Promote)]);
}

#[test]
fn a_primary_stays_one_when_standby_cluster_is_added() {
    let d = decide(
        &leader_state(),
        &obs(primary(5_000, vec![]), view(Some(ME))),
        &standby_cfg(),
    );
    assert_eq!(d.state.phase, Phase::Leader);
    assert_eq!(d.reason, Reason::LeaderHealthy);
    assert!(!d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Job(JobAction::Stop { .. }))));
}

#[test]
fn the_other_members_follow_the_standby_leader_and_clone_from_it() {
    let me_replica = LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery: true,
        timeline: 1,
        lsn: 5_000,
        streaming: false,
        replicas: vec![],
    });
    let d = decide(
        &MemberState::new(),
        &obs(me_replica, standby_view(Some("node2"))),
        &standby_cfg(),
    );
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::Repoint {
            upstream: Some("node2".into())
        })]
    );
    // A member without data clones from the standby leader (it runs, as a replica).
    let d = decide(
        &MemberState::new(),
        &obs(LocalPg::NoData, standby_view(Some("node2"))),
        &standby_cfg(),
    );
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node2".into()
        })]
    );
}

#[test]
fn a_switchover_hands_the_key_over_without_stopping_postgres() {
    let mut v = standby_view(Some(ME));
    v.failover = request(Some(ME), Some("node2"));
    let o = Observation {
        follows_remote_primary: true,
        ..obs(standby(5_000), v)
    };
    let d = decide(&standby_leader_state(), &o, &standby_cfg());
    assert_eq!(
        d.reason,
        Reason::StandbyLeaderHandingOver { to: "node2".into() }
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::ReleaseLeader)]);
    assert_eq!(d.state.phase, Phase::Replica);

    // The candidate, leaderless, races at once; it then points itself at the remote primary.
    let mut v = standby_view(None);
    v.failover = request(Some(ME), Some("node2"));
    let candidate = HaConfig {
        name: "node2".into(),
        ..standby_cfg()
    };
    let d = decide(&MemberState::new(), &obs(standby(5_000), v), &candidate);
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    let mut v = standby_view(Some("node2"));
    v.failover = request(Some(ME), Some("node2"));
    let d = decide(&d.state, &obs(standby(5_000), v), &candidate);
    assert_eq!(d.state.phase, Phase::StandbyLeader);
    assert_eq!(
        ops(&d),
        vec![
            Action::Dcs(DcsAction::ClearFailover),
            Action::Pg(PgAction::Repoint { upstream: None })
        ]
    );
}

#[test]
fn the_bootstrap_of_a_standby_cluster_records_the_copy_and_never_promotes() {
    let mut v = standby_view(None);
    v.initialize = Initialize::ClaimedBy(ME.into());
    let bootstrapping = MemberState {
        phase: Phase::Bootstrapping,
        ..MemberState::new()
    };
    let d = decide(
        &bootstrapping,
        &obs(LocalPg::NoData, v.clone()),
        &standby_cfg(),
    );
    assert_eq!(ops(&d), vec![Action::Job(JobAction::Bootstrap)]);
    let d = decide(&d.state, &obs(standby(5_000), v), &standby_cfg());
    assert_eq!(d.reason, Reason::StandbyClusterCopied { system_id: 42 });
    assert_eq!(
        ops(&d),
        vec![
            Action::Dcs(DcsAction::WriteInitialize { system_id: 42 }),
            Action::Dcs(DcsAction::WriteBootstrapConfig)
        ]
    );
    // Then the election, and the key: a standby leader, not a promotion.
    let d = decide(
        &d.state,
        &obs(standby(5_000), standby_view(None)),
        &standby_cfg(),
    );
    assert_eq!(ops(&d), vec![Action::Dcs(DcsAction::AcquireLeader)]);
    let d = decide(
        &d.state,
        &obs(standby(5_000), standby_view(Some(ME))),
        &standby_cfg(),
    );
    assert_eq!(d.state.phase, Phase::StandbyLeader);
    assert!(!d.actions.contains(&Action::Job(JobAction::Promote)));
}
