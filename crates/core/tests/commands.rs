//! Operator commands through `decide`: restart and reinitialize are carried out by the
//! decision (operations and the caller's answer), refused with a status and why otherwise.

mod common;

use common::*;
use pgbaton_core::*;
use pgbaton_core::{DcsAction, JobAction, PgAction};

fn with_command(o: Observation, command: MemberCommand) -> Observation {
    Observation {
        command: Some(command),
        ..o
    }
}

fn started(d: &Decision) -> bool {
    matches!(d.command, Some(CommandVerdict::Started(_)))
}

fn refused(d: &Decision) -> (u16, String) {
    match &d.command {
        Some(CommandVerdict::Refused { status, message }) => (*status, message.clone()),
        other => panic!("not refused: {other:?}"),
    }
}

fn replica_state() -> MemberState {
    in_phase(Phase::Replica)
}

#[test]
fn a_restart_stops_the_leaders_primary_which_the_rules_start_again() {
    let o = with_command(
        obs(primary(5_000, vec![]), view(Some(ME))),
        MemberCommand::Restart,
    );
    let d = decide(&leader_state(), &o, &cfg());
    assert!(started(&d), "{:?}", d.command);
    assert_eq!(d.reason, Reason::RestartRequested);
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.actions.contains(&Action::Dcs(DcsAction::RenewLease)));
    // Stopped (cleanly, as a primary): started again in place.
    let stopped = stopped(true, 5_000);
    let d = decide(&d.state, &obs(stopped, view(Some(ME))), &cfg());
    assert_eq!(ops(&d), vec![Action::Job(JobAction::StartPrimary)]);
    assert_eq!(d.command, None);
}

#[test]
fn a_restart_is_refused_while_an_operation_runs_or_postgres_is_down() {
    let mut o = with_command(
        obs(replica(5_000), view(Some("node2"))),
        MemberCommand::Restart,
    );
    o.job = JobView::Running(JobKind::Rewind);
    let d = decide(&replica_state(), &o, &cfg());
    assert_eq!(refused(&d).0, 503);
    assert!(
        refused(&d).1.contains("another operation"),
        "{:?}",
        d.command
    );
    assert_eq!(
        d.reason,
        Reason::WaitingForJob(JobKind::Rewind),
        "the cycle goes on"
    );
    let stopped = stopped(false, 5_000);
    let d = decide(
        &replica_state(),
        &with_command(obs(stopped, view(Some("node2"))), MemberCommand::Restart),
        &cfg(),
    );
    assert!(refused(&d).1.contains("not running"), "{:?}", d.command);
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::StartReplica {
            upstream: Some("node2".into())
        })],
        "the refused command leaves the cycle to the rules"
    );
}

#[test]
fn a_reinitialize_stops_then_moves_aside_then_clones_from_the_leader() {
    let reinit = MemberCommand::Reinitialize { force: false };
    let o = with_command(obs(replica(5_000), view(Some("node2"))), reinit);
    let d = decide(&replica_state(), &o, &cfg());
    assert!(started(&d), "{:?}", d.command);
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast
        })]
    );
    assert!(d.state.reinit_pending);
    // The stop runs: wait.
    let mut o = obs(replica(5_000), view(Some("node2")));
    o.job = JobView::Running(JobKind::Stop);
    let d = decide(&d.state, &o, &cfg());
    assert_eq!(ops(&d), vec![]);
    // Stopped: moved aside, then cloned from the leader.
    let stopped = stopped(false, 5_000);
    let d = decide(&d.state, &obs(stopped, view(Some("node2"))), &cfg());
    assert_eq!(d.reason, Reason::Reinitializing);
    assert_eq!(
        ops(&d),
        vec![Action::Pg(PgAction::MoveDataAside { reason: "reinit" })]
    );
    assert_eq!(d.state.phase, Phase::Cloning);
    assert!(!d.state.reinit_pending);
    let d = decide(&d.state, &obs(LocalPg::NoData, view(Some("node2"))), &cfg());
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Clone {
            from: "node2".into()
        })]
    );
}

#[test]
fn a_reinitialize_is_refused_on_the_leader_and_during_an_operation_unless_forced() {
    let reinit = MemberCommand::Reinitialize { force: false };
    let d = decide(
        &leader_state(),
        &with_command(obs(primary(5_000, vec![]), view(Some(ME))), reinit),
        &cfg(),
    );
    assert_eq!(refused(&d).0, 503);
    assert!(refused(&d).1.contains("leader"), "{:?}", d.command);
    assert!(!d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Job(JobAction::Stop { .. }))));

    let mut o = with_command(obs(replica(5_000), view(Some("node2"))), reinit);
    o.job = JobView::Running(JobKind::Rewind);
    let d = decide(&replica_state(), &o, &cfg());
    assert!(refused(&d).1.contains("add force"), "{:?}", d.command);

    o.command = Some(MemberCommand::Reinitialize { force: true });
    let d = decide(&replica_state(), &o, &cfg());
    assert!(started(&d), "{:?}", d.command);
    assert_eq!(
        ops(&d),
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Immediate
        })],
        "force aborts the operation"
    );
    assert!(d.state.reinit_pending);
}

#[test]
fn a_command_on_a_halted_member_is_refused_with_why() {
    let halted = MemberState {
        phase: Phase::Halted,
        halted_because: Some("data directory of another cluster".into()),
        ..MemberState::new()
    };
    let d = decide(
        &halted,
        &with_command(
            obs(replica(5_000), view(Some("node2"))),
            MemberCommand::Restart,
        ),
        &cfg(),
    );
    let (status, message) = refused(&d);
    assert_eq!(status, 503);
    assert!(message.contains("another cluster"), "{message}");
}
