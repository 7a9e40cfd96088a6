//! Rule group 4: another member holds the leader key: follow it (repoint, diagnose a replica
//! that does not stream, rewind, re-clone, clone) (ARCHITECTURE.md, "Another member holds
//! the leader key").

use super::{Context, Step};
use crate::action::{Action, StopMode};
use crate::action::{JobAction, PgAction};
use crate::observation::{DcsView, JobKind, JobView, LocalPg, RunningPg};
use crate::reason::{MissingWal, Reason};
use crate::state::{MemberState, Phase};
use crate::HaConfig;

/// A replica that is still starting (it may need WAL from its upstream before it accepts
/// connections) follows a leader change at once: otherwise it would wait for WAL from an
/// upstream that is gone until the start times out (found by the chaos suite).
pub(super) fn repoint_while_starting(
    s: &MemberState,
    cx: &Context,
    kind: JobKind,
) -> Option<Action> {
    if kind != JobKind::Start || s.phase != Phase::Replica {
        return None;
    }
    let view = cx.view?;
    let leader = view.leader.as_deref().filter(|l| *l != cx.cfg.name)?;
    let upstream = upstream_for(cx.cfg, view, leader);
    (cx.obs.configured_upstream.as_deref() != Some(upstream.as_str())).then_some(Action::Pg(
        PgAction::Repoint {
            upstream: Some(upstream),
        },
    ))
}

/// A replica whose start waits for WAL its upstream has removed never becomes consistent:
/// PostgreSQL asks for the segment again and again and the start never ends (found by the
/// chaos suite's `replica-away`: a replica crashed, the leader wrote past its slot's
/// `max_slot_wal_keep_size`). Once it has waited for the not-streaming timeout, heal it as a
/// running replica would be healed (archive, `sync` key, `reclone_interval` respected); a start
/// still running is aborted (an immediate stop of a replica loses nothing).
pub(super) fn missing_wal_while_starting(s: &mut MemberState, cx: &Context) -> Option<Step> {
    let job_allows = match cx.obs.job {
        JobView::Running(kind) => kind == JobKind::Start,
        JobView::Idle | JobView::Failed { .. } | JobView::SourceUnreachable { .. } => true,
    };
    let as_primary = matches!(
        s.phase,
        Phase::Leader
            | Phase::Promoting
            | Phase::RestartingPrimary
            | Phase::Demoting
            | Phase::HandingOver
    );
    if cx.obs.pg != LocalPg::Starting || !job_allows || as_primary {
        return None;
    }
    let view = cx.view?;
    let leader = view.leader.as_deref().filter(|l| *l != cx.cfg.name)?;
    let Some(segment) = cx.obs.missing_wal_segment.clone() else {
        if !cx.obs.forked_from_upstream {
            s.not_streaming_since = None;
        }
        return None;
    };
    let since = *s.not_streaming_since.get_or_insert(cx.now);
    if cx.now - since < cx.cfg.not_streaming_timeout_ms {
        return None;
    }
    s.wal_missing = true;
    let (reason, mut actions) =
        heal_missing_wal(s, cx, view, leader, MissingWal::SegmentRemoved { segment });
    if matches!(cx.obs.job, JobView::Running(_)) {
        for action in &mut actions {
            if let Action::Job(JobAction::Stop { mode }) = action {
                *mode = StopMode::Immediate;
            }
        }
    }
    Some((reason, actions))
}

