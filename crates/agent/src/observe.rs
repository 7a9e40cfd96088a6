//! Taking the snapshot the core decides on: DCS, PostgreSQL, peers, lease.

use std::collections::BTreeMap;
use std::time::Duration;

use pgbaton_core::TimelineSource;
use pgbaton_core::{LocalPg, Millis, Observation, PeerView};
use pgbaton_dcs::{ClusterState, Dcs, LeaseAck};
use pgbaton_postgres::StreamTrouble;
use tokio::time::Instant;
use tracing::Instrument;

use super::{view, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// How long a DCS request may take now: retry_timeout, but never past the moment a
    /// leader must demote.
    pub(super) fn dcs_timeout(&self) -> Duration {
        let base = Duration::from_millis(self.ha.retry_timeout_ms);
        if self.flaws.has(crate::flaws::Flaw::UncappedDcsTimeout) {
            return base;
        }
        let now = self.now();
        let margin = self.ha.demote_margin_ms;
        let lease_left = self
            .lease_valid_until()
            .map(|until| until.saturating_sub(now + margin));
        // A failsafe leader also needs time for its round after a failed read: half of it.
        let failsafe_left = self
            .failsafe_valid_until()
            .map(|until| until.saturating_sub(now + margin) / 2);
        let Some(left) = lease_left.max(failsafe_left) else {
            return base;
        };
        let leading = matches!(
            self.state.phase,
            pgbaton_core::Phase::Leader
                | pgbaton_core::Phase::Promoting
                | pgbaton_core::Phase::RestartingPrimary
        );
        if !leading {
            return base;
        }
        base.min(Duration::from_millis(left.max(50)))
    }

    pub(super) async fn observe(&mut self) -> Observation {
        let dcs = match tokio::time::timeout(self.dcs_timeout(), self.dcs.load()).await {
            Ok(Ok(state)) => Some(state),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster state");
                None
            }
            Err(_) => {
                tracing::warn!("cannot read the cluster state: etcd did not answer in time");
                None
            }
        };
        if let Some(state) = &dcs {
            self.dcs_last_seen_unix = Some(self.host.unix_now_ms() / 1000);
            self.count_leader_change(state);
        }
        let pg = self.observe_pg().await;
        let job = self.jobs.view().await;
        let asked = match &dcs {
            Some(state) if state.leader.is_none() && matches!(pg, LocalPg::Running(_)) => {
                Some(self.ask_peers(state).await)
            }
            _ => None,
        };
        if let Some(state) = &dcs {
            self.check_lease_covers_leader_key(state).await;
            self.read_lease_left(state).await;
        }
        let trouble = match (&pg, self.wal_log.as_mut()) {
            (LocalPg::Running(r), Some(scanner)) if r.in_recovery => scanner.poll(),
            // A replica that cannot reach a consistent state says why only in its log.
            (LocalPg::Starting, Some(scanner)) => scanner.poll(),
            _ => None,
        };
        let (missing_wal_segment, forked_from_upstream) = match trouble {
            Some(StreamTrouble::SegmentRemoved(segment)) => (Some(segment), false),
            Some(StreamTrouble::Forked(_)) => (None, true),
            None => (None, false),
        };
        let view = dcs.as_ref().map(view::dcs_view);
        if dcs.is_some() {
            self.cluster = dcs;
        }
        let now = self.now();
        let peers = asked
            .map(|(asked_at, peers)| positions_read_within(peers, now.saturating_sub(asked_at)))
            .unwrap_or_default();
        Observation {
            now,
            pg,
            job,
            dcs: view,
            lease_valid_until: self.lease_valid_until(),
            peers,
            configured_upstream: self.configured_upstream.clone(),
            follows_remote_primary: self.follows_remote_primary,
            unix_now_ms: self.host.unix_now_ms(),
            configured_sync: self.configured_sync.clone(),
            failsafe_acked_at: self.failsafe_acked_at,
            failsafe_promised_until: self.failsafe_promised_until(),
            missing_wal_segment,
            forked_from_upstream,
            slot_copies_ready: self.slot_copies_ready(),
            command: self.pending_command.as_ref().map(|p| p.command),
            watchdog: self.watchdog.state(tokio::time::Instant::now()),
        }
    }

    /// The lease proves leadership only if it is the lease the leader key is attached to.
    /// When the key names us but hangs on another lease (a restarted agent that could not
    /// adopt it at start), adopt that lease, or forget ours so the core never acts on it.
    async fn check_lease_covers_leader_key(&mut self, state: &ClusterState) {
        let Some(key) = state.leader.as_ref().filter(|l| l.name == self.cfg.name) else {
            // No key, or another member's: no lease of ours proves leadership.
            self.key_lease = None;
            return;
        };
        self.key_lease = Some(key.lease_id);
        if self.lease.is_some_and(|ack| ack.lease_id == key.lease_id) {
            return;
        }
        match tokio::time::timeout(self.dcs_timeout(), self.dcs.adopt_leader_lease()).await {
            Ok(Ok(Some(ack))) if ack.lease_id == key.lease_id => {
                tracing::info!(
                    lease_id = ack.lease_id,
                    "adopted the lease of our leader key"
                );
                self.lease = Some(ack);
            }
            _ => {
                tracing::warn!(
                    "the leader key names this member but is attached to a lease we cannot renew"
                );
                self.lease = None;
            }
        }
    }

    /// The leader key names us and hangs on our lease, but no renewal confirms that lease
    /// now (a leader that demoted over a DCS outage or a slow DCS, and stops renewing): ask
    /// etcd how long the lease still lives, a read that does not extend it. etcd resets lease
    /// TTLs when it comes back from an outage, so a leader whose etcd returns learns it may
    /// restart its primary in place; one whose etcd is merely slow learns nothing in time and
    /// lets the key expire. The answer proves the lease alive until the request's send time
    /// plus the time left, less a second (etcd reports whole seconds).
    async fn read_lease_left(&mut self, state: &ClusterState) {
        let Some(key) = state.leader.as_ref().filter(|l| l.name == self.cfg.name) else {
            return;
        };
        let Some(ack) = self.lease.filter(|ack| ack.lease_id == key.lease_id) else {
            return;
        };
        let now = self.now();
        let certain = self
            .lease_valid_until()
            .is_some_and(|until| now + self.ha.demote_margin_ms < until);
        if certain {
            return;
        }
        let sent_at = Instant::now();
        match tokio::time::timeout(self.dcs_timeout(), self.dcs.lease_remaining(ack.lease_id)).await
        {
            Ok(Ok(Some(left))) if left > Duration::from_secs(1) => {
                let read = LeaseAck {
                    sent_at,
                    ttl: left - Duration::from_secs(1),
                    lease_id: ack.lease_id,
                };
                if read.safe_until() > ack.safe_until() {
                    tracing::info!(
                        left_ms = read.ttl.as_millis() as u64,
                        "etcd still holds our leader lease"
                    );
                    self.lease = Some(read);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the lease's time to live"),
            Err(_) => tracing::debug!("the lease's time to live was not read in time"),
        }
    }

    fn count_leader_change(&mut self, state: &ClusterState) {
        let leader = state.leader_name().map(str::to_string);
        if leader.is_some() && leader != self.last_leader {
            if self.last_leader.is_some() || self.leader_changes == 0 {
                self.leader_changes += 1;
            }
            tracing::info!(leader = leader.as_deref().unwrap_or(""), "leader is now");
        }
        if leader.is_some() {
            self.last_leader = leader;
        }
    }

    async fn observe_pg(&mut self) -> LocalPg {
        let alive = self.pg.postmaster_running().await;
        let timeout = Duration::from_millis(self.ha.retry_timeout_ms.min(2_000));
        if alive {
            let asked_at = Instant::now();
            return match self.pg.status(timeout).await {
                Ok(status) => {
                    let running = view::running_pg(&status);
                    let was = self.last_pg_status.as_ref().map(|s| s.timeline_source);
                    if status.timeline_source == TimelineSource::ControlFile
                        && was != Some(TimelineSource::ControlFile)
                    {
                        tracing::warn!(
                            timeline = status.timeline,
                            "replica timeline read from the control file, which lags after a timeline switch: IDENTIFY_SYSTEM as the replication user over the local socket failed (see the debug log; check pg_hba's local replication line and max_wal_senders)"
                        );
                    }
                    self.last_pg_status = Some(status);
                    self.last_pg_status_asked_at = Some(asked_at);
                    LocalPg::Running(running)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "PostgreSQL does not answer yet");
                    self.last_pg_status = None;
                    LocalPg::Starting
                }
            };
        }
        self.last_pg_status = None;
        if self.jobs.is_running() {
            // initdb / pg_basebackup / pg_rewind are writing the directory.
            return LocalPg::Starting;
        }
        match self.pg.data_dir_state() {
            Ok(state) => view::stopped_pg(&state),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data directory's control file");
                LocalPg::Starting
            }
        }
    }

    /// Ask every other member's REST API for its position, all at once, within a second:
    /// when the questions went out (core time) and the answers.
    async fn ask_peers(&self, state: &ClusterState) -> (Millis, BTreeMap<String, PeerView>) {
        let urls = view::peer_api_urls(state, &self.cfg.name);
        let asked_at = self.now();
        let asks = urls.into_iter().map(|(name, url)| {
            let answer = self.peers.status(url);
            async move {
                let peer = match tokio::time::timeout(Duration::from_millis(1000), answer).await {
                    Ok(Some(body)) => view::peer_view(&body),
                    _ => PeerView::Unreachable,
                };
                (name, peer)
            }
        });
        let mut out = BTreeMap::new();
        for (name, peer) in join_all(asks).await {
            out.insert(name, peer);
        }
        (asked_at, out)
    }
}

