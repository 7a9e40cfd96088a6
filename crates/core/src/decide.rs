//! [`decide`]: the whole HA decision of one cycle, as a pure function.
//!
//! Rules are checked from the most safety-critical down; the first that applies decides.
//! The transition table in docs/ARCHITECTURE.md follows this file section by section.

use crate::action::{Action, StopMode};
use crate::election::{evaluate_candidacy, Candidacy};
use crate::failsafe;
use crate::observation::{DcsView, Initialize, JobKind, JobView, LocalPg, Observation, RunningPg};
use crate::reason::{MissingWal, Reason};
use crate::state::{MemberState, Phase, PublishedState};
use crate::switchover::{self, LeaderSide, ReplicaSide};
use crate::sync;
use crate::watchdog;
use crate::{HaConfig, Millis};

/// The output of one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The member's memory for the next cycle.
    pub state: MemberState,
    /// To carry out in order. DCS writes come before PostgreSQL operations.
    pub actions: Vec<Action>,
    pub reason: Reason,
    /// The `state` word to publish in the member document.
    pub published: PublishedState,
    /// Observe and decide again no later than this (earlier on any DCS or PostgreSQL event).
    pub next_wake: Millis,
}

/// Facts derived once from the observation.
struct Facts<'a> {
    now: Millis,
    /// Our lease is certainly alive for longer than the demotion margin.
    lease_ok: bool,
    /// We may run a writable primary right now.
    leader_now: bool,
    /// Failsafe mode: the leader's primary is covered by an acknowledged failsafe round
    /// (and no other member holds the leader key).
    failsafe_ok: bool,
    /// How long a promise to a failsafe leader still holds.
    promise_left: Option<Millis>,
    view: Option<&'a DcsView>,
}

/// Decide what to do in this cycle. Pure: same inputs, same decision.
pub fn decide(prev: &MemberState, obs: &Observation, cfg: &HaConfig) -> Decision {
    let now = obs.now;
    let lease_ok = obs
        .lease_valid_until
        .is_some_and(|until| now + cfg.demote_margin_ms < until);
    let view = obs.dcs.as_ref();
    let key_is_mine = match view {
        Some(v) => v.leader.as_deref() == Some(cfg.name.as_str()),
        // Unreachable DCS: our key is attached to our lease, so while the lease is alive the
        // key is ours if we were leader.
        None => matches!(
            prev.phase,
            Phase::Leader | Phase::RestartingPrimary | Phase::Promoting
        ),
    };
    // Failsafe: the right of an acknowledged round, for the leader, while no other member
    // holds the leader key (unreachable DCS, or a DCS back without a leader key).
    let key_not_others = match view {
        None => true,
        Some(v) => v.leader.as_deref().is_none_or(|l| l == cfg.name),
    };
    let failsafe_ok = prev.phase == Phase::Leader
        && key_not_others
        && failsafe::right_until(cfg, obs).is_some_and(|until| now + cfg.demote_margin_ms < until);
    let facts = Facts {
        now,
        lease_ok,
        leader_now: (lease_ok && key_is_mine) || failsafe_ok,
        failsafe_ok,
        promise_left: failsafe::promise_left(obs),
        view,
    };

    let mut state = prev.clone();
    let (reason, pg_actions) = step(&mut state, obs, cfg, &facts);

    let mut actions = Vec::with_capacity(pg_actions.len() + 2);
    if keeps_lease_alive(&state, obs, cfg, &facts) {
        actions.push(Action::RenewLease);
    }
    // DCS writes first, then PostgreSQL operations (the order the agent carries them out).
    let (dcs_writes, pg_ops): (Vec<Action>, Vec<Action>) =
        pg_actions.into_iter().partition(is_dcs_write);
    actions.extend(dcs_writes);
    if view.is_some() {
        actions.push(Action::PublishMember);
    }
    actions.extend(pg_ops);

    let published = PublishedState::of_member(&state, &obs.pg, &obs.job);
    let next_wake = next_wake(&state, obs, cfg, &facts, &actions);
    Decision {
        state,
        actions,
        reason,
        published,
        next_wake,
    }
}

