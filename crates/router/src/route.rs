//! Choosing a server for a new connection: the leader (waiting for one, bounded, while a
//! switchover or failover is in progress) or the readable replicas in balancing order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Balance;
use crate::metrics::Metrics;
use crate::protocol::Target;
use crate::shared::Shared;
use crate::topology::{Backend, Replica};

/// How long new work for the leader waits for one now: `handover_wait`; unset, the leader
/// lease's TTL + 2 s (a lost leader's lease expires, a new leader is elected and promotes)
/// and at least `write.switchover_wait`; while a switchover is held, plus the drain.
pub(crate) fn leader_wait(shared: &Shared) -> Duration {
    let wait = match shared.cfg.handover_wait {
        Some(wait) => wait,
        None => {
            let ttl = shared
                .topology
                .borrow()
                .lease_ttl
                .unwrap_or(crate::topology::DEFAULT_TTL);
            (ttl + Duration::from_secs(2)).max(shared.cfg.switchover_wait)
        }
    };
    if *shared.hold.borrow() {
        wait + crate::handover::DEFAULT_DRAIN_TIMEOUT
    } else {
        wait
    }
}

/// The current leader, or the first one to appear within [`leader_wait`]. With `avoid`
/// (a server that just turned out not to be writable) a different leader is awaited; when
/// none comes, whatever leader is current is returned, so a promotion that completed in the
/// meantime still gets its chance.
pub(crate) async fn wait_for_leader(shared: &Shared, avoid: Option<&Backend>) -> Option<Backend> {
    let deadline = tokio::time::Instant::now() + leader_wait(shared);
    wait_for_leader_until(shared, avoid, deadline).await
}

/// [`wait_for_leader`] up to `deadline`.
pub(crate) async fn wait_for_leader_until(
    shared: &Shared,
    avoid: Option<&Backend>,
    deadline: tokio::time::Instant,
) -> Option<Backend> {
    let mut leader = shared.leader.clone();
    let mut hold = shared.hold.clone();
    let acceptable = |l: &Option<Backend>| l.is_some() && l.as_ref() != avoid;
    let held = *hold.borrow_and_update();
    if !held {
        let current = leader.borrow_and_update();
        if acceptable(&current) {
            return current.clone();
        }
    }
    let started = Instant::now();
    shared.waiting.fetch_add(1, Ordering::Relaxed);
    let found = async {
        loop {
            if !*hold.borrow_and_update() {
                let current = leader.borrow_and_update().clone();
                if acceptable(&current) {
                    return Ok(current);
                }
            }
            tokio::select! {
                changed = leader.changed() => changed?,
                changed = hold.changed() => changed?,
            }
        }
    };
    let waited: Result<Result<Option<Backend>, watch::error::RecvError>, _> =
        tokio::time::timeout_at(deadline, found).await;
    shared.waiting.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    shared.metrics.wait_seconds.observe(elapsed.as_secs_f64());
    match waited {
        Ok(Ok(found)) => {
            Metrics::count(&shared.metrics.waits, &[("outcome", "leader_found")]);
            if let Some(b) = &found {
                tracing::info!(leader = %b.name, waited_ms = elapsed.as_millis() as u64, "a leader appeared; forwarding the waiting connection");
            }
            found
        }
        _ => {
            Metrics::count(&shared.metrics.waits, &[("outcome", "timed_out")]);
            if avoid.is_some() && !*shared.hold.borrow() {
                shared.leader.borrow().clone()
            } else {
                None
            }
        }
    }
}

/// Sleep `pause`, or less when the leader changes meanwhile.
pub(crate) async fn pause_or_leader_change(shared: &Shared, pause: Duration) {
    let mut leader = shared.leader.clone();
    leader.borrow_and_update();
    let _ = tokio::time::timeout(pause, leader.changed()).await;
}

/// Why no leader could be used, for the client: the DCS unread past the lease, or no
/// leader within the wait.
pub(crate) fn no_leader_reason(shared: &Shared, waited: Duration) -> String {
    if shared.topology.borrow().dcs_unreadable {
        "the router cannot read etcd for longer than the leader's lease lasts, so it does not know who leads".to_string()
    } else {
        format!("no writable leader within {waited:?}")
    }
}

/// The readable replicas in the order to try them.
pub(crate) fn read_candidates(shared: &Arc<Shared>) -> Vec<Backend> {
    let topology = shared.topology.borrow().clone();
    let start = shared.next_replica.fetch_add(1, Ordering::Relaxed);
    order_replicas(&topology.replicas, shared.cfg.balance, start, |name| {
        shared.active_reads(name)
    })
}

/// Round robin: rotate by `start`. Least connections: fewest active reads first (ties in
/// round-robin order).
pub(crate) fn order_replicas(
    replicas: &[Replica],
    balance: Balance,
    start: usize,
    active: impl Fn(&str) -> usize,
) -> Vec<Backend> {
    if replicas.is_empty() {
        return Vec::new();
    }
    let n = replicas.len();
    let mut ordered: Vec<Backend> = (0..n)
        .map(|i| replicas[(start + i) % n].backend.clone())
        .collect();
    if balance == Balance::LeastConnections {
        ordered.sort_by_key(|b| active(&b.name));
    }
    ordered
}

/// Count a routing decision (`pgbaton_router_decisions_total`).
pub(crate) fn decision(shared: &Shared, target: Target, decision: &str) {
    Metrics::count(
        &shared.metrics.decisions,
        &[("target", target.label()), ("decision", decision)],
    );
}

/// A TCP connection to `backend` within `connect_timeout` (no Nagle: the protocol's
/// small messages go at once).
pub(crate) async fn connect(shared: &Shared, backend: &Backend) -> Result<TcpStream, String> {
    let connecting = TcpStream::connect((backend.host.as_str(), backend.port));
    match tokio::time::timeout(shared.cfg.connect_timeout, connecting).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!(
            "cannot connect to {} at {}: {e}",
            backend.name,
            backend.address()
        )),
        Err(_) => Err(format!(
            "no connection to {} at {} within {:?}",
            backend.name,
            backend.address(),
            shared.cfg.connect_timeout
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str) -> Replica {
        Replica {
            backend: Backend {
                name: name.into(),
                host: "127.0.0.1".into(),
                port: 1,
            },
            lag_bytes: Some(0),
            replay_delay_ms: None,
            lag_source: "dcs",
        }
    }

    fn names(list: &[Backend]) -> Vec<&str> {
        list.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn round_robin_rotates() {
        let replicas = [replica("a"), replica("b"), replica("c")];
        let order = |start| order_replicas(&replicas, Balance::RoundRobin, start, |_| 0);
        assert_eq!(names(&order(0)), ["a", "b", "c"]);
        assert_eq!(names(&order(1)), ["b", "c", "a"]);
        assert_eq!(names(&order(5)), ["c", "a", "b"]);
        assert!(order_replicas(&[], Balance::RoundRobin, 3, |_| 0).is_empty());
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let replicas = [replica("a"), replica("b"), replica("c")];
        let load = |name: &str| match name {
            "a" => 5,
            "b" => 1,
            _ => 1,
        };
        let order = order_replicas(&replicas, Balance::LeastConnections, 0, load);
        assert_eq!(names(&order), ["b", "c", "a"]);
        let order = order_replicas(&replicas, Balance::LeastConnections, 2, load);
        assert_eq!(names(&order), ["c", "b", "a"]);
    }
}
