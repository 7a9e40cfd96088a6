//! Copies of the leader's permanent logical slots: a replica restarts to install them when
//! the core says so (the observation `slot_copies_ready`, the action `InstallSlotCopies`),
//! only while it streams from the leader, no operation runs and no switchover is under way.

mod common;

use common::*;
use pgbaton_core::JobAction;
use pgbaton_core::*;

/// A replica of node2 streaming from it, with copies of the leader's slots ready.
fn ready() -> Observation {
    let mut o = obs(replica(900), view(Some("node2")));
    o.configured_upstream = Some("node2".into());
    o.slot_copies_ready = true;
    o
}

#[test]
fn a_streaming_replica_restarts_to_install_the_copies() {
    let d = decide(&in_phase(Phase::Replica), &ready(), &cfg());
    assert_eq!(d.reason, Reason::InstallingSlotCopies);
    assert_eq!(ops(&d), vec![Action::Job(JobAction::InstallSlotCopies)]);
    assert!(
        Action::Job(JobAction::InstallSlotCopies).is_job()
            && !Action::Job(JobAction::InstallSlotCopies).is_dcs()
    );
    assert_eq!(d.state.phase, Phase::Replica);
}

#[test]
fn without_copies_ready_a_streaming_replica_just_follows() {
    let mut o = ready();
    o.slot_copies_ready = false;
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        matches!(d.reason, Reason::FollowingLeader { .. }),
        "{:?}",
        d.reason
    );
    assert!(ops(&d).is_empty(), "{:?}", ops(&d));
}

#[test]
fn no_restart_for_copies_during_a_switchover_or_while_an_operation_runs() {
    // A switchover is under way: this replica may be its candidate, which must stream
    // when the leader hands over.
    let mut o = ready();
    if let Some(v) = o.dcs.as_mut() {
        v.failover = request(Some("node2"), Some(ME));
    }
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        !ops(&d).contains(&Action::Job(JobAction::InstallSlotCopies)),
        "{d:?}"
    );
    // Another operation runs.
    let mut o = ready();
    o.job = JobView::Running(JobKind::Rewind);
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        !ops(&d).contains(&Action::Job(JobAction::InstallSlotCopies)),
        "{d:?}"
    );
}

#[test]
fn a_replica_that_does_not_stream_is_not_restarted_for_copies() {
    let mut o = ready();
    o.pg = LocalPg::Running(RunningPg {
        streaming: false,
        ..match replica(900) {
            LocalPg::Running(pg) => pg,
            _ => unreachable!("a running replica"),
        }
    });
    let d = decide(&in_phase(Phase::Replica), &o, &cfg());
    assert!(
        !ops(&d).contains(&Action::Job(JobAction::InstallSlotCopies)),
        "{d:?}"
    );
}