/// Whether this cycle renews the lease. The lease carries the member key and, once this
/// member took it, the leader key. A member that may not run a writable primary now renews a
/// lease that may carry the leader key only while its DCS answers, shows the key naming it,
/// and the lease is still certainly alive: a renewal answered in time then restores its right
/// (a leader that demoted on a short DCS hiccup restarts its primary in place). Otherwise a
/// renewal could only keep the key alive for nobody: etcd receives keepalives whose answers
/// come too late to count, so with a slow DCS the key would stay, with nobody running a
/// primary and no replica allowed to race, for as long as the slowness lasts. Without the
/// renewal etcd deletes the key one ttl after the last keepalive it received (never sooner
/// than the demotion deadline, which is measured from an acknowledged one), and once the DCS
/// answers the member releases it itself (`holding_leader_key`). Its member key expires with
/// the lease; the next renewal grants a new lease and the member document is written again.
fn keeps_lease_alive(state: &MemberState, obs: &Observation, cfg: &HaConfig, f: &Facts) -> bool {
    if f.leader_now {
        return true;
    }
    match f.view {
        Some(view) if view.leader.as_deref() == Some(cfg.name.as_str()) => lease_alive(obs),
        Some(_) => true,
        // Unreadable DCS: the key may be ours if this member led, was about to, or raced.
        None => !matches!(
            state.phase,
            Phase::Leader
                | Phase::Promoting
                | Phase::RestartingPrimary
                | Phase::Demoting
                | Phase::HandingOver
                | Phase::Candidate
        ),
    }
}

/// The lease is certainly alive now (its last acknowledged keepalive was sent less than ttl ago).
fn lease_alive(obs: &Observation) -> bool {
    obs.lease_valid_until.is_some_and(|until| obs.now < until)
}

/// DCS writes (everything but the lease renewal and the member document, which `decide`
/// places itself).
fn is_dcs_write(a: &Action) -> bool {
    a.is_dcs() && !matches!(a, Action::RenewLease | Action::PublishMember)
}

fn next_wake(
    state: &MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    facts: &Facts,
    actions: &[Action],
) -> Millis {
    let now = facts.now;
    // The outcome of a race or a key change is worth observing at once.
    if actions.iter().any(|a| {
        matches!(
            a,
            Action::WriteSync { .. }
                | Action::AcquireLeader
                | Action::ClaimInitialize
                | Action::WriteInitialize { .. }
                | Action::ReleaseLeader
        )
    }) {
        return now;
    }
    let mut wake = now + cfg.loop_wait_ms;
    if facts.leader_now
        || matches!(
            state.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary
        )
    {
        wake = wake.min(now + cfg.renew_interval_ms());
        // Wake in time to demote before the lease (or the failsafe right) can expire.
        let right = obs.lease_valid_until.max(if facts.failsafe_ok {
            failsafe::right_until(cfg, obs)
        } else {
            None
        });
        if let Some(until) = right {
            wake = wake.min(until.saturating_sub(cfg.demote_margin_ms).max(now + 1));
        }
    }
    if let Some(deadline) = state.restart_deadline {
        wake = wake.min(deadline.max(now + 1));
    }
    wake
}

type Step = (Reason, Vec<Action>);

