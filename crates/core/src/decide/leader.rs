//! Rule group 3: the leader key names this member: promote, restart the primary in place,
//! give the key up, hand over for a switchover, and the leader's duties each cycle (status,
//! history, slots, declared publications and subscriptions, failsafe key, synchronous
//! replication) (ARCHITECTURE.md, "The leader key names this member").

use super::standby::standby_leader;
use super::{Context, Step};
use crate::action::{Action, StopMode};
use crate::action::{DcsAction, JobAction, PgAction};
use crate::failsafe;
use crate::observation::{DcsView, JobKind, JobView, LocalPg, RunningPg};
use crate::reason::Reason;
use crate::state::{MemberState, Phase};
use crate::switchover::{self, Drain, LeaderSide};
use crate::sync;
use crate::watchdog;
use crate::{HaConfig, Millis};

/// While an operation runs, a leader still publishes its position.
pub(super) fn leader_duties_if_any(s: &mut MemberState, cx: &Context) -> Vec<Action> {
    match (cx.view, cx.obs.pg.running()) {
        (Some(view), Some(pg))
            if cx.leader_now && !pg.in_recovery && view.leader.as_deref() == Some(&cx.cfg.name) =>
        {
            leader_duties(s, cx.cfg, view, pg, cx.now)
        }
        _ => vec![],
    }
}

pub(super) fn leader_duties(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    now: Millis,
) -> Vec<Action> {
    let mut actions = vec![Action::Dcs(DcsAction::WriteStatus { optime: pg.lsn })];
    // The key lacks our promotion, or records a timeline as new as ours: it describes
    // another branch (PostgreSQL reuses a timeline number when the leader that used it was
    // lost with its history), and would keep every replica of ours from racing. The agent
    // writes the key from our history file either way.
    let key_behind = view.last_history_timeline() < pg.timeline - 1;
    let key_from_another_branch = view.last_history_timeline() >= pg.timeline;
    if pg.timeline > 1 && (key_behind || key_from_another_branch) {
        let (timeline, lsn) = s
            .promoted_from
            .filter(|(t, _)| *t < pg.timeline)
            .unwrap_or((pg.timeline - 1, 0));
        actions.push(Action::Dcs(DcsAction::AppendHistory { timeline, lsn }));
    }
    if cfg.use_slots {
        let members = slot_members(s, cfg, view, now);
        actions.push(Action::Pg(PgAction::SyncSlots { members }));
    }
    // Declared publications and subscriptions: kept by whoever leads, so that a new leader
    // takes the duty over (outside maintenance mode, which leaves PostgreSQL alone).
    if cfg.logical_declared && !cfg.paused {
        actions.push(Action::Pg(PgAction::ApplyLogical));
    }
    if cfg.failsafe_mode {
        let members = failsafe::topology(view, &cfg.name);
        if view.failsafe.as_ref() != Some(&members) {
            actions.push(Action::Dcs(DcsAction::WriteFailsafe { members }));
        }
    }
    actions
}

