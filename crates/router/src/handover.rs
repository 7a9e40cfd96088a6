//! The router's side of a planned switchover (ARCHITECTURE.md, "Handover").
//!
//! The router registers itself for the cluster as `routers/<name>` (attached to its own
//! lease, renewed every second). When a switchover is due (the `failover` key asks the
//! current leader, or the leader being handed over from, to hand over), it **holds** the
//! write traffic: new connections and, with pooling, new transactions wait (the pools are
//! paused with the pause of `POST /pause`), while running transactions finish; once no
//! transaction-mode write server connection is busy (or `switchover_drain_timeout` has
//! passed) it **acknowledges** by writing the `failover` key's revision into its key. The
//! leader stops PostgreSQL only when every registered router has acknowledged (or the
//! timeout has passed: a router that does not answer cannot hold the switchover up). When
//! another member holds the leader key, or the request is gone, the router **resumes**:
//! the waiting connections and transactions go to the new leader.

use std::sync::Arc;
use std::time::Duration;

use pgbaton_dcs::{ClusterPath, ClusterState, Dcs, EtcdDcs, RouterDoc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::pooling::Pooling;

/// How long the router's registration outlives the router (its lease's TTL).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the lease is renewed.
const RENEW: Duration = Duration::from_secs(1);
/// How often a drain looks at the busy write connections.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// `switchover_drain_timeout` when the DCS config does not say.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The revision of the `failover` key when it asks for a switchover that is due and not yet
/// done: the leader key names the member the request hands over from (`leader`; any member
/// but the candidate when the request names none), or nobody holds it yet. `None` once the
/// new leader holds the key, for a request scheduled later, or without a request.
pub(crate) fn pending_switchover(state: &ClusterState, unix_now_ms: u64) -> Option<i64> {
    let request = state.failover.as_ref()?;
    let doc = &request.value;
    if let Some(at) = doc.scheduled_at.as_deref() {
        match chrono::DateTime::parse_from_rfc3339(at.trim()) {
            Ok(t) if t.timestamp_millis() <= unix_now_ms as i64 => {}
            // Later, or a time the agents cannot read either (they refuse it).
            _ => return None,
        }
    }
    let holder = state.leader_name();
    let handing_over = match holder {
        None => true,
        Some(holder) => {
            doc.member.as_deref() != Some(holder)
                && doc.leader.as_deref().is_none_or(|from| from == holder)
        }
    };
    handing_over.then_some(request.mod_revision)
}

/// The revision of the `move` key while it asks the routers to hold write traffic for a
/// move to another cluster (`ctl move`): held and acknowledged as for a switchover, then
/// resumed when the key says the clients moved (or is gone: the move was given up).
pub(crate) fn pending_move(state: &ClusterState) -> Option<i64> {
    state
        .moving
        .as_ref()
        .filter(|m| m.value.state == pgbaton_dcs::MoveState::Holding)
        .map(|m| m.mod_revision)
}

/// `switchover_drain_timeout` from the DCS `config` key (seconds, a number or `"5s"`).
pub(crate) fn drain_timeout(state: &ClusterState) -> Duration {
    crate::topology::config_seconds(state, "switchover_drain_timeout")
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT)
}

/// Where the router is in a switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Write traffic flows.
    Serving,
    /// Write traffic is held; running transactions finish until `until`.
    Draining { revision: i64, until: Instant },
    /// Held and acknowledged in the router's key.
    Paused { revision: i64 },
}

/// What the router does on a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Hold new connections and transactions (pause the pools).
    Hold,
    /// Write the acknowledgement of this request revision.
    Acknowledge(i64),
    /// Let the held work go (to whichever leader the DCS names now); clear the acknowledgement.
    Resume,
}