fn step(s: &mut MemberState, obs: &Observation, cfg: &HaConfig, f: &Facts) -> Step {
    if let JobView::Failed {
        kind: JobKind::Rewind,
        ..
    } = obs.job
    {
        // Only a rewind that ran through counts as tried.
        s.rewound_for = None;
    }
    // 1. Safety first: a writable primary needs an unexpired lease on the leader key.
    if let Some(step) = enforce_single_primary(s, obs, f) {
        return step;
    }
    if s.phase == Phase::Halted {
        let why = s.halted_because.clone().unwrap_or_default();
        return (Reason::Halted(why), vec![]);
    }
    // 2. One background operation at a time.
    if let JobView::Running(kind) = obs.job {
        let mut actions = leader_duties_if_any(s, obs, cfg, f);
        actions.extend(repoint_while_starting(s, obs, cfg, f, kind));
        return (Reason::WaitingForJob(kind), actions);
    }
    // 3. Without the DCS nothing may change, except the demotion above.
    let Some(view) = f.view else {
        if f.failsafe_ok && !f.lease_ok && obs.pg.is_primary() {
            let remaining_ms = failsafe::right_until(cfg, obs)
                .unwrap_or(f.now)
                .saturating_sub(f.now + cfg.demote_margin_ms);
            return (Reason::FailsafeLeader { remaining_ms }, vec![]);
        }
        if f.leader_now && obs.pg.is_primary() {
            let remaining = obs
                .lease_valid_until
                .unwrap_or(f.now)
                .saturating_sub(f.now + cfg.demote_margin_ms);
            return (
                Reason::LeaderLeaseStillValid {
                    remaining_ms: remaining,
                },
                vec![],
            );
        }
        return (Reason::DcsUnreachable, vec![]);
    };
    // 4. Never touch a data directory of another cluster.
    if let (Initialize::SystemId(cluster), Some(local)) = (&view.initialize, obs.pg.system_id()) {
        if *cluster != local {
            let reason = Reason::ForeignDataDirectory {
                local,
                cluster: *cluster,
            };
            s.phase = Phase::Halted;
            s.halted_because = Some(reason.to_string());
            return (reason, vec![]);
        }
    }
    if cfg.paused {
        let duties = leader_duties_if_any(s, obs, cfg, f);
        return (Reason::Paused, duties);
    }
    match &view.initialize {
        Initialize::Absent => {
            watchdog::refuse_to_bootstrap(s, obs).unwrap_or_else(|| uninitialized(s, obs))
        }
        Initialize::ClaimedBy(who) if who == &cfg.name => bootstrapping(s, obs),
        Initialize::ClaimedBy(who) => (Reason::WaitingForBootstrap { by: who.clone() }, vec![]),
        Initialize::SystemId(_) => match view.leader.as_deref() {
            Some(leader) if leader == cfg.name => holding_leader_key(s, obs, cfg, f, view),
            Some(leader) => following(s, obs, cfg, f, view, leader),
            None => leaderless(s, obs, cfg, f, view),
        },
    }
}

/// Rule 1: demote (or abort an operation that could make us primary) without the right to.
fn enforce_single_primary(s: &mut MemberState, obs: &Observation, f: &Facts) -> Option<Step> {
    if f.leader_now {
        return None;
    }
    let key_holder = f.view.and_then(|v| v.leader.clone());
    // A member creating a new cluster runs a primary before it takes the leader key: nobody
    // else can have data of this cluster yet.
    let creating_cluster = s.phase == Phase::Bootstrapping
        && f.view.is_some_and(|v| {
            v.leader.is_none() && !matches!(v.initialize, Initialize::SystemId(_))
        });
    if creating_cluster {
        return None;
    }
    if obs.job == JobView::Running(JobKind::Stop) {
        return None;
    }
    if obs.pg.is_primary() {
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::DemoteWithoutLease { key_holder },
            vec![Action::Stop {
                mode: StopMode::Immediate,
            }],
        ));
    }
    // A leader's PostgreSQL that does not answer may still be a writable primary.
    let maybe_primary = obs.pg == LocalPg::Starting
        && matches!(
            s.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary
        );
    if maybe_primary && !matches!(obs.job, JobView::Running(_)) {
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::DemoteWithoutLease { key_holder },
            vec![Action::Stop {
                mode: StopMode::Immediate,
            }],
        ));
    }
    let primary_job = matches!(obs.job, JobView::Running(JobKind::Promote | JobKind::Start))
        && matches!(s.phase, Phase::Promoting | Phase::RestartingPrimary);
    if primary_job {
        let JobView::Running(kind) = obs.job else {
            return None;
        };
        s.phase = Phase::Demoting;
        s.restart_deadline = None;
        return Some((
            Reason::AbortPrimaryJobWithoutLease(kind),
            vec![Action::Stop {
                mode: StopMode::Immediate,
            }],
        ));
    }
    None
}

