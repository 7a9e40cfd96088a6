//! Follows the cluster in etcd: subscribes to the watch on the cluster prefix and reloads the
//! whole prefix on every notification (never polls, never writes, never takes a lease), then
//! publishes the new [`Topology`] and, separately, the leader — so that write sessions wake
//! only when the leader changes, and can be closed at that very moment.

use std::sync::Arc;
use std::time::Duration;

use pgbaton_dcs::{ClusterPath, Dcs, EtcdDcs};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::topology::{Backend, Topology};

/// After a failed read of etcd, try again this soon.
const RETRY: Duration = Duration::from_millis(250);

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

/// Reload and publish on every change until `stop` turns true.
pub(crate) async fn follow(
    hosts: Vec<String>,
    path: ClusterPath,
    max_lag: u64,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let scope = path.scope.clone();
    // The TTL is irrelevant: this handle never takes a lease.
    let dcs = EtcdDcs::new(
        hosts,
        path,
        "pgbaton-router",
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    let mut events = dcs.subscribe();
    let mut healthy = true;
    loop {
        let wait_for_event = match dcs.load().await {
            Ok(state) => {
                if !healthy {
                    tracing::info!(%scope, "etcd readable again");
                    healthy = true;
                }
                let previous = publisher.topology.borrow().clone();
                let next = Topology::from_cluster(&state, &previous, max_lag);
                publisher.publish(next, &metrics);
                true
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(%scope, error = %e, "cannot read the cluster from etcd; keeping the last view and retrying");
                    healthy = false;
                }
                metrics.dcs_errors.inc();
                false
            }
        };
        tokio::select! {
            changed = events.changed(), if wait_for_event => {
                if changed.is_err() {
                    tracing::warn!(%scope, "the etcd watch stopped");
                    return;
                }
            }
            _ = tokio::time::sleep(RETRY), if !wait_for_event => {}
            _ = crate::shared::stopped(&mut stop) => return,
        }
    }
}