/// One step of the router's switchover state machine: `pending` is
/// [`pending_switchover`] now, `busy` the transaction-mode write server connections still
/// busy, `drain` the drain timeout.
pub(crate) fn step(
    phase: &mut Phase,
    pending: Option<i64>,
    busy: usize,
    now: Instant,
    drain: Duration,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    match (*phase, pending) {
        (Phase::Serving, None) => return effects,
        (Phase::Draining { .. } | Phase::Paused { .. }, None) => {
            *phase = Phase::Serving;
            effects.push(Effect::Resume);
            return effects;
        }
        (Phase::Serving, Some(revision)) => {
            effects.push(Effect::Hold);
            *phase = Phase::Draining {
                revision,
                until: now + drain,
            };
        }
        (Phase::Draining { revision: r, .. } | Phase::Paused { revision: r }, Some(revision))
            if r != revision =>
        {
            // Another request (the first one was cancelled and a new one written): still
            // held, drain and acknowledge again.
            *phase = Phase::Draining {
                revision,
                until: now + drain,
            };
        }
        (Phase::Paused { .. }, Some(_)) => return effects,
        (Phase::Draining { .. }, Some(_)) => {}
    }
    if let Phase::Draining { revision, until } = *phase {
        if busy == 0 || now >= until {
            *phase = Phase::Paused { revision };
            effects.push(Effect::Acknowledge(revision));
        }
    }
    effects
}

/// What the handover task needs.
pub(crate) struct Handover {
    pub hosts: Vec<String>,
    pub access: pgbaton_dcs::EtcdAccess,
    pub path: ClusterPath,
    /// The router's name in `routers/<name>`.
    pub name: String,
    pub write_listen: String,
    /// Every state the follower read from etcd, with its scope.
    pub states: watch::Receiver<Arc<crate::watcher::Followed>>,
    /// Held write traffic (read by `route::wait_for_leader`).
    pub hold: watch::Sender<bool>,
    pub pooling: Option<Arc<Pooling>>,
}

/// The router's default name: `<host name>:<write port>`.
pub(crate) fn default_name(write_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "router".to_string());
    format!("{host}:{write_port}")
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A handle on the keys of the cluster at `path`, holding the router's registration lease.
fn registration(h: &Handover, path: &ClusterPath) -> Result<EtcdDcs, pgbaton_dcs::DcsError> {
    EtcdDcs::new(
        h.hosts.clone(),
        path.clone(),
        &h.name,
        LEASE_TTL,
        Duration::from_secs(2),
    )
    .with_access(&h.access)
}

