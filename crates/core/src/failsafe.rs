//! DCS failsafe mode (`failsafe_mode`, as Patroni 3): the rules both sides of
//! `POST /failsafe` follow, as pure functions the agent, the simulator and `decide` share.
//!
//! * **Topology.** While the DCS works, the leader keeps the `failsafe` key naming every
//!   member it sees (itself included). In failsafe mode a member the key does not name never
//!   races for the leader key ([`crate::Candidacy::NotInFailsafeTopology`]).
//! * **Leader side.** Without the DCS, the leader sends `POST /failsafe` to every member of
//!   the key and of its last cluster view ([`ack_targets`]). When all of them accept, the
//!   round sent at `t` gives the right to run the primary until `t + ttl − demote_margin`
//!   ([`right_until`]), like an acknowledged keepalive. Without the key there is no right.
//! * **Member side.** A member accepts only if it neither runs a primary nor claims the
//!   leader key ([`may_promise`]), and its last DCS read shows no other member holding the
//!   leader key ([`may_promise_to`]); it then promises not to race nor promote until its
//!   receipt time plus ttl, which is later than the leader's right.

use crate::observation::{DcsView, Observation};
use crate::state::Phase;
use crate::{HaConfig, Millis};

/// The members the `failsafe` key should name: every member in the view, and the leader.
pub fn topology(view: &DcsView, leader: &str) -> Vec<String> {
    let mut names: Vec<String> = view.members.keys().cloned().collect();
    if !names.iter().any(|n| n == leader) {
        names.push(leader.to_string());
    }
    names.sort();
    names
}

/// Failsafe mode off, no `failsafe` key yet, or the key names `member`: it may race for the
/// leader key (a member outside the failsafe topology never does). A switchover hands over
/// only to such a member.
pub fn names(cfg: &HaConfig, view: &DcsView, member: &str) -> bool {
    !cfg.failsafe_mode
        || view
            .failsafe
            .as_ref()
            .is_none_or(|key| key.iter().any(|m| m == member))
}

/// Whom a leader without the DCS must get an acknowledgement from, from its last view: the
/// members of the `failsafe` key and of the view, but itself. `None` when the view has no
/// `failsafe` key: members outside the topology are not held back, so no round can give a
/// right.
pub fn ack_targets(view: &DcsView, me: &str) -> Option<Vec<String>> {
    let key = view.failsafe.as_ref()?;
    let mut names: Vec<String> = key
        .iter()
        .chain(view.members.keys())
        .filter(|n| n.as_str() != me)
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// Member side: may this member promise a failsafe leader not to compete? Not while it runs
/// a primary or claims (or is about to use) the leader key.
pub fn may_promise(phase: Phase, runs_primary: bool) -> bool {
    !runs_primary
        && !matches!(
            phase,
            Phase::Leader
                | Phase::Candidate
                | Phase::Promoting
                | Phase::RestartingPrimary
                | Phase::HandingOver
                | Phase::Bootstrapping
        )
}

/// Member side, for one request: may this member promise `requester`? Only if it may
/// promise at all ([`may_promise`]) and its last DCS read does not show another member
/// holding the leader key: a requester that lost the key while it could not see it (an agent
/// stopped for seconds, resuming with its old view) must not get a right from a member that
/// already follows the new leader.
pub fn may_promise_to(
    phase: Phase,
    runs_primary: bool,
    key_holder: Option<&str>,
    requester: &str,
) -> bool {
    may_promise(phase, runs_primary) && no_other_key_holder(key_holder, requester)
}

/// The leader key, as this member last read it, is free or held by `requester`.
pub fn no_other_key_holder(key_holder: Option<&str>, requester: &str) -> bool {
    key_holder.is_none_or(|holder| holder == requester)
}

/// A leader running its primary whose DCS read failed asks the members for a failsafe right
/// (`AgentAction::FailsafeRound`) each cycle, while its lease may still hold too: the right must
/// be there when the lease ends.
pub fn wants_round(cfg: &HaConfig, phase: Phase, obs: &Observation) -> bool {
    cfg.failsafe_mode && phase == Phase::Leader && obs.dcs.is_none() && obs.pg.is_primary()
}

/// Until when the acknowledged failsafe round lets the leader's PostgreSQL accept writes
/// (before the demotion margin), when failsafe mode is on.
pub fn right_until(cfg: &HaConfig, obs: &Observation) -> Option<Millis> {
    if !cfg.failsafe_mode {
        return None;
    }
    obs.failsafe_acked_at.map(|sent| sent + cfg.ttl_ms)
}

/// How long this member's promise still holds, if it does.
pub fn promise_left(obs: &Observation) -> Option<Millis> {
    obs.failsafe_promised_until
        .filter(|until| *until > obs.now)
        .map(|until| until - obs.now)
}