/// A replica still starting whose data forked off its upstream's history before its
/// recovery point (a member rewound against a leader that was lost before the member became
/// consistent; the new leader's timeline branched off earlier) never becomes consistent:
/// PostgreSQL keeps asking for WAL the upstream never had, and only its log says why
/// (`Observation::forked_from_upstream`; found by the real-runtime simulation, the replica
/// waited for the start's two-minute timeout). Once that has been logged for the
/// not-streaming timeout (at once when it was found forked before and not rewound since):
/// stop it (immediately when a start job still waits) and rewind it.
pub(super) fn forked_while_starting(s: &mut MemberState, cx: &Context) -> Option<Step> {
    let job_allows = match cx.obs.job {
        JobView::Running(kind) => kind == JobKind::Start,
        JobView::Idle | JobView::Failed { .. } | JobView::SourceUnreachable { .. } => true,
    };
    if cx.obs.pg != LocalPg::Starting || !job_allows || !cx.obs.forked_from_upstream {
        return None;
    }
    if !matches!(s.phase, Phase::Replica | Phase::Init) {
        return None;
    }
    let view = cx.view?;
    let leader = view.leader.as_deref().filter(|l| *l != cx.cfg.name)?;
    // Already found forked and not rewound since (it was started again while there was no
    // leader to rewind from): no second wait.
    if !s.rewind_needed {
        let since = *s.not_streaming_since.get_or_insert(cx.now);
        if cx.now - since < cx.cfg.not_streaming_timeout_ms {
            return None;
        }
    }
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.rewind_needed = true;
    s.phase = Phase::Replica;
    let mode = if matches!(cx.obs.job, JobView::Running(_)) {
        StopMode::Immediate
    } else {
        StopMode::Fast
    };
    Some((
        Reason::ForkedWhileStarting {
            leader: leader.to_string(),
        },
        vec![Action::Job(JobAction::Stop { mode })],
    ))
}

/// Following the leader, plus the slots a running replica keeps for its cascaded members.
pub(super) fn following(s: &mut MemberState, cx: &Context, view: &DcsView, leader: &str) -> Step {
    let (reason, mut actions) = following_pg(s, cx, view, leader);
    let stopping = actions
        .iter()
        .any(|a| matches!(a, Action::Job(JobAction::Stop { .. })));
    if matches!(cx.obs.pg, LocalPg::Running(_)) && !stopping {
        actions.extend(cascade_slots(cx.cfg, view));
    }
    (reason, actions)
}

