//! Follows the cluster in etcd: subscribes to the watch on the cluster prefix and reloads the
//! whole prefix on every notification (never polls, never writes, never takes a lease), then
//! publishes the new [`Topology`] and, separately, the leader — so that write sessions wake
//! only when the leader changes, and can be closed at that very moment. It also publishes
//! the raw cluster state (for the REST lag poller) and recomputes the topology from the
//! last state whenever the poller brings new lag figures (no etcd read for those).

use std::sync::Arc;
use std::time::Duration;

use pgbaton_dcs::{ClusterPath, ClusterState, Dcs, EtcdDcs};
use tokio::sync::watch;

use crate::lag::{Clock, RestLag};
use crate::metrics::Metrics;
use crate::topology::{Backend, LagBounds, Topology};

/// After a failed read of etcd, try again this soon.
const RETRY: Duration = Duration::from_millis(250);
/// Without a watch event for this long, read anyway: a watch cut off by a partition says
/// nothing, and the router must know how long ago etcd last answered (`dcs_unreadable`).
const QUIET: Duration = Duration::from_secs(1);

/// The sending side of the router's view; sessions hold receivers.
pub(crate) struct Publisher {
    pub topology: watch::Sender<Arc<Topology>>,
    pub leader: watch::Sender<Option<Backend>>,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Publisher {
            topology: watch::Sender::new(Arc::new(Topology::default())),
            leader: watch::Sender::new(None),
        }
    }

    /// Publish `next`; the leader channel changes only when the leader does.
    pub(crate) fn publish(&self, next: Topology, metrics: &Metrics) {
        let leader = next.leader.clone();
        let changed = self.leader.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            tracing::info!(
                from = current.as_ref().map_or("none", |b| b.name.as_str()),
                to = leader.as_ref().map_or("none", |b| b.name.as_str()),
                "leader changed"
            );
            current.clone_from(&leader);
            true
        });
        if changed {
            metrics.leader_changes.inc();
        }
        self.topology.send_if_modified(|current| {
            if **current == next {
                return false;
            }
            let readable: Vec<&str> = next
                .replicas
                .iter()
                .map(|r| r.backend.name.as_str())
                .collect();
            tracing::debug!(revision = next.revision, ?readable, "cluster view updated");
            *current = Arc::new(next);
            true
        });
    }
}

/// A state read from etcd and the scope it belongs to: the router's own, or, after a move
/// (`ctl move`), the scope of the cluster its clients moved to. The router registers for
/// switchovers under that scope (`handover`): the leader whose switchovers it follows is the
/// one that waits for its acknowledgement.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    pub scope: String,
    pub state: ClusterState,
}

/// What `follow` reads and where it publishes.
pub(crate) struct Follow {
    pub hosts: Vec<String>,
    /// TLS and credentials for etcd (checked when the configuration was read).
    pub access: pgbaton_dcs::EtcdAccess,
    pub path: ClusterPath,
    pub bounds: LagBounds,
    pub publisher: Arc<Publisher>,
    /// Every state read from etcd (the poller's members, the handover's switchovers).
    pub states: watch::Sender<Arc<Followed>>,
    pub metrics: Arc<Metrics>,
}

impl Follow {
    fn recompute(&self, state: &ClusterState, rest: Option<&watch::Receiver<Arc<RestLag>>>) {
        let previous = self.publisher.topology.borrow().clone();
        let empty = RestLag::new();
        let rest = rest.map(|r| r.borrow().clone());
        let rest = rest.as_deref().unwrap_or(&empty);
        let next = Topology::compute(state, &previous, &self.bounds, rest, Clock::now());
        self.publisher.publish(next, &self.metrics);
    }
}

/// The cluster this one's clients moved to: its handle and watch.
struct Moved {
    scope: String,
    dcs: EtcdDcs,
    events: watch::Receiver<u64>,
}

