//! Rule group 2: the cluster is not initialized yet (`initialize` absent or claimed): the
//! bootstrap race, creating the cluster, or adopting an existing data directory
//! (ARCHITECTURE.md, "Cluster not initialized").

use super::{Context, Step};
use crate::action::Action;
use crate::action::{DcsAction, JobAction, PgAction};
use crate::observation::{JobKind, JobView, LocalPg, Observation, RunningPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase, MAX_BOOTSTRAP_ATTEMPTS};

pub(super) fn uninitialized(s: &mut MemberState, obs: &Observation) -> Step {
    s.phase = Phase::Init;
    if s.bootstrap_failures >= MAX_BOOTSTRAP_ATTEMPTS {
        return (
            Reason::BootstrapGaveUp {
                failures: s.bootstrap_failures,
            },
            vec![],
        );
    }
    match &obs.pg {
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        _ => (
            Reason::ClaimingInitialize,
            vec![Action::Dcs(DcsAction::ClaimInitialize)],
        ),
    }
}

/// `initialize` holds our claim: create the cluster (or adopt the data directory we have).
pub(super) fn bootstrapping(s: &mut MemberState, cx: &Context) -> Step {
    let obs = cx.obs;
    // The failed job stays visible until the next job starts: it is this attempt's failure
    // only while this member is bootstrapping. Seen again after the claim was given back and
    // made anew, it is the previous attempt's, and this attempt starts.
    if let (
        JobView::Failed {
            kind: JobKind::Bootstrap,
            error,
        },
        Phase::Bootstrapping,
    ) = (&obs.job, s.phase)
    {
        s.bootstrap_failures += 1;
        s.phase = Phase::Init;
        let mut actions = vec![Action::Dcs(DcsAction::CancelInitialize)];
        if !matches!(obs.pg, LocalPg::NoData) {
            actions.push(Action::Pg(PgAction::MoveDataAside {
                reason: "bootstrap-failed",
            }));
        }
        let reason = Reason::BootstrapFailed {
            error: error.clone(),
            attempt: s.bootstrap_failures,
            max: MAX_BOOTSTRAP_ATTEMPTS,
        };
        return (reason, actions);
    }
    match &obs.pg {
        LocalPg::NoData => {
            s.phase = Phase::Bootstrapping;
            (
                Reason::Bootstrapping,
                vec![Action::Job(JobAction::Bootstrap)],
            )
        }
        LocalPg::Running(pg) if !pg.in_recovery => {
            s.phase = Phase::Bootstrapping;
            let system_id = pg.system_id;
            (
                Reason::FinishingBootstrap { system_id },
                vec![
                    Action::Dcs(DcsAction::WriteInitialize { system_id }),
                    Action::Dcs(DcsAction::WriteBootstrapConfig),
                    Action::Dcs(DcsAction::AcquireLeader),
                ],
            )
        }
        LocalPg::Running(RunningPg { system_id, .. }) | LocalPg::Stopped { system_id, .. } => {
            // An existing data directory seeds the cluster; it becomes leader through the
            // ordinary leaderless path (started as a replica, then promoted). A standby
            // cluster's bootstrap leaves a running replica of the remote primary: it becomes
            // the standby leader the same way, without the promotion.
            s.phase = Phase::Init;
            let system_id = *system_id;
            let reason = if cx.cfg.standby_cluster && matches!(obs.pg, LocalPg::Running(_)) {
                Reason::StandbyClusterCopied { system_id }
            } else {
                Reason::AdoptingDataDirectory { system_id }
            };
            (
                reason,
                vec![
                    Action::Dcs(DcsAction::WriteInitialize { system_id }),
                    Action::Dcs(DcsAction::WriteBootstrapConfig),
                ],
            )
        }
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
    }
}