/// A replica that is still starting (it may need WAL from its upstream before it accepts
/// connections) follows a leader change at once: otherwise it would wait for WAL from an
/// upstream that is gone until the start times out (found by the chaos suite).
fn repoint_while_starting(
    s: &MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    kind: JobKind,
) -> Option<Action> {
    if kind != JobKind::Start || s.phase != Phase::Replica {
        return None;
    }
    let view = f.view?;
    let leader = view.leader.as_deref().filter(|l| *l != cfg.name)?;
    let upstream = upstream_for(cfg, view, leader);
    (obs.configured_upstream.as_deref() != Some(upstream.as_str())).then_some(Action::Repoint {
        upstream: Some(upstream),
    })
}

/// While an operation runs, a leader still publishes its position.
fn leader_duties_if_any(
    s: &mut MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
) -> Vec<Action> {
    match (f.view, obs.pg.running()) {
        (Some(view), Some(pg))
            if f.leader_now && !pg.in_recovery && view.leader.as_deref() == Some(&cfg.name) =>
        {
            leader_duties(s, cfg, view, pg, f.now)
        }
        _ => vec![],
    }
}

fn leader_duties(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    now: Millis,
) -> Vec<Action> {
    let mut actions = vec![Action::WriteStatus { optime: pg.lsn }];
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
        actions.push(Action::AppendHistory { timeline, lsn });
    }
    if cfg.use_slots {
        let members = slot_members(s, cfg, view, now);
        actions.push(Action::SyncSlots { members });
    }
    if cfg.failsafe_mode {
        let members = failsafe::topology(view, &cfg.name);
        if view.failsafe.as_ref() != Some(&members) {
            actions.push(Action::WriteFailsafe { members });
        }
    }
    actions
}

