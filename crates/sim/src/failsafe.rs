//! DCS failsafe mode in the simulator: a leader whose DCS read failed sends `POST /failsafe`
//! to every member of the failsafe topology it last read (modelled instantly, like the
//! peers' `GET /patroni`). A member answers only if its agent runs and the link is up; it
//! accepts (and promises not to compete until now + ttl) by the core's own rule, judged on
//! its agent's last DCS read. When every
//! member accepted, the round's send time becomes the leader's `failsafe_acked_at`.

use pgbaton_core::{failsafe, Phase};

use crate::world::World;

impl World {
    /// One failsafe round of member `m`, if it is a failsafe leader without the DCS.
    pub(crate) fn failsafe_round(&mut self, m: usize) {
        let cfg = &self.members[m].cfg;
        if !cfg.failsafe_mode
            || self.members[m].agent.state.phase != Phase::Leader
            || !self.members[m].pg.is_running_primary()
        {
            return;
        }
        let (ttl, name) = (cfg.ttl_ms, cfg.name.clone());
        let Some(targets) = self.members[m]
            .agent
            .last_view
            .as_ref()
            .and_then(|v| failsafe::ack_targets(v, &name))
        else {
            self.log(
                m,
                "failsafe: no failsafe key read yet; no round".to_string(),
            );
            return;
        };
        let now = self.now;
        let mut refused = Vec::new();
        for target in &targets {
            let Some(j) = self.index_of(target) else {
                refused.push(target.clone());
                continue;
            };
            let peer = &mut self.members[j];
            let answers = self.net.linked(m, j) && peer.agent.running();
            let key_holder = peer
                .agent
                .last_view
                .as_ref()
                .and_then(|v| v.leader.as_deref());
            if answers
                && failsafe::may_promise_to(
                    peer.agent.state.phase,
                    peer.pg.is_running_primary(),
                    key_holder,
                    &name,
                )
            {
                if self.flaw != Some(crate::Flaw::FailsafeForgetsPromise) {
                    let until = peer
                        .agent
                        .failsafe_promised_until
                        .unwrap_or(0)
                        .max(now + ttl);
                    peer.agent.failsafe_promised_until = Some(until);
                }
            } else {
                refused.push(target.clone());
            }
        }
        self.happenings.push(crate::Happening::FailsafeRound {
            at: now,
            member: name,
            acked: refused.is_empty(),
        });
        if refused.is_empty() {
            let agent = &mut self.members[m].agent;
            agent.failsafe_acked_at = Some(now);
            agent.failsafe_valid_until = Some(now + ttl);
            self.log(m, format!("failsafe: {targets:?} acknowledged"));
        } else {
            self.log(m, format!("failsafe: no acknowledgement from {refused:?}"));
        }
    }
}
