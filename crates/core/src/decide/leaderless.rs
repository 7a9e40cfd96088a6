//! Rule group 5: nobody holds the leader key: the switchover's terms, then the election
//! (ARCHITECTURE.md, "Nobody holds the leader key"; `election.rs`).

use super::{Context, Step};
use crate::action::Action;
use crate::action::{DcsAction, JobAction};
use crate::election::{evaluate_candidacy, Candidacy};
use crate::observation::{DcsView, LocalPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};
use crate::switchover::{self, ReplicaSide};
use crate::watchdog;

/// Nobody holds the leader key.
pub(super) fn leaderless(s: &mut MemberState, cx: &Context, view: &DcsView) -> Step {
    let since = *s.leaderless_since.get_or_insert(cx.now);
    s.restart_deadline = None;
    // A replica whose history forked off its upstream's keeps its not-streaming clock
    // (`following_pg`): no leader to come can serve its past either.
    if !cx.obs.forked_from_upstream {
        s.not_streaming_since = None;
        s.not_streaming_position = None;
    }
    s.reclone_pending = false;
    s.wal_missing = false;
    match &cx.obs.pg {
        LocalPg::Running(pg) if !pg.in_recovery && cx.failsafe_ok => {
            // A failsafe leader whose lease expired while the DCS was away: nobody else may
            // race (each member promised, or is outside the topology), so take the key back.
            // If another member got it first, the next cycle sees it and rule 1 demotes.
            s.phase = Phase::Leader;
            (
                Reason::FailsafeRetakingLeaderKey,
                vec![Action::Dcs(DcsAction::AcquireLeader)],
            )
        }
        LocalPg::Running(pg) if pg.in_recovery => {
            if let Some(step) = watchdog::refuse_to_race(s, cx.obs) {
                return step;
            }
            match switchover::replica_side(cx.cfg, view, cx.now - since, cx.obs.unix_now_ms) {
                ReplicaSide::FormerLeader => {
                    s.phase = Phase::Replica;
                    return (Reason::FormerLeaderStandsAside, vec![]);
                }
                ReplicaSide::StandAside { candidate } => {
                    s.phase = Phase::Replica;
                    return (Reason::StandingAside { candidate }, vec![]);
                }
                ReplicaSide::RaceNow => {
                    // In synchronous mode the requested candidate still has to be a member
                    // that holds every acknowledged commit, and no named member may be ahead.
                    let allowed = if cx.cfg.synchronous.enabled() {
                        let candidacy = evaluate_candidacy(
                            cx.cfg,
                            pg,
                            view,
                            &cx.obs.peers,
                            cx.now - since,
                            cx.no_leader_read_for,
                            cx.promise_left,
                            cx.obs.unix_now_ms,
                        );
                        matches!(candidacy, Candidacy::Eligible { .. })
                    } else {
                        // The failsafe rules hold for a requested candidate too.
                        cx.promise_left.is_none()
                            && !(cx.cfg.failsafe_mode
                                && view
                                    .failsafe
                                    .as_ref()
                                    .is_some_and(|k| !k.contains(&cx.cfg.name)))
                    };
                    if allowed && !cx.cfg.nofailover {
                        s.phase = Phase::Candidate;
                        return (
                            Reason::SwitchoverCandidate,
                            vec![Action::Dcs(DcsAction::AcquireLeader)],
                        );
                    }
                }
                ReplicaSide::Ordinary => {}
            }
            let candidacy = evaluate_candidacy(
                cx.cfg,
                pg,
                view,
                &cx.obs.peers,
                cx.now - since,
                cx.no_leader_read_for,
                cx.promise_left,
                cx.obs.unix_now_ms,
            );
            match candidacy {
                Candidacy::Eligible {
                    lsn,
                    lag,
                    despite_lag,
                } => {
                    s.phase = Phase::Candidate;
                    (
                        Reason::RacingForLeader {
                            lsn,
                            lag,
                            despite_lag,
                        },
                        vec![Action::Dcs(DcsAction::AcquireLeader)],
                    )
                }
                other => {
                    s.phase = Phase::Replica;
                    (Reason::NotRacing(other), vec![])
                }
            }
        }
        // A running primary without the key was demoted by rule 1 (or is bootstrapping).
        LocalPg::Running(_) => (Reason::WaitingForPostgres, vec![]),
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        LocalPg::Stopped { .. } => {
            s.phase = Phase::Replica;
            (
                Reason::StartingReplica { upstream: None },
                vec![Action::Job(JobAction::StartReplica { upstream: None })],
            )
        }
        LocalPg::NoData => {
            s.phase = Phase::Init;
            (Reason::WaitingForLeaderToClone, vec![])
        }
    }
}