/// The members the leader keeps a physical slot for: each member that streams from it (not
/// those cascading from a replica that is a member: that replica keeps their slots), and each
/// such member whose key disappeared less than `member_slots_ttl` ago (its replica may come
/// back after a short absence and stream from where it stopped).
pub(super) fn slot_members(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    now: Millis,
) -> Vec<String> {
    let present: Vec<String> = view
        .members
        .iter()
        .filter(|(name, m)| {
            *name != &cfg.name
                && !m
                    .replicatefrom
                    .as_deref()
                    .is_some_and(|up| up != cfg.name && view.members.contains_key(up))
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in &present {
        s.slot_members_seen.insert(name.clone(), now);
    }
    let ttl = cfg.member_slots_ttl_ms;
    s.slot_members_seen.retain(|name, seen| {
        name != &cfg.name
            && (present.contains(name)
                || (!view.members.contains_key(name) && now.saturating_sub(*seen) < ttl))
    });
    // A BTreeMap: sorted, each name once.
    s.slot_members_seen.keys().cloned().collect()
}

/// The leader key names us.
pub(super) fn holding_leader_key(s: &mut MemberState, cx: &Context, view: &DcsView) -> Step {
    s.leaderless_since = None;
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.rewound_for = None;
    s.reclone_pending = false;
    s.wal_missing = false;
    if !cx.lease_ok {
        // Not entitled to a primary (the observation already asked etcd how long the lease
        // lives): once PostgreSQL is certainly not a primary, give the key up (delete iff it
        // names us) rather than hold it, unrenewed, while nobody runs a primary.
        if cx.obs.pg.certainly_not_primary() && !cx.leader_now {
            s.phase = Phase::Replica;
            s.restart_deadline = None;
            return (
                Reason::ReleasingKeyWithoutLease,
                vec![Action::Dcs(DcsAction::ReleaseLeader)],
            );
        }
        return (Reason::LeaderKeyWithoutLease, vec![]);
    }
    if cx.cfg.standby_cluster {
        if let Some(step) = standby_leader(s, cx, view) {
            return step;
        }
    }
    if let Some(step) = watchdog::refuse_to_lead(s, cx.obs) {
        return step;
    }
    match &cx.obs.pg {
        LocalPg::Running(pg) if !pg.in_recovery => {
            s.phase = Phase::Leader;
            s.restart_deadline = None;
            if pg.timeline > 1 && view.last_history_timeline() >= pg.timeline - 1 {
                s.promoted_from = None;
            }
            let mut reason = Reason::LeaderHealthy;
            let mut actions = leader_duties(s, cx.cfg, view, pg, cx.now);
            // Forget a drain whose request is gone, or is no longer due (scheduled later,
            // refused, done): each request's drain starts when it becomes due.
            let draining_for = s.drain_started.map(|(revision, _)| revision);
            if draining_for.is_some()
                && !view.failover.as_ref().is_some_and(|req| {
                    Some(req.revision) == draining_for
                        && matches!(
                            switchover::leader_side(cx.cfg, view, pg, req, cx.obs.unix_now_ms),
                            LeaderSide::HandOver { .. }
                        )
                })
            {
                s.drain_started = None;
            }
            if let Some(req) = &view.failover {
                match switchover::leader_side(cx.cfg, view, pg, req, cx.obs.unix_now_ms) {
                    LeaderSide::HandOver { to } if !failsafe::names(cx.cfg, view, &to) => {
                        // The key is written by this cycle's duties (the candidate is a
                        // member, so the topology names it); hand over once it is read back.
                        reason = Reason::SwitchoverWaitingForFailsafeKey { to };
                    }
                    LeaderSide::HandOver { to } => {
                        let drained =
                            switchover::drain(cx.cfg, view, req, &mut s.drain_started, cx.now);
                        let handing_over = match drained {
                            // The routers pause their write traffic: wait (this cycle's
                            // duties still run).
                            Drain::Waiting {
                                not_paused,
                                remaining_ms,
                            } => {
                                reason = Reason::SwitchoverDraining {
                                    to,
                                    waiting_for: not_paused,
                                    remaining_ms,
                                };
                                None
                            }
                            Drain::TimedOut { not_paused } => {
                                Some(Reason::HandingOverUnpaused { to, not_paused })
                            }
                            Drain::Paused => Some(Reason::HandingOver { to }),
                        };
                        if let Some(reason) = handing_over {
                            s.phase = Phase::HandingOver;
                            s.drain_started = None;
                            let stop = Action::Job(JobAction::Stop {
                                mode: StopMode::CheckpointThenFast,
                            });
                            return (
                                reason,
                                vec![Action::Dcs(DcsAction::WriteStatus { optime: pg.lsn }), stop],
                            );
                        }
                    }
                    LeaderSide::Scheduled { in_ms } => {
                        reason = Reason::SwitchoverScheduled { in_ms }
                    }
                    LeaderSide::Refuse(why) => {
                        reason = Reason::SwitchoverRefused(why);
                        actions.push(Action::Dcs(DcsAction::ClearFailover));
                    }
                    LeaderSide::Done => actions.push(Action::Dcs(DcsAction::ClearFailover)),
                }
            }
            actions.extend(sync::manage(
                s,
                cx.cfg,
                view,
                pg,
                cx.obs.configured_sync.as_ref(),
            ));
            (reason, actions)
        }
        LocalPg::Running(_) if cx.promise_left.is_some() => {
            // We promised a failsafe leader that may still run its primary: no promotion
            // before the promise ends (the race that gave us the key crossed the promise).
            let remaining_ms = cx.promise_left.unwrap_or(0);
            (Reason::FailsafePromised { remaining_ms }, vec![])
        }
        LocalPg::Running(pg) => {
            s.phase = Phase::Promoting;
            s.promoted_from = Some((pg.timeline, pg.lsn));
            let mut actions = Vec::new();
            if cx.cfg.synchronous.enabled() {
                // First make the sync key ours and empty, so that no member it named before
                // can be promoted without the commits we are about to acknowledge.
                let key_empty_and_ours = sync::key_is_ours(cx.cfg, view)
                    && view.sync.as_ref().is_some_and(|k| k.members.is_empty());
                if !key_empty_and_ours {
                    return (
                        Reason::ClaimingSyncKey,
                        vec![Action::Dcs(DcsAction::WriteSync {
                            members: Vec::new(),
                            quorum: None,
                        })],
                    );
                }
                // Commits wait for a standby from the first one on; the leader narrows the
                // names down once standbys connect.
                s.sync_changed_at = None;
                let names = Some(crate::SyncStandbyNames::Wildcard);
                actions.push(Action::Pg(PgAction::SetSyncStandbyNames { names }));
            }
            let through = view.newest_timeline_with(&cx.obs.peers);
            if through > pg.timeline {
                actions.push(Action::Pg(PgAction::ReserveTimelines {
                    after: pg.timeline,
                    through,
                    ended: view.history.iter().map(|(&t, &lsn)| (t, lsn)).collect(),
                }));
            }
            actions.push(Action::Job(JobAction::Promote));
            (
                Reason::Promoting {
                    timeline: pg.timeline,
                    lsn: pg.lsn,
                },
                actions,
            )
        }
        LocalPg::Stopped {
            was_primary: true, ..
        }
        | LocalPg::Starting
            if matches!(
                s.phase,
                Phase::Leader | Phase::RestartingPrimary | Phase::Init | Phase::Demoting
            ) =>
        {
            // A start of ours that failed is not retried while holding the key: a healthy
            // replica takes over sooner than another attempt would (promise 4's bound is
            // shorter than `primary_restart_timeout`), and this member follows it (rewound
            // if it must be).
            if let (
                Phase::RestartingPrimary,
                JobView::Failed {
                    kind: JobKind::Start,
                    error,
                },
            ) = (s.phase, &cx.obs.job)
            {
                s.phase = Phase::Replica;
                s.restart_deadline = None;
                return (
                    Reason::PrimaryStartFailed {
                        error: error.clone(),
                    },
                    vec![Action::Dcs(DcsAction::ReleaseLeader)],
                );
            }
            let deadline = *s
                .restart_deadline
                .get_or_insert(cx.now + cx.cfg.primary_restart_timeout_ms);
            if cx.now >= deadline {
                s.phase = Phase::Replica;
                s.restart_deadline = None;
                let mut actions = vec![Action::Dcs(DcsAction::ReleaseLeader)];
                if cx.obs.pg == LocalPg::Starting {
                    actions.push(Action::Job(JobAction::Stop {
                        mode: StopMode::Immediate,
                    }));
                }
                return (Reason::GaveUpRestartingPrimary, actions);
            }
            s.phase = Phase::RestartingPrimary;
            let remaining_ms = deadline - cx.now;
            if cx.obs.pg == LocalPg::Starting {
                return (Reason::RestartingPrimary { remaining_ms }, vec![]);
            }
            let mut actions = Vec::new();
            if cx.cfg.synchronous.enabled() && cx.obs.configured_sync.is_none() {
                // A restarted agent does not know the names in force: use the key's, so
                // that what the key promises stays true.
                s.sync_changed_at = None;
                let names = sync::names_from_key(cx.cfg, view);
                actions.push(Action::Pg(PgAction::SetSyncStandbyNames { names }));
            }
            actions.push(Action::Job(JobAction::StartPrimary));
            (Reason::RestartingPrimary { remaining_ms }, actions)
        }
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        LocalPg::Stopped { .. } | LocalPg::NoData => {
            s.phase = Phase::Replica;
            s.restart_deadline = None;
            (
                Reason::ReleasingKeyWithoutPrimaryData,
                vec![Action::Dcs(DcsAction::ReleaseLeader)],
            )
        }
    }
}