/// Another member holds the leader key: follow it.
pub(super) fn following_pg(
    s: &mut MemberState,
    cx: &Context,
    view: &DcsView,
    leader: &str,
) -> Step {
    s.leaderless_since = None;
    s.restart_deadline = None;
    s.promoted_from = None;
    let leader_running = view
        .members
        .get(leader)
        .is_some_and(|m| m.state.is_running() && (m.is_primary || m.is_standby_leader));
    let upstream = upstream_for(cx.cfg, view, leader);

    if let JobView::SourceUnreachable {
        kind: JobKind::Rewind,
        error,
    } = &cx.obs.job
    {
        if matches!(cx.obs.pg, LocalPg::Stopped { .. }) && s.phase == Phase::Rewinding {
            // Nothing was changed: the data directory still needs the rewind, which runs
            // again as soon as the leader is seen running (never a move aside for this).
            s.phase = Phase::Replica;
            s.rewind_needed = true;
            s.prepared_as_replica = false;
            s.rewound_for = None;
            if !leader_running {
                return (
                    Reason::RewindSourceUnreachable {
                        from: leader.to_string(),
                        error: error.clone(),
                    },
                    vec![],
                );
            }
        }
    }
    if let JobView::Failed {
        kind: JobKind::Rewind,
        error,
    } = &cx.obs.job
    {
        if matches!(cx.obs.pg, LocalPg::Stopped { .. }) {
            if named_synchronous(cx.cfg, view) {
                return (Reason::KeepingSynchronousData, vec![]);
            }
            s.phase = Phase::Cloning;
            s.prepared_as_replica = false;
            return (
                Reason::RewindFailed(error.clone()),
                vec![Action::Pg(PgAction::MoveDataAside {
                    reason: "rewind-failed",
                })],
            );
        }
    }
    match &cx.obs.pg {
        LocalPg::Running(pg) => {
            // (A running primary was handled by rule 1.)
            s.phase = Phase::Replica;
            s.prepared_as_replica = false;
            if cx.obs.configured_upstream.as_deref() != Some(upstream.as_str()) {
                // A replica whose log says its history forked off its upstream's keeps its
                // not-streaming clock across the repoint (and while the leader is not running,
                // or there is none): the next leader's timeline branches off the same past,
                // and leaders changing faster than the timeout would keep it from ever being
                // rewound (found by the real-runtime simulation: four switchovers in 18 s
                // left a forked replica 27 s without streaming).
                if !cx.obs.forked_from_upstream {
                    s.not_streaming_since = None;
                }
                return (
                    Reason::Repointing {
                        upstream: upstream.clone(),
                    },
                    vec![Action::Pg(PgAction::Repoint {
                        upstream: Some(upstream),
                    })],
                );
            }
            // Streaming on an older timeline than the leader's means the WAL diverged (or the
            // switch has not happened yet): it does not count as following.
            let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
            let on_leader_timeline = leader_timeline.is_none_or(|tl| pg.timeline >= tl);
            let following = pg.streaming && on_leader_timeline;
            if following || !leader_running {
                if following || !cx.obs.forked_from_upstream {
                    s.not_streaming_since = None;
                    s.not_streaming_position = None;
                }
                if following {
                    s.rewound_for = None;
                    s.wal_missing = false;
                    if cx.obs.slot_copies_ready && may_restart(cx, view) {
                        return (
                            Reason::InstallingSlotCopies,
                            vec![Action::Job(JobAction::InstallSlotCopies)],
                        );
                    }
                }
                return (
                    Reason::FollowingLeader {
                        leader: leader.to_string(),
                        upstream,
                    },
                    vec![],
                );
            }
            let since = *s.not_streaming_since.get_or_insert(cx.now);
            match s.not_streaming_position {
                Some((lsn, _)) if lsn == pg.lsn => {}
                _ => s.not_streaming_position = Some((pg.lsn, cx.now)),
            }
            if cx.now - since < cx.cfg.not_streaming_timeout_ms {
                return (
                    Reason::FollowingLeader {
                        leader: leader.to_string(),
                        upstream,
                    },
                    vec![],
                );
            }
            // Not streaming for the timeout: find out why before doing anything.
            if let Some(missing) = missing_wal(s, cx, view, pg, leader, &upstream) {
                s.wal_missing = true;
                return heal_missing_wal(s, cx, view, leader, missing);
            }
            if s.rewound_for == Some((leader.to_string(), leader_timeline)) {
                // A rewind against this leader already ran and did not make it stream: doing
                // it again cannot help. Wait (the missing-WAL diagnosis above keeps looking).
                return (
                    Reason::NotStreamingAfterRewind {
                        leader: leader.to_string(),
                    },
                    vec![],
                );
            }
            s.not_streaming_since = None;
            s.not_streaming_position = None;
            s.rewind_needed = true;
            (
                Reason::NotStreaming {
                    since_ms: cx.now - since,
                },
                vec![Action::Job(JobAction::Stop {
                    mode: StopMode::Fast,
                })],
            )
        }
        LocalPg::Starting => {
            if let Some(step) = missing_wal_while_starting(s, cx) {
                return step;
            }
            if let Some(step) = forked_while_starting(s, cx) {
                return step;
            }
            // A replica still starting (it may wait for WAL from its upstream before it
            // answers) that this agent did not start, or not towards this leader (the agent
            // restarted meanwhile): point it at the leader now, or it waits for an upstream
            // that may be gone (found by the real-runtime simulation). The start of this
            // agent's own job is covered by `repoint_while_starting`.
            if cx.obs.configured_upstream.as_deref() != Some(upstream.as_str()) {
                return (
                    Reason::Repointing {
                        upstream: upstream.clone(),
                    },
                    vec![Action::Pg(PgAction::Repoint {
                        upstream: Some(upstream),
                    })],
                );
            }
            (Reason::WaitingForPostgres, vec![])
        }
        LocalPg::Stopped { .. } if s.reclone_pending => {
            s.reclone_pending = false;
            // Checked again: the sync key may name us by now, or the clone source be gone
            // (then it starts again as it is and the diagnosis runs once more).
            if named_synchronous(cx.cfg, view) || !leader_running {
                s.phase = Phase::Replica;
                return (
                    Reason::StartingReplica {
                        upstream: Some(upstream.clone()),
                    },
                    vec![Action::Job(JobAction::StartReplica {
                        upstream: Some(upstream),
                    })],
                );
            }
            s.phase = Phase::Cloning;
            s.rewind_needed = false;
            s.prepared_as_replica = false;
            s.last_reclone_at = Some(cx.now);
            (
                Reason::MovingAsideForMissingWal,
                vec![Action::Pg(PgAction::MoveDataAside {
                    reason: "wal-missing",
                })],
            )
        }
        LocalPg::Stopped { was_primary, .. }
            if (*was_primary && !s.prepared_as_replica) || s.rewind_needed =>
        {
            if !leader_running {
                return (
                    Reason::CloneSourceNotRunning {
                        leader: leader.to_string(),
                    },
                    vec![],
                );
            }
            if cx.cfg.use_pg_rewind {
                s.phase = Phase::Rewinding;
                s.rewind_needed = false;
                s.prepared_as_replica = true;
                let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
                s.rewound_for = Some((leader.to_string(), leader_timeline));
                (
                    Reason::Rewinding {
                        from: leader.to_string(),
                    },
                    vec![Action::Job(JobAction::Rewind {
                        from: leader.to_string(),
                    })],
                )
            } else if named_synchronous(cx.cfg, view) {
                (Reason::KeepingSynchronousData, vec![])
            } else {
                s.phase = Phase::Cloning;
                s.rewind_needed = false;
                (
                    Reason::DivergedWithoutRewind,
                    vec![Action::Pg(PgAction::MoveDataAside { reason: "diverged" })],
                )
            }
        }
        LocalPg::Stopped { .. } => {
            s.phase = Phase::Replica;
            (
                Reason::StartingReplica {
                    upstream: Some(upstream.clone()),
                },
                vec![Action::Job(JobAction::StartReplica {
                    upstream: Some(upstream),
                })],
            )
        }
        LocalPg::NoData => {
            let from = match clonefrom_source(cx.cfg, view, leader) {
                Some(replica) => replica,
                None if leader_running => leader.to_string(),
                None => {
                    return (
                        Reason::CloneSourceNotRunning {
                            leader: leader.to_string(),
                        },
                        vec![],
                    );
                }
            };
            s.phase = Phase::Cloning;
            s.rewind_needed = false;
            s.prepared_as_replica = true;
            // A new copy has every WAL it needs.
            s.wal_missing = false;
            (
                Reason::Cloning { from: from.clone() },
                vec![Action::Job(JobAction::Clone { from })],
            )
        }
    }
}

