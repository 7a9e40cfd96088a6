//! [`decide`]: the whole HA decision of one cycle, as a pure function.
//!
//! Rules are checked from the most safety-critical down; the first that applies decides.
//! One rule group per file, in the order of the tables in docs/ARCHITECTURE.md: `safety`
//! (S1–S3), `bootstrap`, `leader` (the leader key names this member; `standby` for the
//! leader of a standby cluster), `follower` (another
//! member holds it), `leaderless` (nobody does). Every rule reads the cycle's [`Context`]:
//! the observation, the configuration and the facts derived from them once.

mod bootstrap;
mod commands;
mod follower;
mod leader;
mod leaderless;
mod safety;
mod standby;

use crate::action::Action;
use crate::action::{AgentAction, DcsAction};
use crate::command::CommandVerdict;
use crate::failsafe;
use crate::observation::{DcsView, Initialize, JobKind, JobView, Observation};
use crate::reason::Reason;
use crate::state::{MemberState, Phase, PublishedState};
use crate::watchdog;
use crate::{HaConfig, Millis};

use bootstrap::{bootstrapping, uninitialized};
use follower::{
    following, forked_while_starting, missing_wal_while_starting, repoint_while_starting,
};
use leader::{holding_leader_key, leader_duties_if_any};
use leaderless::leaderless;
use safety::enforce_single_primary;

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
    /// The answer to the observation's operator command (`None` without one).
    pub command: Option<CommandVerdict>,
}

/// What every rule of one cycle reads: the observation, the configuration, and the facts
/// derived from them once.
pub(super) struct Context<'a> {
    pub obs: &'a Observation,
    pub cfg: &'a HaConfig,
    pub now: Millis,
    /// Our lease is certainly alive for longer than the demotion margin.
    pub lease_ok: bool,
    /// We may run a writable primary right now.
    pub leader_now: bool,
    /// Failsafe mode: the leader's primary is covered by an acknowledged failsafe round
    /// (and no other member holds the leader key).
    pub failsafe_ok: bool,
    /// How long a promise to a failsafe leader still holds.
    pub promise_left: Option<Millis>,
    /// The DCS read of this cycle (`None`: the DCS did not answer in time).
    pub view: Option<&'a DcsView>,
    /// Since when every DCS read has found no leader key, none failing in between,
    /// this one included (None: this read failed or found one): the next state's.
    pub no_leader_read_since: Option<Millis>,
    /// How long that is (0: this read is the first, or there is none).
    pub no_leader_read_for: Millis,
}

impl<'a> Context<'a> {
    fn new(prev: &MemberState, obs: &'a Observation, cfg: &'a HaConfig) -> Self {
        let now = obs.now;
        let lease_ok = obs
            .lease_valid_until
            .is_some_and(|until| now + cfg.demote_margin_ms < until);
        let view = obs.dcs.as_ref();
        let key_is_mine = match view {
            Some(v) => v.leader.as_deref() == Some(cfg.name.as_str()),
            // Unreachable DCS: our key is attached to our lease, so while the lease is alive
            // the key is ours if we were leader.
            None => matches!(
                prev.phase,
                Phase::Leader | Phase::RestartingPrimary | Phase::Promoting | Phase::StandbyLeader
            ),
        };
        // Failsafe: the right of an acknowledged round, for the leader, while no other
        // member holds the leader key (unreachable DCS, or a DCS back without a leader key).
        let key_not_others = match view {
            None => true,
            Some(v) => v.leader.as_deref().is_none_or(|l| l == cfg.name),
        };
        let no_leader_read_since = match view {
            Some(v) if v.leader.is_none() => Some(prev.no_leader_read_since.unwrap_or(now)),
            _ => None,
        };
        let failsafe_ok = prev.phase == Phase::Leader
            && key_not_others
            && failsafe::right_until(cfg, obs)
                .is_some_and(|until| now + cfg.demote_margin_ms < until);
        Context {
            obs,
            cfg,
            now,
            lease_ok,
            leader_now: (lease_ok && key_is_mine) || failsafe_ok,
            failsafe_ok,
            promise_left: failsafe::promise_left(obs),
            view,
            no_leader_read_since,
            no_leader_read_for: no_leader_read_since.map_or(0, |since| now.saturating_sub(since)),
        }
    }
}

