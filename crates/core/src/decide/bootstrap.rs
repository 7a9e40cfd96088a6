//! Rule group 2: the cluster is not initialized yet (`initialize` absent or claimed): the
//! bootstrap race, creating the cluster, or adopting an existing data directory
//! (ARCHITECTURE.md, "Cluster not initialized").

use super::Step;
use crate::action::Action;
use crate::observation::{JobKind, JobView, LocalPg, Observation, RunningPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};

pub(super) fn uninitialized(s: &mut MemberState, obs: &Observation) -> Step {
    s.phase = Phase::Init;
    match &obs.pg {
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        _ => (Reason::ClaimingInitialize, vec![Action::ClaimInitialize]),
    }
}

/// `initialize` holds our claim: create the cluster (or adopt the data directory we have).
pub(super) fn bootstrapping(s: &mut MemberState, obs: &Observation) -> Step {
    if let JobView::Failed {
        kind: JobKind::Bootstrap,
        error,
    } = &obs.job
    {
        s.phase = Phase::Init;
        let mut actions = vec![Action::CancelInitialize];
        if !matches!(obs.pg, LocalPg::NoData) {
            actions.push(Action::MoveDataAside {
                reason: "bootstrap-failed",
            });
        }
        return (Reason::BootstrapFailed(error.clone()), actions);
    }
    match &obs.pg {
        LocalPg::NoData => {
            s.phase = Phase::Bootstrapping;
            (Reason::Bootstrapping, vec![Action::Bootstrap])
        }
        LocalPg::Running(pg) if !pg.in_recovery => {
            s.phase = Phase::Bootstrapping;
            let system_id = pg.system_id;
            (
                Reason::FinishingBootstrap { system_id },
                vec![
                    Action::WriteInitialize { system_id },
                    Action::WriteBootstrapConfig,
                    Action::AcquireLeader,
                ],
            )
        }
        LocalPg::Running(RunningPg { system_id, .. }) | LocalPg::Stopped { system_id, .. } => {
            // An existing data directory seeds the cluster; it becomes leader through the
            // ordinary leaderless path (started as a replica, then promoted).
            s.phase = Phase::Init;
            let system_id = *system_id;
            (
                Reason::AdoptingDataDirectory { system_id },
                vec![
                    Action::WriteInitialize { system_id },
                    Action::WriteBootstrapConfig,
                ],
            )
        }
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
    }
}