/// The members the leader keeps a physical slot for: each member that streams from it (not
/// those cascading from a replica that is a member: that replica keeps their slots), and each
/// such member whose key disappeared less than `member_slots_ttl` ago (its replica may come
/// back after a short absence and stream from where it stopped).
fn slot_members(s: &mut MemberState, cfg: &HaConfig, view: &DcsView, now: Millis) -> Vec<String> {
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

fn uninitialized(s: &mut MemberState, obs: &Observation) -> Step {
    s.phase = Phase::Init;
    match &obs.pg {
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        _ => (Reason::ClaimingInitialize, vec![Action::ClaimInitialize]),
    }
}

/// `initialize` holds our claim: create the cluster (or adopt the data directory we have).
fn bootstrapping(s: &mut MemberState, obs: &Observation) -> Step {
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

/// The leader key names us.
fn holding_leader_key(
    s: &mut MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
) -> Step {
    s.leaderless_since = None;
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.rewound_for = None;
    s.reclone_pending = false;
    s.wal_missing = false;
    if !f.lease_ok {
        // The lease is over as far as this member knows (no keepalive acknowledged within
        // ttl; it no longer renews it, see `keeps_lease_alive`): once PostgreSQL is
        // certainly not a primary, give the key up (delete iff it names us) rather than leave
        // the others waiting for it. Before that, a renewal may still confirm the lease.
        let not_primary = match &obs.pg {
            LocalPg::Running(pg) => pg.in_recovery,
            LocalPg::Stopped { .. } | LocalPg::NoData => true,
            LocalPg::Starting => false,
        };
        if not_primary && !f.leader_now && !lease_alive(obs) {
            s.phase = Phase::Replica;
            s.restart_deadline = None;
            return (
                Reason::ReleasingKeyWithoutLease,
                vec![Action::ReleaseLeader],
            );
        }
        return (Reason::LeaderKeyWithoutLease, vec![]);
    }
    if let Some(step) = watchdog::refuse_to_lead(s, obs) {
        return step;
    }
    match &obs.pg {
        LocalPg::Running(pg) if !pg.in_recovery => {
            s.phase = Phase::Leader;
            s.restart_deadline = None;
            if pg.timeline > 1 && view.last_history_timeline() >= pg.timeline - 1 {
                s.promoted_from = None;
            }
            let mut reason = Reason::LeaderHealthy;
            let mut actions = leader_duties(s, cfg, view, pg, f.now);
            if let Some(req) = &view.failover {
                match switchover::leader_side(cfg, view, pg, req, obs.unix_now_ms) {
                    LeaderSide::HandOver { to } if !failsafe::names(cfg, view, &to) => {
                        // The key is written by this cycle's duties (the candidate is a
                        // member, so the topology names it); hand over once it is read back.
                        reason = Reason::SwitchoverWaitingForFailsafeKey { to };
                    }
                    LeaderSide::HandOver { to } => {
                        s.phase = Phase::HandingOver;
                        let stop = Action::Stop {
                            mode: StopMode::CheckpointThenFast,
                        };
                        return (
                            Reason::HandingOver { to },
                            vec![Action::WriteStatus { optime: pg.lsn }, stop],
                        );
                    }
                    LeaderSide::Scheduled { in_ms } => {
                        reason = Reason::SwitchoverScheduled { in_ms }
                    }
                    LeaderSide::Refuse(why) => {
                        reason = Reason::SwitchoverRefused(why);
                        actions.push(Action::ClearFailover);
                    }
                    LeaderSide::Done => actions.push(Action::ClearFailover),
                }
            }
            actions.extend(sync::manage(s, cfg, view, pg, obs.configured_sync.as_ref()));
            (reason, actions)
        }
        LocalPg::Running(_) if f.promise_left.is_some() => {
            // We promised a failsafe leader that may still run its primary: no promotion
            // before the promise ends (the race that gave us the key crossed the promise).
            let remaining_ms = f.promise_left.unwrap_or(0);
            (Reason::FailsafePromised { remaining_ms }, vec![])
        }
        LocalPg::Running(pg) => {
            s.phase = Phase::Promoting;
            s.promoted_from = Some((pg.timeline, pg.lsn));
            let mut actions = Vec::new();
            if cfg.synchronous.enabled() {
                // First make the sync key ours and empty, so that no member it named before
                // can be promoted without the commits we are about to acknowledge.
                let key_empty_and_ours = sync::key_is_ours(cfg, view)
                    && view.sync.as_ref().is_some_and(|k| k.members.is_empty());
                if !key_empty_and_ours {
                    return (
                        Reason::ClaimingSyncKey,
                        vec![Action::WriteSync {
                            members: Vec::new(),
                            quorum: None,
                        }],
                    );
                }
                // Commits wait for a standby from the first one on; the leader narrows the
                // names down once standbys connect.
                s.sync_changed_at = None;
                let names = Some(crate::SyncStandbyNames::Wildcard);
                actions.push(Action::SetSyncStandbyNames { names });
            }
            actions.push(Action::Promote);
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
            let deadline = *s
                .restart_deadline
                .get_or_insert(f.now + cfg.primary_restart_timeout_ms);
            if f.now >= deadline {
                s.phase = Phase::Replica;
                s.restart_deadline = None;
                let mut actions = vec![Action::ReleaseLeader];
                if obs.pg == LocalPg::Starting {
                    actions.push(Action::Stop {
                        mode: StopMode::Immediate,
                    });
                }
                return (Reason::GaveUpRestartingPrimary, actions);
            }
            s.phase = Phase::RestartingPrimary;
            let remaining_ms = deadline - f.now;
            if obs.pg == LocalPg::Starting {
                return (Reason::RestartingPrimary { remaining_ms }, vec![]);
            }
            let mut actions = Vec::new();
            if cfg.synchronous.enabled() && obs.configured_sync.is_none() {
                // A restarted agent does not know the names in force: use the key's, so
                // that what the key promises stays true.
                s.sync_changed_at = None;
                let names = sync::names_from_key(cfg, view);
                actions.push(Action::SetSyncStandbyNames { names });
            }
            actions.push(Action::StartPrimary);
            (Reason::RestartingPrimary { remaining_ms }, actions)
        }
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        LocalPg::Stopped { .. } | LocalPg::NoData => {
            s.phase = Phase::Replica;
            s.restart_deadline = None;
            (
                Reason::ReleasingKeyWithoutPrimaryData,
                vec![Action::ReleaseLeader],
            )
        }
    }
}

/// Another member holds the leader key: follow it.
fn following_pg(
    s: &mut MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
    leader: &str,
) -> Step {
    s.leaderless_since = None;
    s.restart_deadline = None;
    s.promoted_from = None;
    let leader_running = view
        .members
        .get(leader)
        .is_some_and(|m| m.state == "running" && m.is_primary);
    let upstream = upstream_for(cfg, view, leader);

    if let JobView::Failed {
        kind: JobKind::Rewind,
        error,
    } = &obs.job
    {
        if matches!(obs.pg, LocalPg::Stopped { .. }) {
            if named_synchronous(cfg, view) {
                return (Reason::KeepingSynchronousData, vec![]);
            }
            s.phase = Phase::Cloning;
            s.prepared_as_replica = false;
            return (
                Reason::RewindFailed(error.clone()),
                vec![Action::MoveDataAside {
                    reason: "rewind-failed",
                }],
            );
        }
    }
    match &obs.pg {
        LocalPg::Running(pg) => {
            // (A running primary was handled by rule 1.)
            s.phase = Phase::Replica;
            s.prepared_as_replica = false;
            if obs.configured_upstream.as_deref() != Some(upstream.as_str()) {
                s.not_streaming_since = None;
                return (
                    Reason::Repointing {
                        upstream: upstream.clone(),
                    },
                    vec![Action::Repoint {
                        upstream: Some(upstream),
                    }],
                );
            }
            // Streaming on an older timeline than the leader's means the WAL diverged (or the
            // switch has not happened yet): it does not count as following.
            let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
            let on_leader_timeline = leader_timeline.is_none_or(|tl| pg.timeline >= tl);
            let following = pg.streaming && on_leader_timeline;
            if following || !leader_running {
                s.not_streaming_since = None;
                s.not_streaming_position = None;
                if following {
                    s.rewound_for = None;
                    s.wal_missing = false;
                }
                return (
                    Reason::FollowingLeader {
                        leader: leader.to_string(),
                        upstream,
                    },
                    vec![],
                );
            }
            let since = *s.not_streaming_since.get_or_insert(f.now);
            match s.not_streaming_position {
                Some((lsn, _)) if lsn == pg.lsn => {}
                _ => s.not_streaming_position = Some((pg.lsn, f.now)),
            }
            if f.now - since < cfg.not_streaming_timeout_ms {
                return (
                    Reason::FollowingLeader {
                        leader: leader.to_string(),
                        upstream,
                    },
                    vec![],
                );
            }
            // Not streaming for the timeout: find out why before doing anything.
            if let Some(missing) = missing_wal(s, obs, cfg, f, view, pg, leader, &upstream) {
                s.wal_missing = true;
                return heal_missing_wal(s, cfg, f, view, leader, missing);
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
                    since_ms: f.now - since,
                },
                vec![Action::Stop {
                    mode: StopMode::Fast,
                }],
            )
        }
        LocalPg::Starting => (Reason::WaitingForPostgres, vec![]),
        LocalPg::Stopped { .. } if s.reclone_pending => {
            s.reclone_pending = false;
            // Checked again: the sync key may name us by now, or the clone source be gone
            // (then it starts again as it is and the diagnosis runs once more).
            if named_synchronous(cfg, view) || !leader_running {
                s.phase = Phase::Replica;
                return (
                    Reason::StartingReplica {
                        upstream: Some(upstream.clone()),
                    },
                    vec![Action::StartReplica {
                        upstream: Some(upstream),
                    }],
                );
            }
            s.phase = Phase::Cloning;
            s.rewind_needed = false;
            s.prepared_as_replica = false;
            s.last_reclone_at = Some(f.now);
            (
                Reason::MovingAsideForMissingWal,
                vec![Action::MoveDataAside {
                    reason: "wal-missing",
                }],
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
            if cfg.use_pg_rewind {
                s.phase = Phase::Rewinding;
                s.rewind_needed = false;
                s.prepared_as_replica = true;
                let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
                s.rewound_for = Some((leader.to_string(), leader_timeline));
                (
                    Reason::Rewinding {
                        from: leader.to_string(),
                    },
                    vec![Action::Rewind {
                        from: leader.to_string(),
                    }],
                )
            } else if named_synchronous(cfg, view) {
                (Reason::KeepingSynchronousData, vec![])
            } else {
                s.phase = Phase::Cloning;
                s.rewind_needed = false;
                (
                    Reason::DivergedWithoutRewind,
                    vec![Action::MoveDataAside { reason: "diverged" }],
                )
            }
        }
        LocalPg::Stopped { .. } => {
            s.phase = Phase::Replica;
            (
                Reason::StartingReplica {
                    upstream: Some(upstream.clone()),
                },
                vec![Action::StartReplica {
                    upstream: Some(upstream),
                }],
            )
        }
        LocalPg::NoData => {
            let from = match clonefrom_source(cfg, view, leader) {
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
                vec![Action::Clone { from }],
            )
        }
    }
}

/// Whether the WAL this replica needs is gone from its upstream (called once it has not
/// streamed for the timeout): its PostgreSQL logged that the upstream removed the segment it
/// asked for, or (streaming from the leader) its position has not moved for the timeout and
/// is older than the oldest WAL the leader still holds.
#[allow(clippy::too_many_arguments)]
fn missing_wal(
    s: &MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
    pg: &RunningPg,
    leader: &str,
    upstream: &str,
) -> Option<MissingWal> {
    if let Some(segment) = &obs.missing_wal_segment {
        return Some(MissingWal::SegmentRemoved {
            segment: segment.clone(),
        });
    }
    let oldest = view.leader_oldest_wal?;
    let (lsn, still_since) = s.not_streaming_position?;
    let stalled = f.now.saturating_sub(still_since) >= cfg.not_streaming_timeout_ms;
    (upstream == leader && stalled && lsn == pg.lsn && pg.lsn < oldest)
        .then_some(MissingWal::BehindLeaderWal { lsn, oldest })
}

/// The WAL this replica needs is gone: re-clone it (stop now, then move the data directory
/// aside and clone), unless the archive may still provide the WAL, the `sync` key names it,
/// automatic re-clones are off, or it was re-cloned automatically less than
/// `reclone_interval` ago. Waiting never stops PostgreSQL.
fn heal_missing_wal(
    s: &mut MemberState,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
    leader: &str,
    missing: MissingWal,
) -> Step {
    if cfg.archive_recovery {
        return (Reason::MissingWalWaitingForArchive(missing), vec![]);
    }
    if named_synchronous(cfg, view) {
        return (Reason::MissingWalKeepingSynchronousData(missing), vec![]);
    }
    if !cfg.auto_reclone {
        return (Reason::MissingWalAutoRecloneOff(missing), vec![]);
    }
    if let Some(at) = s.last_reclone_at {
        let next = at + cfg.reclone_interval_ms;
        if f.now < next {
            return (
                Reason::MissingWalRecloneLater {
                    missing,
                    in_ms: next - f.now,
                },
                vec![],
            );
        }
    }
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.reclone_pending = true;
    let from = clonefrom_source(cfg, view, leader).unwrap_or_else(|| leader.to_string());
    (
        Reason::RecloningForMissingWal { missing, from },
        vec![Action::Stop {
            mode: StopMode::Fast,
        }],
    )
}

/// A new replica takes its base backup from a running replica tagged `clonefrom` on the
/// leader's timeline (the most advanced; ties by name), sparing the leader the copy; from
/// the leader when there is none (Patroni's `clonefrom`).
fn clonefrom_source(cfg: &HaConfig, view: &DcsView, leader: &str) -> Option<String> {
    let leader_timeline = view.members.get(leader).and_then(|m| m.timeline);
    view.members
        .iter()
        .filter(|(name, m)| {
            name.as_str() != cfg.name
                && name.as_str() != leader
                && m.clonefrom
                && m.state == "running"
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
fn named_synchronous(cfg: &HaConfig, view: &DcsView) -> bool {
    cfg.synchronous.enabled()
        && view
            .sync
            .as_ref()
            .is_some_and(|k| k.members.contains(&cfg.name))
}

/// Following the leader, plus the slots a running replica keeps for its cascaded members.
fn following(
    s: &mut MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
    leader: &str,
) -> Step {
    let (reason, mut actions) = following_pg(s, obs, cfg, f, view, leader);
    let stopping = actions.iter().any(|a| matches!(a, Action::Stop { .. }));
    if matches!(obs.pg, LocalPg::Running(_)) && !stopping {
        actions.extend(cascade_slots(cfg, view));
    }
    (reason, actions)
}

/// A running replica keeps a physical slot for each member that streams from it
/// (`replicatefrom` naming it), and drops the slots of those that stopped doing so.
fn cascade_slots(cfg: &HaConfig, view: &DcsView) -> Vec<Action> {
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
    vec![Action::SyncSlots { members }]
}

/// The member to stream from: the `replicatefrom` member when it runs as a replica, else the leader.
fn upstream_for(cfg: &HaConfig, view: &DcsView, leader: &str) -> String {
    let me = view.members.get(&cfg.name);
    if let Some(from) = me.and_then(|m| m.replicatefrom.as_deref()) {
        let usable = from != cfg.name
            && view
                .members
                .get(from)
                .is_some_and(|m| m.state == "running" && !m.is_primary);
        if usable {
            return from.to_string();
        }
    }
    leader.to_string()
}

/// Nobody holds the leader key.
fn leaderless(
    s: &mut MemberState,
    obs: &Observation,
    cfg: &HaConfig,
    f: &Facts,
    view: &DcsView,
) -> Step {
    let since = *s.leaderless_since.get_or_insert(f.now);
    s.restart_deadline = None;
    s.not_streaming_since = None;
    s.not_streaming_position = None;
    s.reclone_pending = false;
    s.wal_missing = false;
    match &obs.pg {
        LocalPg::Running(pg) if !pg.in_recovery && f.failsafe_ok => {
            // A failsafe leader whose lease expired while the DCS was away: nobody else may
            // race (each member promised, or is outside the topology), so take the key back.
            // If another member got it first, the next cycle sees it and rule 1 demotes.
            s.phase = Phase::Leader;
            (
                Reason::FailsafeRetakingLeaderKey,
                vec![Action::AcquireLeader],
            )
        }
        LocalPg::Running(pg) if pg.in_recovery => {
            if let Some(step) = watchdog::refuse_to_race(s, obs) {
                return step;
            }
            match switchover::replica_side(cfg, view, f.now - since, obs.unix_now_ms) {
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
                    let allowed = if cfg.synchronous.enabled() {
                        let candidacy = evaluate_candidacy(
                            cfg,
                            pg,
                            view,
                            &obs.peers,
                            f.now - since,
                            f.promise_left,
                            obs.unix_now_ms,
                        );
                        matches!(candidacy, Candidacy::Eligible { .. })
                    } else {
                        // The failsafe rules hold for a requested candidate too.
                        f.promise_left.is_none()
                            && !(cfg.failsafe_mode
                                && view
                                    .failsafe
                                    .as_ref()
                                    .is_some_and(|k| !k.contains(&cfg.name)))
                    };
                    if allowed && !cfg.nofailover {
                        s.phase = Phase::Candidate;
                        return (Reason::SwitchoverCandidate, vec![Action::AcquireLeader]);
                    }
                }
                ReplicaSide::Ordinary => {}
            }
            let candidacy = evaluate_candidacy(
                cfg,
                pg,
                view,
                &obs.peers,
                f.now - since,
                f.promise_left,
                obs.unix_now_ms,
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
                        vec![Action::AcquireLeader],
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
                vec![Action::StartReplica { upstream: None }],
            )
        }
        LocalPg::NoData => {
            s.phase = Phase::Init;
            (Reason::WaitingForLeaderToClone, vec![])
        }
    }
}