/// Decide what to do in this cycle. Pure: same inputs, same decision.
pub fn decide(prev: &MemberState, obs: &Observation, cfg: &HaConfig) -> Decision {
    let cx = Context::new(prev, obs, cfg);
    let mut state = prev.clone();
    let mut verdict = None;
    let (reason, pg_actions) = step(&mut state, &cx, &mut verdict);
    state.no_leader_read_since = cx.no_leader_read_since;
    // A command the rules never reached (a halted member, a demotion) is refused with why.
    if obs.command.is_some() && verdict.is_none() {
        verdict = Some(CommandVerdict::Refused {
            status: 503,
            message: format!("not carried out now: {reason}"),
        });
    }

    let mut actions = Vec::with_capacity(pg_actions.len() + 3);
    if failsafe::wants_round(cfg, state.phase, obs) {
        actions.push(Action::Agent(AgentAction::FailsafeRound));
    }
    // A changed `config` key is put in force after this decision (the next cycle decides
    // with it), whatever the rules above decided.
    if let Some(revision) = obs.dcs.as_ref().and_then(|v| v.config_revision) {
        if state.config_revision_applied != Some(revision) {
            state.config_revision_applied = Some(revision);
            actions.push(Action::Agent(AgentAction::ApplyDynamicConfig));
        }
    }
    // Never renew the lease a key being given up hangs on.
    let releasing = pg_actions.contains(&Action::Dcs(DcsAction::ReleaseLeader));
    if keeps_lease_alive(&state, &cx) && !releasing {
        actions.push(Action::Dcs(DcsAction::RenewLease));
    }
    // DCS writes first, then PostgreSQL operations (the order the agent carries them out).
    let (dcs_writes, pg_ops): (Vec<Action>, Vec<Action>) =
        pg_actions.into_iter().partition(is_dcs_write);
    actions.extend(dcs_writes);
    if cx.view.is_some() {
        actions.push(Action::Dcs(DcsAction::PublishMember));
    }
    actions.extend(pg_ops);

    let published = PublishedState::of_member(&state, &obs.pg, &obs.job);
    let next_wake = next_wake(&state, &cx, &actions, &reason);
    Decision {
        state,
        actions,
        reason,
        published,
        next_wake,
        command: verdict,
    }
}

/// Whether this cycle renews the lease. The lease carries the member key and, once this
/// member took it, the leader key. A member that may not run a writable primary now does not
/// renew a lease that may carry the leader key: its DCS read shows the key naming it, or the
/// read failed and it led, was about to, or raced. etcd receives keepalives whose answers
/// come too late to count, so renewing would keep the key alive with nobody running a
/// primary, and no replica could race for as long as the DCS stays slow. etcd then deletes
/// the key one ttl after the last keepalive it received (never sooner than the demotion
/// deadline, which is measured from an acknowledged one), or the member releases it
/// (`holding_leader_key`). What restores a leader's right after an etcd outage is not a
/// renewal but a read: the agent asks etcd how long the lease still lives (etcd resets lease
/// TTLs when it comes back), which does not extend it, and the observation carries the
/// answer as `lease_valid_until`. The member key expires with the lease; the next renewal
/// grants a new lease and the member document is written again.
fn keeps_lease_alive(state: &MemberState, cx: &Context) -> bool {
    // A leader whose primary stopped while its reads fail cannot start it again without a
    // read, however certain its lease: its keepalives would only keep the key from a member
    // that can lead (seed 341044: the postmaster killed over a slow DCS, and a keepalive of
    // the still-certain lease, arriving late, kept the key 7.05 s).
    if cx.view.is_none() && state.phase == Phase::Leader && cx.obs.pg.certainly_not_primary() {
        return false;
    }
    if cx.leader_now {
        return true;
    }
    match cx.view {
        Some(view) => view.leader.as_deref() != Some(cx.cfg.name.as_str()),
        // Unreadable DCS: the key may be ours if this member led, was about to, or raced, or
        // if this agent just started (it may have adopted the lease of its key: found by the
        // real-runtime simulation, seed 118652, an adoption whose answer came too late left
        // the DCS adapter renewing the key's lease while the agent could not lead).
        None => !matches!(
            state.phase,
            Phase::Init
                | Phase::Leader
                | Phase::Promoting
                | Phase::RestartingPrimary
                | Phase::Demoting
                | Phase::HandingOver
                | Phase::Candidate
        ),
    }
}