/// Whether the WAL this replica needs is gone from its upstream (called once it has not
/// streamed for the timeout): its PostgreSQL logged that the upstream removed the segment it
/// asked for, or (streaming from the leader) its position has not moved for the timeout and
/// is older than the oldest WAL the leader still holds.
/// A streaming replica may restart now (to install slot copies): no operation runs, and no
/// switchover is under way (its candidate must be streaming when the leader hands over).
fn may_restart(cx: &Context, view: &DcsView) -> bool {
    matches!(
        cx.obs.job,
        JobView::Idle | JobView::Failed { .. } | JobView::SourceUnreachable { .. }
    ) && view.failover.is_none()
}

pub(super) fn missing_wal(
    s: &MemberState,
    cx: &Context,
    view: &DcsView,
    pg: &RunningPg,
    leader: &str,
    upstream: &str,
) -> Option<MissingWal> {
    if let Some(segment) = &cx.obs.missing_wal_segment {
        return Some(MissingWal::SegmentRemoved {
            segment: segment.clone(),
        });
    }
    let oldest = view.leader_oldest_wal?;
    let (lsn, still_since) = s.not_streaming_position?;
    let stalled = cx.now.saturating_sub(still_since) >= cx.cfg.not_streaming_timeout_ms;
    (upstream == leader && stalled && lsn == pg.lsn && pg.lsn < oldest)
        .then_some(MissingWal::BehindLeaderWal { lsn, oldest })
}