/// Turn each peer's `pgbaton_position_age_ms` (how long before it answered it read its
/// position) into an upper bound on how long before `now` that was: the answer came after
/// the question, `since_asked` ago at most. The peer measured on its own clock: a clock
/// running up to 0.1 % slower than ours is covered, and a millisecond of rounding.
fn positions_read_within(
    mut peers: BTreeMap<String, PeerView>,
    since_asked: Millis,
) -> BTreeMap<String, PeerView> {
    for peer in peers.values_mut() {
        if let PeerView::Report { read_within_ms, .. } = peer {
            *read_within_ms = read_within_ms.map(|age| age + age / 1000 + 1 + since_asked);
        }
    }
    peers
}

/// Run futures concurrently and collect their outputs (small, to avoid a dependency).
pub(super) async fn join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs
        .into_iter()
        .map(|f| tokio::spawn(f.in_current_span()))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_position_age_becomes_a_bound_on_how_long_before_now_it_was_read() {
        let report = |age| PeerView::Report {
            replica_running: true,
            primary_running: false,
            lsn: Some(9),
            timeline: Some(1),
            nofailover: false,
            failover_priority: 1,
            settled: false,
            read_within_ms: age,
        };
        let peers = BTreeMap::from([
            ("a".to_string(), report(Some(2_000))),
            ("b".to_string(), report(None)),
            ("c".to_string(), PeerView::Unreachable),
        ]);
        let out = positions_read_within(peers, 120);
        // 2 s on the peer's clock, 0.1 % for a slower clock, 1 ms of rounding, 120 ms since
        // the question went out.
        assert_eq!(out["a"], report(Some(2_000 + 2 + 1 + 120)));
        assert_eq!(out["b"], report(None));
        assert_eq!(out["c"], PeerView::Unreachable);
    }
}