/// DCS writes (everything but the lease renewal and the member document, which `decide`
/// places itself).
fn is_dcs_write(a: &Action) -> bool {
    matches!(a, Action::Dcs(request) if !matches!(request, DcsAction::RenewLease | DcsAction::PublishMember))
}

/// How soon a quorum candidate asks again for peers' positions that were not yet final.
pub const PEERS_RECHECK_MS: Millis = 250;

fn next_wake(state: &MemberState, cx: &Context, actions: &[Action], reason: &Reason) -> Millis {
    let now = cx.now;
    // The outcome of a race or a key change is worth observing at once (when the DCS
    // answered: without a read there is nothing to observe sooner).
    if cx.view.is_some()
        && actions.iter().any(|a| {
            matches!(
                a,
                Action::Dcs(
                    DcsAction::WriteSync { .. }
                        | DcsAction::AcquireLeader
                        | DcsAction::ClaimInitialize
                        | DcsAction::WriteInitialize { .. }
                        | DcsAction::ReleaseLeader
                )
            )
        })
    {
        return now;
    }
    let mut wake = now + cx.cfg.loop_wait_ms;
    if matches!(
        reason,
        Reason::NotRacing(crate::election::Candidacy::PeersUnsettled { .. })
    ) {
        // The peers publish a settled position with their next cycle, which the same DCS
        // change started: ask again soon rather than a loop_wait later.
        wake = wake.min(now + PEERS_RECHECK_MS);
    }
    if cx.leader_now
        || matches!(
            state.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary | Phase::StandbyLeader
        )
    {
        wake = wake.min(now + cx.cfg.renew_interval_ms());
        // Wake in time to demote before the lease (or the failsafe right) can expire.
        let right = cx.obs.lease_valid_until.max(if cx.failsafe_ok {
            failsafe::right_until(cx.cfg, cx.obs)
        } else {
            None
        });
        // A point already passed was acted on by this decision: waking every millisecond
        // for it again would only spin (a primary restarting while the DCS is away and its
        // lease is over did, until the next renew interval bound it).
        if let Some(demote_at) = right.map(|until| until.saturating_sub(cx.cfg.demote_margin_ms)) {
            if demote_at > now {
                wake = wake.min(demote_at);
            }
        }
    }
    if let Some(deadline) = state.restart_deadline.filter(|&d| d > now) {
        wake = wake.min(deadline);
    }
    // A switchover waiting for routers goes on when switchover_drain_timeout is over (their
    // acknowledgements wake the loop through the DCS watch).
    if let Some((_, since)) = state.drain_started {
        let deadline = since + cx.cfg.switchover_drain_timeout_ms;
        if deadline > now {
            wake = wake.min(deadline);
        }
    }
    wake
}

pub(super) type Step = (Reason, Vec<Action>);