/// Register, follow the switchovers, and deregister when `stop` turns true. The router is
/// registered under the scope whose state it routes by: its own, or after a move the scope
/// its clients moved to (that cluster's leader then waits for it at a switchover, and its
/// own cluster's leader no longer does).
pub(crate) async fn run(mut h: Handover, mut stop: watch::Receiver<bool>) {
    let mut path = h.path.clone();
    let mut dcs = match registration(&h, &path) {
        Ok(dcs) => dcs,
        Err(e) => {
            tracing::error!(scope = %path.scope, error = %e, "cannot set up the connection to etcd; the router does not register for switchovers");
            return;
        }
    };
    let mut doc = RouterDoc {
        paused_for: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        write_listen: h.write_listen.clone(),
        extra: Default::default(),
    };
    let mut phase = Phase::Serving;
    let mut lease: Option<i64> = None;
    let mut written: Option<RouterDoc> = None;
    let mut renew = tokio::time::interval(RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held_since: Option<Instant> = None;
    loop {
        let draining = matches!(phase, Phase::Draining { .. });
        tokio::select! {
            _ = renew.tick() => renew_lease(&dcs, &path, &mut lease, &mut written).await,
            changed = h.states.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(DRAIN_POLL), if draining => {}
            _ = crate::stop::stopped(&mut stop) => {
                deregister(&dcs, &path).await;
                return;
            }
        }
        let followed = h.states.borrow().clone();
        if !followed.scope.is_empty() && followed.scope != path.scope {
            let next = ClusterPath::new(&h.path.namespace, &followed.scope);
            match registration(&h, &next) {
                Ok(handle) => {
                    tracing::info!(from = %path.scope, to = %next.scope, "the router now routes by another cluster's state (a move, or its end): registering for that cluster's switchovers");
                    deregister(&dcs, &path).await;
                    (dcs, path) = (handle, next);
                    lease = None;
                    written = None;
                    renew_lease(&dcs, &path, &mut lease, &mut written).await;
                }
                Err(e) => {
                    tracing::error!(scope = %next.scope, error = %e, "cannot set up the connection to etcd for the cluster the clients moved to; the router stays registered under its own");
                }
            }
        }
        let scope = path.scope.as_str();
        let state = &followed.state;
        let moving = pending_move(state);
        let pending = pending_switchover(state, unix_now_ms()).or(moving);
        // Busy: transaction-mode write connections in a transaction, and session-mode write
        // sessions the kernel forwards until they have been taken out (`takeout`).
        let busy = h.pooling.as_ref().map_or(0, |p| {
            p.pools.busy_transactions("write")
                + p.kernel_writes.load(std::sync::atomic::Ordering::Relaxed)
        });
        let now = Instant::now();
        for effect in step(&mut phase, pending, busy, now, drain_timeout(state)) {
            match effect {
                Effect::Hold => {
                    match state.moving.as_ref().filter(|_| moving.is_some()) {
                        Some(m) => {
                            tracing::info!(%scope, to = %m.value.to, "move to another cluster due: holding new write connections and transactions until the clients have moved")
                        }
                        None => {
                            tracing::info!(%scope, leader = state.leader_name().unwrap_or("none"), "switchover due: holding new write connections and transactions until the new leader takes over")
                        }
                    }
                    held_since = Some(now);
                    h.hold.send_replace(true);
                    if let Some(p) = &h.pooling {
                        // Sets the pause and closes idle server connections; busy ones are
                        // closed as their transaction ends (`checkin`).
                        let _ = p.pools.pause(None, Duration::ZERO).await;
                    }
                }
                Effect::Acknowledge(revision) => {
                    if busy > 0 {
                        tracing::warn!(%scope, busy, "switchover_drain_timeout passed with transactions still running on the old leader; acknowledging anyway");
                    }
                    tracing::info!(%scope, revision, drained_ms = held_since.map_or(0, |t| t.elapsed().as_millis() as u64), "write traffic paused; acknowledging the switchover");
                    doc.paused_for = Some(revision);
                }
                Effect::Resume => {
                    h.hold.send_replace(false);
                    if let Some(p) = &h.pooling {
                        p.pools.resume(None);
                        p.probers.clear();
                    }
                    tracing::info!(%scope, leader = state.leader_name().unwrap_or("none"), held_ms = held_since.map_or(0, |t| t.elapsed().as_millis() as u64), "switchover over: write traffic resumed");
                    held_since = None;
                    doc.paused_for = None;
                }
            }
        }
        if lease.is_some() && written.as_ref() != Some(&doc) {
            match dcs.touch_router(&doc).await {
                Ok(()) => written = Some(doc.clone()),
                Err(e) => {
                    tracing::warn!(%scope, error = %e, "cannot write the router's key; retrying");
                }
            }
        }
    }
}

/// Renew the registration lease (a new one when it expired: the key went with the old one).
async fn renew_lease(
    dcs: &EtcdDcs,
    path: &ClusterPath,
    lease: &mut Option<i64>,
    written: &mut Option<RouterDoc>,
) {
    match dcs.keepalive().await {
        Ok(ack) => {
            if *lease != Some(ack.lease_id) {
                *lease = Some(ack.lease_id);
                *written = None;
            }
        }
        Err(e) => {
            tracing::debug!(scope = %path.scope, error = %e, "cannot renew the router's registration lease");
            *lease = None;
        }
    }
}

async fn deregister(dcs: &EtcdDcs, path: &ClusterPath) {
    if let Err(e) = dcs.remove_router().await {
        tracing::debug!(scope = %path.scope, error = %e, "cannot remove the router's key (it expires with its lease)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::lease_ttl;
    use pgbaton_dcs::{FailoverDoc, LeaderKey, Versioned};

    fn state(leader: Option<&str>, from: Option<&str>, to: Option<&str>) -> ClusterState {
        ClusterState {
            leader: leader.map(|name| LeaderKey {
                name: name.into(),
                lease_id: 1,
                mod_revision: 1,
            }),
            failover: Some(Versioned {
                value: FailoverDoc {
                    leader: from.map(str::to_string),
                    member: to.map(str::to_string),
                    ..Default::default()
                },
                mod_revision: 42,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_move_holds_the_writes_until_it_is_done() {
        let moving = |state| ClusterState {
            moving: Some(Versioned {
                value: pgbaton_dcs::MoveDoc {
                    to: "other".into(),
                    state,
                    extra: Default::default(),
                },
                mod_revision: 9,
            }),
            ..Default::default()
        };
        assert_eq!(
            pending_move(&moving(pgbaton_dcs::MoveState::Holding)),
            Some(9)
        );
        assert_eq!(pending_move(&moving(pgbaton_dcs::MoveState::Moved)), None);
        assert_eq!(pending_move(&ClusterState::default()), None);
    }

    #[test]
    fn a_switchover_is_pending_until_another_member_holds_the_leader_key() {
        let now = 1_800_000_000_000;
        // Due, named from the holder, with or without a candidate.
        assert_eq!(
            pending_switchover(&state(Some("a"), Some("a"), Some("b")), now),
            Some(42)
        );
        assert_eq!(
            pending_switchover(&state(Some("a"), Some("a"), None), now),
            Some(42)
        );
        // The key was released: still handing over.
        assert_eq!(
            pending_switchover(&state(None, Some("a"), Some("b")), now),
            Some(42)
        );
        // The candidate (or, without one, anyone else) holds the key: done.
        assert_eq!(
            pending_switchover(&state(Some("b"), Some("a"), Some("b")), now),
            None
        );
        assert_eq!(
            pending_switchover(&state(Some("c"), Some("a"), None), now),
            None
        );
        // A manual failover (no leader named) to b while a leads.
        assert_eq!(
            pending_switchover(&state(Some("a"), None, Some("b")), now),
            Some(42)
        );
        assert_eq!(
            pending_switchover(&state(Some("b"), None, Some("b")), now),
            None
        );
        // No request.
        let mut none = state(Some("a"), Some("a"), None);
        none.failover = None;
        assert_eq!(pending_switchover(&none, now), None);
    }

    #[test]
    fn a_scheduled_switchover_is_pending_only_once_due() {
        let mut s = state(Some("a"), Some("a"), Some("b"));
        if let Some(f) = s.failover.as_mut() {
            f.value.scheduled_at = Some("2027-01-15T08:00:00+00:00".into());
        }
        let at = chrono::DateTime::parse_from_rfc3339("2027-01-15T08:00:00+00:00")
            .expect("time")
            .timestamp_millis() as u64;
        assert_eq!(pending_switchover(&s, at - 1), None);
        assert_eq!(pending_switchover(&s, at), Some(42));
        if let Some(f) = s.failover.as_mut() {
            f.value.scheduled_at = Some("tomorrow".into());
        }
        assert_eq!(pending_switchover(&s, at), None, "unreadable: never due");
    }

    #[test]
    fn the_lease_ttl_comes_from_the_dcs_config() {
        let mut s = ClusterState::default();
        assert_eq!(lease_ttl(&s), None);
        for (value, expected) in [
            (serde_json::json!(4), Some(Duration::from_secs(4))),
            (serde_json::json!(30), Some(Duration::from_secs(30))),
            (serde_json::json!(2.5), Some(Duration::from_secs(3))),
            (serde_json::json!("10s"), Some(Duration::from_secs(10))),
            (serde_json::json!("never"), None),
        ] {
            s.config = Some(Versioned {
                value: serde_json::json!({ "ttl": value }),
                mod_revision: 1,
            });
            assert_eq!(lease_ttl(&s), expected, "{value}");
        }
    }

    #[test]
    fn the_drain_timeout_comes_from_the_dcs_config() {
        let mut s = ClusterState::default();
        assert_eq!(drain_timeout(&s), DEFAULT_DRAIN_TIMEOUT);
        for (value, expected) in [
            (serde_json::json!(2), Duration::from_secs(2)),
            (serde_json::json!(0.5), Duration::from_millis(500)),
            (serde_json::json!("3s"), Duration::from_secs(3)),
            (serde_json::json!("250ms"), Duration::from_millis(250)),
            (serde_json::json!(-1), DEFAULT_DRAIN_TIMEOUT),
            (serde_json::json!("soon"), DEFAULT_DRAIN_TIMEOUT),
        ] {
            s.config = Some(Versioned {
                value: serde_json::json!({ "switchover_drain_timeout": value }),
                mod_revision: 1,
            });
            assert_eq!(drain_timeout(&s), expected, "{value}");
        }
    }

    #[test]
    fn the_router_holds_drains_acknowledges_and_resumes() {
        let t0 = Instant::now();
        let drain = Duration::from_secs(5);
        let mut phase = Phase::Serving;
        assert_eq!(step(&mut phase, None, 3, t0, drain), vec![]);
        // Due with two transactions running: hold, not yet acknowledged.
        assert_eq!(step(&mut phase, Some(7), 2, t0, drain), vec![Effect::Hold]);
        assert_eq!(
            phase,
            Phase::Draining {
                revision: 7,
                until: t0 + drain
            }
        );
        assert_eq!(step(&mut phase, Some(7), 1, t0 + drain / 2, drain), vec![]);
        // The last one finished: acknowledge once.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            step(&mut phase, Some(7), 0, t1, drain),
            vec![Effect::Acknowledge(7)]
        );
        assert_eq!(phase, Phase::Paused { revision: 7 });
        assert_eq!(step(&mut phase, Some(7), 0, t1, drain), vec![]);
        // The new leader holds the key: resume.
        assert_eq!(step(&mut phase, None, 0, t1, drain), vec![Effect::Resume]);
        assert_eq!(phase, Phase::Serving);
    }

    #[test]
    fn an_idle_router_acknowledges_at_once_and_a_stuck_one_at_the_timeout() {
        let t0 = Instant::now();
        let drain = Duration::from_secs(5);
        let mut phase = Phase::Serving;
        assert_eq!(
            step(&mut phase, Some(7), 0, t0, drain),
            vec![Effect::Hold, Effect::Acknowledge(7)]
        );
        let mut phase = Phase::Serving;
        assert_eq!(step(&mut phase, Some(7), 4, t0, drain), vec![Effect::Hold]);
        assert_eq!(
            step(
                &mut phase,
                Some(7),
                4,
                t0 + drain - Duration::from_millis(1),
                drain
            ),
            vec![]
        );
        assert_eq!(
            step(&mut phase, Some(7), 4, t0 + drain, drain),
            vec![Effect::Acknowledge(7)]
        );
    }

    #[test]
    fn a_new_request_while_held_is_drained_and_acknowledged_again() {
        let t0 = Instant::now();
        let drain = Duration::from_secs(5);
        let mut phase = Phase::Paused { revision: 7 };
        assert_eq!(step(&mut phase, Some(9), 1, t0, drain), vec![]);
        assert!(matches!(phase, Phase::Draining { revision: 9, .. }));
        assert_eq!(
            step(&mut phase, Some(9), 0, t0, drain),
            vec![Effect::Acknowledge(9)]
        );
        // A request cancelled while draining: resume.
        let mut phase = Phase::Draining {
            revision: 3,
            until: t0 + drain,
        };
        assert_eq!(step(&mut phase, None, 2, t0, drain), vec![Effect::Resume]);
    }
}
