//! Rule group 1, before anything else: a writable primary needs the right to be one now (an
//! unexpired lease on the leader key, or a failsafe right); without it, demote or abort the
//! operation that would make one (ARCHITECTURE.md, "Safety rules", S1–S3).

use super::{Context, Step};
use crate::action::JobAction;
use crate::action::{Action, StopMode};
use crate::observation::{Initialize, JobKind, JobView, LocalPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};

/// Rule 1: demote (or abort an operation that could make us primary) without the right to.
pub(super) fn enforce_single_primary(s: &mut MemberState, cx: &Context) -> Option<Step> {
    if cx.leader_now {
        return None;
    }
    let key_holder = cx.view.and_then(|v| v.leader.clone());
    // A member creating a new cluster runs a primary before it takes the leader key: nobody
    // else can have data of this cluster yet.
    let creating_cluster = s.phase == Phase::Bootstrapping
        && cx.view.is_some_and(|v| {
            v.leader.is_none() && !matches!(v.initialize, Initialize::SystemId(_))
        });
    if creating_cluster {
        return None;
    }
    if cx.obs.job == JobView::Running(JobKind::Stop) {
        return None;
    }
    if cx.obs.pg.is_primary() {
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::DemoteWithoutLease { key_holder },
            vec![Action::Job(JobAction::Stop {
                mode: StopMode::Immediate,
            })],
        ));
    }
    // A leader's PostgreSQL that does not answer may still be a writable primary.
    let maybe_primary = cx.obs.pg == LocalPg::Starting
        && matches!(
            s.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary
        );
    if maybe_primary && !matches!(cx.obs.job, JobView::Running(_)) {
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::DemoteWithoutLease { key_holder },
            vec![Action::Job(JobAction::Stop {
                mode: StopMode::Immediate,
            })],
        ));
    }
    let primary_job = matches!(
        cx.obs.job,
        JobView::Running(JobKind::Promote | JobKind::Start)
    ) && matches!(s.phase, Phase::Promoting | Phase::RestartingPrimary);
    if primary_job {
        let JobView::Running(kind) = cx.obs.job else {
            return None;
        };
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::AbortPrimaryJobWithoutLease(kind),
            vec![Action::Job(JobAction::Stop {
                mode: StopMode::Immediate,
            })],
        ));
    }
    None
}