fn step(s: &mut MemberState, cx: &Context, verdict: &mut Option<CommandVerdict>) -> Step {
    if let JobView::Failed {
        kind: JobKind::Rewind,
        ..
    }
    | JobView::SourceUnreachable {
        kind: JobKind::Rewind,
        ..
    } = cx.obs.job
    {
        // Only a rewind that ran through counts as tried.
        s.rewound_for = None;
    }
    // 1. Safety first: a writable primary needs an unexpired lease on the leader key.
    if let Some(step) = enforce_single_primary(s, cx) {
        return step;
    }
    if s.phase == Phase::Halted {
        let why = s.halted_because.clone().unwrap_or_default();
        return (Reason::Halted(why), vec![]);
    }
    // An operator's command (restart, reinitialize); refused, it leaves the cycle to the rest.
    let (answer, carried_out) = commands::command(s, cx);
    *verdict = answer;
    if let Some(step) = carried_out {
        return step;
    }
    // 2. One background operation at a time.
    if let JobView::Running(kind) = cx.obs.job {
        if let Some(step) = missing_wal_while_starting(s, cx) {
            return step;
        }
        if let Some(step) = forked_while_starting(s, cx) {
            return step;
        }
        let mut actions = leader_duties_if_any(s, cx);
        actions.extend(repoint_while_starting(s, cx, kind));
        return (Reason::WaitingForJob(kind), actions);
    }
    // 3. Without the DCS nothing may change, except the demotion above.
    let Some(view) = cx.view else {
        if cx.failsafe_ok && !cx.lease_ok && cx.obs.pg.is_primary() {
            let remaining_ms = failsafe::right_until(cx.cfg, cx.obs)
                .unwrap_or(cx.now)
                .saturating_sub(cx.now + cx.cfg.demote_margin_ms);
            return (Reason::FailsafeLeader { remaining_ms }, vec![]);
        }
        if cx.leader_now && cx.obs.pg.is_primary() {
            let remaining = cx
                .obs
                .lease_valid_until
                .unwrap_or(cx.now)
                .saturating_sub(cx.now + cx.cfg.demote_margin_ms);
            return (
                Reason::LeaderLeaseStillValid {
                    remaining_ms: remaining,
                },
                vec![],
            );
        }
        // A key holder restarting its primary whose lease is no longer certain cannot start
        // it, while its late keepalives may keep the key alive for the others: give the key
        // up now (delete iff it names us; sent even though this read failed, since a slow
        // DCS may still take it). Found by the real-runtime simulation (seed 5388: a leader
        // over a slow DCS held the key through its restart budget, leaderless for 8 s).
        if s.phase == Phase::RestartingPrimary && !cx.lease_ok && cx.obs.pg.certainly_not_primary()
        {
            s.phase = Phase::Replica;
            s.restart_deadline = None;
            return (
                Reason::ReleasingKeyWithoutLease,
                vec![Action::Dcs(DcsAction::ReleaseLeader)],
            );
        }
        // The same for a leader that has stopped its primary for want of a lease (seed
        // 168632: its restart in place aborted, late renewals kept the key alive 7 s), and
        // for a leader whose primary stopped while its reads fail (seed 341044: the
        // postmaster killed over a slow DCS; without a read it cannot restart in place, and
        // a keepalive that reached etcd late kept the key 7.05 s). It stays where it is: a
        // DCS that was down rather than slow did not take the delete, and when it is back
        // and still holds the lease, the primary restarts in place.
        if matches!(s.phase, Phase::Demoting | Phase::Leader)
            && !cx.lease_ok
            && cx.obs.pg.certainly_not_primary()
        {
            return (
                Reason::ReleasingKeyWithoutLease,
                vec![Action::Dcs(DcsAction::ReleaseLeader)],
            );
        }
        return (Reason::DcsUnreachable, vec![]);
    };
    // A reinitialize whose stop is done moves the data directory aside (also in pause).
    if let Some(step) = commands::reinitialize_after_stop(s, cx) {
        return step;
    }
    // 4. Never touch a data directory of another cluster.
    if let (Initialize::SystemId(cluster), Some(local)) = (&view.initialize, cx.obs.pg.system_id())
    {
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
    if cx.cfg.paused {
        let duties = leader_duties_if_any(s, cx);
        return (Reason::Paused, duties);
    }
    match &view.initialize {
        Initialize::Absent => {
            watchdog::refuse_to_bootstrap(s, cx.obs).unwrap_or_else(|| uninitialized(s, cx.obs))
        }
        Initialize::ClaimedBy(who) if who == &cx.cfg.name => bootstrapping(s, cx),
        Initialize::ClaimedBy(who) => (Reason::WaitingForBootstrap { by: who.clone() }, vec![]),
        Initialize::SystemId(_) => match view.leader.as_deref() {
            Some(leader) if leader == cx.cfg.name => holding_leader_key(s, cx, view),
            Some(leader) => following(s, cx, view, leader),
            None => leaderless(s, cx, view),
        },
    }
}
