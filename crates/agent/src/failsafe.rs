//! DCS failsafe mode in the agent (`failsafe_mode`, Patroni 3), both sides of
//! `POST /failsafe`; the rules themselves are `pgbaton_core::failsafe`.
//!
//! * **Member side** ([`FailsafeMember`]): shared between the loop and the REST API. The loop
//!   says after every decision whether a promise may be given (no primary, no claim on the
//!   leader key); the API handler checks that and records the promise (receipt + ttl) under
//!   one lock, and answers at once: the loop may be stuck in a DCS request just then.
//! * **Leader side** ([`Agent::failsafe_round`], `AgentAction::FailsafeRound`, which the core
//!   decides for a leader running its primary whose DCS read failed): the request goes to
//!   every member of the failsafe topology it last read, in parallel, within a short bound;
//!   if every one accepts, the round's *send* time is the new `failsafe_acked_at`, and the
//!   lease guard's deadline moves with it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgbaton_api::CommandOutcome;
use pgbaton_core::{failsafe, Millis, Phase};
use pgbaton_dcs::Dcs;
use tokio::time::Instant;

use super::{view, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

#[derive(Debug, Default)]
struct MemberSide {
    /// The last decision allows a promise (no primary, no claim on the leader key).
    may_promise: bool,
    /// The leader key's holder in the loop's last successful DCS read: a request from
    /// another member is refused (it lost the key while it could not see it).
    key_holder: Option<String>,
    /// Promised until then (a freshly started agent: start + ttl).
    promised_until: Option<Instant>,
    /// Until when the last promise actually given (a `POST /failsafe` accepted) runs.
    received_until: Option<Instant>,
    ttl: Duration,
}

/// The member side of failsafe mode, shared by the loop and the REST API.
#[derive(Debug, Clone, Default)]
pub struct FailsafeMember(Arc<Mutex<MemberSide>>);

impl FailsafeMember {
    fn lock(&self) -> MutexGuard<'_, MemberSide> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start, in failsafe mode: this process may have promised in its previous life.
    pub fn startup_grace(&self, ttl: Duration) {
        let mut side = self.lock();
        side.ttl = ttl;
        side.promised_until = Some(Instant::now() + ttl);
    }

    /// After every decision: whether a promise may be given now, who holds the leader key
    /// as last read, and the ttl in force.
    pub fn set_state(
        &self,
        phase: Phase,
        runs_primary: bool,
        key_holder: Option<&str>,
        ttl: Duration,
    ) {
        let mut side = self.lock();
        side.may_promise = failsafe::may_promise(phase, runs_primary);
        side.key_holder = key_holder.map(str::to_string);
        side.ttl = ttl;
    }

    pub fn promised_until(&self) -> Option<Instant> {
        self.lock().promised_until
    }

    /// A failsafe leader's request was accepted less than a ttl ago (not the start-up grace).
    pub fn promised_recently(&self) -> bool {
        self.lock()
            .received_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// `POST /failsafe` from `leader`: promise (receipt + ttl) or refuse.
    pub fn receive(&self, leader: &str) -> CommandOutcome {
        let mut side = self.lock();
        if !side.may_promise {
            return CommandOutcome::refused(
                409,
                format!(
                    "not accepting {leader} as failsafe leader: this member runs a primary or claims the leader key"
                ),
            );
        }
        if !failsafe::no_other_key_holder(side.key_holder.as_deref(), leader) {
            let holder = side.key_holder.clone().unwrap_or_default();
            return CommandOutcome::refused(
                409,
                format!("not accepting {leader} as failsafe leader: {holder} holds the leader key"),
            );
        }
        let until = Instant::now() + side.ttl;
        side.promised_until = Some(side.promised_until.map_or(until, |u| u.max(until)));
        side.received_until = Some(until);
        tracing::info!(%leader, "failsafe: promised not to race for the leader key for a ttl");
        CommandOutcome::ok("Accepted")
    }
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// Until when the last acknowledged round lets the primary run (core time).
    pub(super) fn failsafe_valid_until(&self) -> Option<Millis> {
        if !self.ha.failsafe_mode || self.state.phase != Phase::Leader {
            return None;
        }
        self.failsafe_acked_at.map(|sent| sent + self.ha.ttl_ms)
    }

    /// One round of `POST /failsafe` to the topology of the last cluster read. Updates
    /// `failsafe_acked_at` (and the guard) when every member accepted.
    pub(super) async fn failsafe_round(&mut self) {
        let Some(cluster) = &self.cluster else { return };
        let me = self.cfg.name.clone();
        let Some(targets) = failsafe::ack_targets(&view::dcs_view(cluster), &me) else {
            tracing::warn!("failsafe: no failsafe key read yet; cannot ask the members");
            return;
        };
        let body = serde_json::json!({
            "name": me,
            "conn_url": super::settings::conn_url(&self.cfg),
            "api_url": super::settings::api_url(&self.cfg),
        });
        let bound = Duration::from_millis((self.ha.ttl_ms / 4).clamp(100, 1_000));
        let auth = self.cfg.restapi.authentication.clone();
        let sent_at = self.now();
        let asks = targets.into_iter().map(|name| {
            let url = cluster
                .members
                .get(&name)
                .map(|doc| doc.api_url.clone())
                .filter(|u| !u.is_empty())
                .or_else(|| {
                    cluster
                        .failsafe
                        .as_ref()
                        .and_then(|k| k.get(&name).cloned())
                });
            let peers = self.peers.clone();
            let (body, auth) = (body.clone(), auth.clone());
            async move {
                let Some(url) = url else {
                    return (name, Err("no api_url known".to_string()));
                };
                let answer = peers.failsafe(url, body, auth);
                let result = tokio::time::timeout(bound, answer)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} ms", bound.as_millis())));
                (name, result)
            }
        });
        let answers = super::observe::join_all(asks).await;
        let refused: Vec<String> = answers
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name} ({e})")))
            .collect();
        if refused.is_empty() {
            tracing::debug!(sent_at, "failsafe: every member acknowledged");
            self.failsafe_acked_at = Some(sent_at);
            self.arm_lease_guard();
        } else {
            tracing::warn!(refused = %refused.join(", "), "failsafe: not every member acknowledged this leader");
        }
    }

    /// Failsafe mode is in force here (`/patroni`'s `failsafe_mode_is_active`): as leader,
    /// the primary runs on the members' acknowledgements because the lease could not be
    /// renewed; as member, a failsafe leader's request was accepted within the last ttl.
    pub(super) fn failsafe_active(&self) -> bool {
        if !self.ha.failsafe_mode {
            return false;
        }
        let now = self.now();
        let on_acks = self.failsafe_valid_until().is_some_and(|until| now < until)
            && self.lease_valid_until().is_none_or(|until| now >= until);
        on_acks || self.failsafe_member.promised_recently()
    }

    /// The member side's promise in core time.
    pub(super) fn failsafe_promised_until(&self) -> Option<Millis> {
        if self.flaws.has(crate::flaws::Flaw::FailsafeForgetsPromise) {
            return None;
        }
        self.failsafe_member
            .promised_until()
            .map(|at| self.to_millis(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_promises_only_without_primary_or_claim() {
        let m = FailsafeMember::default();
        let ttl = Duration::from_secs(4);
        m.set_state(Phase::Candidate, false, None, ttl);
        assert_eq!(m.receive("node1").status, 409);
        assert!(m.promised_until().is_none());
        m.set_state(Phase::Replica, true, None, ttl);
        assert_eq!(m.receive("node1").status, 409);
        m.set_state(Phase::Replica, false, Some("node1"), ttl);
        let before = Instant::now();
        assert_eq!(m.receive("node1").status, 200);
        assert!(m.promised_until().is_some_and(|u| u >= before + ttl));
    }

    #[tokio::test]
    async fn a_member_that_follows_another_leader_refuses() {
        let m = FailsafeMember::default();
        let ttl = Duration::from_secs(4);
        m.set_state(Phase::Replica, false, Some("node3"), ttl);
        let answer = m.receive("node1");
        assert_eq!(answer.status, 409);
        assert!(m.promised_until().is_none());
        m.set_state(Phase::Replica, false, None, ttl);
        assert_eq!(m.receive("node1").status, 200);
    }
}
