//! The agent's side of the host watchdog (watchdog/): arm before a primary, feed on
//! confirmed leases, disarm once no primary runs (and in maintenance mode, as Patroni).

use pgbaton_core::{JobAction, JobKind, JobView, Observation, Phase};
use pgbaton_dcs::Dcs;
use tokio::time::Instant;

use super::Agent;
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// The send time of the latest confirmation of this leader's right to run a primary:
    /// an acknowledged lease renewal, or (failsafe mode) a round every member acknowledged.
    /// A lease proved by reading its time to live (less than a full ttl left) counts as a
    /// renewal sent that much earlier, so that send time + ttl never passes the proof.
    fn right_confirmed_at(&self) -> Option<Instant> {
        let ttl = std::time::Duration::from_millis(self.ha.ttl_ms);
        let lease = self
            .lease
            .and_then(|ack| (ack.sent_at + ack.ttl.min(ttl)).checked_sub(ttl));
        let failsafe = self
            .failsafe_acked_at
            .filter(|_| self.ha.failsafe_mode)
            .map(|ms| self.origin + std::time::Duration::from_millis(ms));
        lease.max(failsafe)
    }

    /// Before `Promote` or `StartPrimary`: arm the watchdog. `false`: `watchdog.mode` is
    /// required and the device is not usable — the action is not carried out (the next
    /// observation reports the device unusable and the core gives the key up).
    pub(super) fn watchdog_allows(&mut self, job: &JobAction) -> bool {
        if self.ha.paused {
            // Maintenance mode: the watchdog is not armed (Patroni's rule).
            return true;
        }
        let confirmed = self.right_confirmed_at();
        match self.watchdog.before_primary(Instant::now(), confirmed) {
            Ok(()) => true,
            Err(why) => {
                tracing::error!(%job, "not done: the required watchdog is not usable ({why})");
                false
            }
        }
    }

    /// After an acknowledged renewal: feed the watchdog (when armed and covered).
    pub(super) fn feed_watchdog(&mut self) {
        let confirmed = self.right_confirmed_at();
        self.watchdog.feed(Instant::now(), confirmed);
    }

    /// After every cycle: a leader keeps the device armed and fed while its lease is
    /// confirmed (arming it when it leads without: a restarted agent, a new cluster); once no
    /// primary runs or starts, the device is disarmed.
    pub(super) fn tend_watchdog(&mut self, obs: &Observation) {
        let pg = self.pg.clone();
        self.watchdog
            .set_postgres_probe(std::sync::Arc::new(move || {
                // Busy (a job holds the handle): assume it runs.
                pg.try_postmaster_running().unwrap_or(true)
            }));
        if self.ha.paused {
            // Maintenance mode (pause): the operator may stop or restart the agent at will, so
            // the device is disarmed, as Patroni does.
            self.watchdog.disarm("maintenance mode (pause)");
            return;
        }
        let leading = matches!(
            self.state.phase,
            Phase::Leader | Phase::Promoting | Phase::RestartingPrimary | Phase::HandingOver
        );
        let primary_may_run = obs.pg.is_primary()
            || matches!(obs.job, JobView::Running(JobKind::Promote | JobKind::Start));
        if leading && obs.pg.is_primary() && !self.watchdog.is_armed() {
            let confirmed = self.right_confirmed_at();
            // A required device that cannot be armed shows in the next observation.
            let _ = self.watchdog.before_primary(Instant::now(), confirmed);
        } else if leading {
            self.feed_watchdog();
        } else if !primary_may_run {
            self.watchdog.disarm("this member no longer runs a primary");
        }
    }
}

#[cfg(test)]
#[path = "watchdog_runtime_tests.rs"]
mod runtime_tests;