/// The WAL this replica needs is gone: re-clone it (stop now, then move the data directory
/// aside and clone), unless the archive may still provide the WAL, the `sync` key names it,
/// automatic re-clones are off, or it was re-cloned automatically less than
/// `reclone_interval` ago. Waiting never stops PostgreSQL.
pub(super) fn heal_missing_wal(
    s: &mut MemberState,
    cx: &Context,
    view: &DcsView,
    leader: &str,
    missing: MissingWal,
) -> Step {
    if cx.cfg.archive_recovery {
        return (Reason::MissingWalWaitingForArchive(missing), vec![]);
    }
    if named_synchronous(cx.cfg, view) {
        return (Reason::MissingWalKeepingSynchronousData(missing), vec![]);
    }
    if !cx.cfg.auto_reclone {
        return (Reason::MissingWalAutoRecloneOff(missing), vec![]);
    }
    if let Some(at) = s.last_reclone_at {
        let next = at + cx.cfg.reclone_interval_ms;
        if cx.now < next {
            return (
                Reason::MissingWalRecloneLater {
                    missing,
                    in_ms: next - cx.now,
                },
                vec![],
            );
        }
    }
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.reclone_pending = true;
    let from = clonefrom_source(cx.cfg, view, leader).unwrap_or_else(|| leader.to_string());
    (
        Reason::RecloningForMissingWal { missing, from },
        vec![Action::Job(JobAction::Stop {
            mode: StopMode::Fast,
        })],
    )
}

/// A new replica takes its base backup from a running replica tagged `clonefrom` on the
/// leader's timeline (the most advanced; ties by name), sparing the leader the copy; from
/// the leader when there is none (Patroni's `clonefrom`).
pub(super) fn clonefrom_source(cfg: &HaConfig, view: &DcsView, leader: &str) -> Option<String> {
    let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
    view.members
        .iter()
        .filter(|(name, m)| {
            name.as_str() != cfg.name
                && name.as_str() != leader
                && m.clonefrom
                && m.state.is_running()
                && !m.is_primary
                && m.lsn.is_some()
                && (leader_timeline.is_none() || m.timeline == leader_timeline)
        })
        .max_by(|(an, a), (bn, b)| a.lsn.cmp(&b.lsn).then_with(|| bn.cmp(an)))
        .map(|(name, _)| name.clone())
}

/// Synchronous mode and the `sync` key names us: our data may hold acknowledged commits
/// nobody else has, so it is never moved aside while the key names us (the leader drops a
/// member that does not stream from the key first).
pub(super) fn named_synchronous(cfg: &HaConfig, view: &DcsView) -> bool {
    cfg.synchronous.enabled()
        && view
            .sync
            .as_ref()
            .is_some_and(|k| k.members.contains(&cfg.name))
}

/// A running replica keeps a physical slot for each member that streams from it
/// (`replicatefrom` naming it), and drops the slots of those that stopped doing so.
pub(super) fn cascade_slots(cfg: &HaConfig, view: &DcsView) -> Vec<Action> {
    if !cfg.use_slots {
        return Vec::new();
    }
    let members = view
        .members
        .iter()
        .filter(|(name, m)| {
            *name != &cfg.name && m.replicatefrom.as_deref() == Some(cfg.name.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect();
    vec![Action::Pg(PgAction::SyncSlots { members })]
}

/// The member to stream from: the `replicatefrom` member when it runs as a replica, else the leader.
pub(super) fn upstream_for(cfg: &HaConfig, view: &DcsView, leader: &str) -> String {
    let me = view.members.get(&cfg.name);
    if let Some(from) = me.and_then(|m| m.replicatefrom.as_deref()) {
        let usable = from != cfg.name
            && view
                .members
                .get(from)
                .is_some_and(|m| m.state.is_running() && !m.is_primary);
        if usable {
            return from.to_string();
        }
    }
    leader.to_string()
}
