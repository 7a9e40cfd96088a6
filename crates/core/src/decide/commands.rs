//! Operator commands (`crate::command`), after the safety rule: restart PostgreSQL in its
//! role, or reinitialize a replica (stop, move the data directory aside, clone again). A
//! refused command leaves the cycle to the other rules (ARCHITECTURE.md, "Operator commands").

use super::{Context, Step};
use crate::action::{Action, StopMode};
use crate::action::{JobAction, PgAction};
use crate::command::{CommandVerdict, MemberCommand};
use crate::observation::{JobView, LocalPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};

/// The verdict on this cycle's command, and the step that carries it out (`None`: refused,
/// or no command).
pub(super) fn command(s: &mut MemberState, cx: &Context) -> (Option<CommandVerdict>, Option<Step>) {
    let Some(command) = cx.obs.command else {
        return (None, None);
    };
    match carry_out(s, cx, command) {
        Ok((verdict, step)) => (Some(verdict), Some(step)),
        Err(refused) => (Some(refused), None),
    }
}

fn carry_out(
    s: &mut MemberState,
    cx: &Context,
    command: MemberCommand,
) -> Result<(CommandVerdict, Step), CommandVerdict> {
    let job_running = matches!(cx.obs.job, JobView::Running(_));
    match command {
        MemberCommand::Restart => {
            if job_running {
                return Err(CommandVerdict::refused(
                    503,
                    "another operation on PostgreSQL runs; retry when it has finished",
                ));
            }
            if !matches!(cx.obs.pg, LocalPg::Running(_)) {
                return Err(CommandVerdict::refused(
                    503,
                    "PostgreSQL is not running: nothing to restart",
                ));
            }
            // The rules start it again in its role once it is stopped (a leader in place
            // while it holds its lease, a replica following the leader).
            Ok((
                CommandVerdict::Started(
                    "restart started: PostgreSQL is stopping and will be started again".into(),
                ),
                (
                    Reason::RestartRequested,
                    vec![Action::Job(JobAction::Stop {
                        mode: StopMode::Fast,
                    })],
                ),
            ))
        }
        MemberCommand::Reinitialize { force } => {
            let Some(view) = cx.view else {
                return Err(CommandVerdict::refused(
                    503,
                    "cannot read the DCS, so the leader to clone from is unknown; retry",
                ));
            };
            if view.leader.as_deref() == Some(cx.cfg.name.as_str()) || cx.leader_now {
                return Err(CommandVerdict::refused(
                    503,
                    "this member is the leader: a leader cannot be reinitialized (switch over first)",
                ));
            }
            if job_running && !force {
                return Err(CommandVerdict::refused(
                    503,
                    "another operation on PostgreSQL runs; add force to abort it and reinitialize",
                ));
            }
            let started = CommandVerdict::Started(
                "reinitialize started: the data directory is moved aside and cloned again from the leader"
                    .into(),
            );
            // An operation that runs is aborted by an immediate stop (a replica loses nothing).
            let stop = Action::Job(JobAction::Stop {
                mode: if job_running {
                    StopMode::Immediate
                } else {
                    StopMode::Fast
                },
            });
            match cx.obs.pg {
                LocalPg::NoData if !job_running => Err(CommandVerdict::refused(
                    409,
                    "there is no data directory to reinitialize: this member waits to be cloned",
                )),
                LocalPg::Stopped { .. } if !job_running => Ok((started, move_aside_for_reinit(s))),
                _ => {
                    s.reinit_pending = true;
                    Ok((started, (Reason::ReinitializeStopping, vec![stop])))
                }
            }
        }
    }
}

/// A reinitialize whose stop is done: move the data directory aside; the follower rules
/// clone it again from the leader. Dropped if this member holds the leader key by now.
pub(super) fn reinitialize_after_stop(s: &mut MemberState, cx: &Context) -> Option<Step> {
    if !s.reinit_pending {
        return None;
    }
    let view = cx.view?;
    if view.leader.as_deref() == Some(cx.cfg.name.as_str()) {
        s.reinit_pending = false;
        return None;
    }
    match cx.obs.pg {
        LocalPg::Stopped { .. } => Some(move_aside_for_reinit(s)),
        LocalPg::NoData => {
            s.reinit_pending = false;
            None
        }
        LocalPg::Running(_) | LocalPg::Starting => None,
    }
}

fn move_aside_for_reinit(s: &mut MemberState) -> Step {
    s.reinit_pending = false;
    s.phase = Phase::Cloning;
    s.rewind_needed = false;
    s.prepared_as_replica = false;
    s.wal_missing = false;
    (
        Reason::Reinitializing,
        vec![Action::Pg(PgAction::MoveDataAside { reason: "reinit" })],
    )
}