/// The state to route by: `state` itself, or, once its `move` key says the clients moved
/// (`ctl move`), the state of the cluster they moved to (its leader, replicas, switchovers).
async fn follow_move(
    f: &Follow,
    moved: &mut Option<Moved>,
    state: ClusterState,
) -> Result<Followed, pgbaton_dcs::DcsError> {
    let own = |state| Followed {
        scope: f.path.scope.clone(),
        state,
    };
    let to = state
        .moving
        .as_ref()
        .filter(|m| m.value.state == pgbaton_dcs::MoveState::Moved)
        .map(|m| m.value.to.clone());
    let Some(to) = to else {
        if let Some(gone) = moved.take() {
            tracing::warn!(scope = %f.path.scope, from = %gone.scope, "the move key is gone: routing to this cluster again");
        }
        return Ok(own(state));
    };
    if moved.as_ref().is_none_or(|m| m.scope != to) {
        let path = ClusterPath::new(&f.path.namespace, &to);
        let dcs = EtcdDcs::new(
            f.hosts.clone(),
            path,
            "pgbaton-router",
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .with_access(&f.access)?;
        tracing::info!(scope = %f.path.scope, to = %to, "the cluster's clients moved: routing to the leader and replicas of {to}");
        let events = dcs.subscribe();
        *moved = Some(Moved {
            scope: to,
            dcs,
            events,
        });
    }
    let Some(target) = moved.as_ref() else {
        return Ok(own(state));
    };
    Ok(Followed {
        scope: target.scope.clone(),
        state: target.dcs.load().await?,
    })
}

/// Resolves when the cluster the clients moved to changes; never without one.
async fn moved_changed(moved: &mut Option<Moved>) {
    if let Some(m) = moved {
        if m.events.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Resolves when the poller publishes; never without a poller (or once it is gone).
async fn rest_changed(rest: &mut Option<watch::Receiver<Arc<RestLag>>>) {
    if let Some(receiver) = rest {
        if receiver.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Reload and publish on every change until `stop` turns true; `rest` brings the REST
/// poller's answers (None with `lag_source: dcs`).
pub(crate) async fn follow(
    f: Follow,
    mut rest: Option<watch::Receiver<Arc<RestLag>>>,
    mut stop: watch::Receiver<bool>,
) {
    let scope = f.path.scope.clone();
    // The TTL is irrelevant: this handle never takes a lease.
    let dcs = EtcdDcs::new(
        f.hosts.clone(),
        f.path.clone(),
        "pgbaton-router",
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    let dcs = match dcs.with_access(&f.access) {
        Ok(dcs) => dcs,
        Err(e) => {
            // validate() read the same files at start: they changed since.
            tracing::error!(%scope, error = %e, "cannot set up the connection to etcd; the router follows no cluster");
            return;
        }
    };
    let mut events = dcs.subscribe();
    let mut healthy = true;
    let mut last: Option<Arc<Followed>> = None;
    let mut last_read = tokio::time::Instant::now();
    // After a move (`ctl move`): the cluster the clients moved to, read like this one.
    let mut moved: Option<Moved> = None;
    loop {
        let loaded = match dcs.load().await {
            Ok(state) => follow_move(&f, &mut moved, state).await,
            Err(e) => Err(e),
        };
        let wait_for_event = match loaded {
            Ok(state) => {
                if !healthy {
                    tracing::info!(%scope, "etcd readable again");
                    healthy = true;
                }
                last_read = tokio::time::Instant::now();
                let state = Arc::new(state);
                f.recompute(&state.state, rest.as_ref());
                f.states.send_replace(state.clone());
                last = Some(state);
                true
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(%scope, error = %e, "cannot read the cluster from etcd; keeping the last view and retrying");
                    healthy = false;
                }
                f.metrics.dcs_errors.inc();
                // The leader it knew may have lost its lease by now: stop trusting it.
                let current = f.publisher.topology.borrow().clone();
                let lease = current.lease_ttl.unwrap_or(crate::topology::DEFAULT_TTL);
                if !current.dcs_unreadable && last_read.elapsed() >= lease {
                    tracing::warn!(%scope, unread_ms = last_read.elapsed().as_millis() as u64, lease_ms = lease.as_millis() as u64, leader = current.leader.as_ref().map_or("none", |l| l.name.as_str()), "etcd unreadable for longer than the leader's lease lasts: holding new write work until etcd answers again");
                    let mut next = (*current).clone();
                    next.leader = None;
                    next.dcs_unreadable = true;
                    f.publisher.publish(next, &f.metrics);
                }
                false
            }
        };
        loop {
            tokio::select! {
                changed = events.changed(), if wait_for_event => {
                    if changed.is_err() {
                        tracing::warn!(%scope, "the etcd watch stopped");
                        return;
                    }
                    break;
                }
                _ = moved_changed(&mut moved), if wait_for_event => break,
                _ = tokio::time::sleep(RETRY), if !wait_for_event => break,
                _ = tokio::time::sleep(QUIET), if wait_for_event => break,
                _ = rest_changed(&mut rest) => {
                    // Not while etcd is unreadable: the last state may name a leader whose
                    // lease is gone.
                    if let Some(last) = last.as_ref().filter(|_| healthy) {
                        f.recompute(&last.state, rest.as_ref());
                    }
                }
                _ = crate::stop::stopped(&mut stop) => return,
            }
        }
    }
}
