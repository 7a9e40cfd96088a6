//! Rule group 3, in a standby cluster (`standby_cluster`): the leader key names this member,
//! which stays a replica and follows the remote primary (the standby leader). The other
//! members follow it as they follow any leader (`follower`); the election is the ordinary one
//! (`leaderless`). A standby cluster takes no writes, so nothing here needs a drain, a rewind
//! or the synchronous key (ARCHITECTURE.md, "Standby cluster").

use super::leader::slot_members;
use super::{Context, Step};
use crate::action::Action;
use crate::action::{DcsAction, JobAction, PgAction};
use crate::observation::{DcsView, LocalPg, RunningPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};
use crate::switchover::{self, LeaderSide};

/// The standby leader's rules; `None` where the leader's ordinary rules apply: a PostgreSQL
/// that runs as a primary, or a data directory that last ran as one, stays the cluster's
/// primary (adding `standby_cluster` to a running cluster does not demote it), and a member
/// without data gives the key up.
pub(super) fn standby_leader(s: &mut MemberState, cx: &Context, view: &DcsView) -> Option<Step> {
    match &cx.obs.pg {
        LocalPg::Running(pg) if pg.in_recovery => Some(following_remote(s, cx, view, pg)),
        LocalPg::Running(_) => None,
        LocalPg::Stopped {
            was_primary: false, ..
        } => {
            s.phase = Phase::StandbyLeader;
            s.restart_deadline = None;
            Some((
                Reason::StartingStandbyLeader,
                vec![Action::Job(JobAction::StartReplica { upstream: None })],
            ))
        }
        LocalPg::Starting if s.phase == Phase::StandbyLeader => {
            Some((Reason::WaitingForPostgres, vec![]))
        }
        LocalPg::Stopped { .. } | LocalPg::Starting | LocalPg::NoData => None,
    }
}

/// A running standby leader: point the replica at the remote primary (`upstream: None` is the
/// remote one in a standby cluster; once after the agent starts, as it cannot tell), publish its position, keep the members' slots, and carry
/// out a switchover by giving the key to the candidate.
fn following_remote(s: &mut MemberState, cx: &Context, view: &DcsView, pg: &RunningPg) -> Step {
    s.phase = Phase::StandbyLeader;
    s.restart_deadline = None;
    s.promoted_from = None;
    let mut actions = vec![Action::Dcs(DcsAction::WriteStatus { optime: pg.lsn })];
    if cx.cfg.use_slots {
        let members = slot_members(s, cx.cfg, view, cx.now);
        actions.push(Action::Pg(PgAction::SyncSlots { members }));
    }
    let mut reason = Reason::StandbyLeaderFollowingRemote;
    if let Some(req) = &view.failover {
        match switchover::leader_side(cx.cfg, view, pg, req, cx.obs.unix_now_ms) {
            LeaderSide::HandOver { to } => {
                // The candidate follows us: once the key is free it races (the request
                // names it) and points itself at the remote primary; we follow it.
                s.phase = Phase::Replica;
                return (
                    Reason::StandbyLeaderHandingOver { to },
                    vec![Action::Dcs(DcsAction::ReleaseLeader)],
                );
            }
            LeaderSide::Scheduled { in_ms } => reason = Reason::SwitchoverScheduled { in_ms },
            LeaderSide::Refuse(why) => {
                reason = Reason::SwitchoverRefused(why);
                actions.push(Action::Dcs(DcsAction::ClearFailover));
            }
            LeaderSide::Done => actions.push(Action::Dcs(DcsAction::ClearFailover)),
        }
    }
    if !cx.obs.follows_remote_primary {
        actions.push(Action::Pg(PgAction::Repoint { upstream: None }));
        return (Reason::StandbyLeaderRepointing, actions);
    }
    (reason, actions)
}
