//! Where traffic may go, computed purely from one DCS snapshot (and the previous view, for
//! hysteresis): the leader that may take writes, and the replicas that may take reads.
//!
//! - Leader: the member named by the `leader` key whose document says `running` with role
//!   master/primary and has a parsable `conn_url`. A leader key held by a member that is not
//!   (yet) a running primary means "no leader": write connections wait.
//! - Readable replica: any other member that is `running`, not primary, streaming
//!   (`replication_state: streaming`), not tagged `noloadbalance`, with a known
//!   `xlog_location` and lag = leader position − its position within the bound. A replica
//!   leaves the set above `max_lag` and comes back only below 0.8 × `max_lag`, so one near
//!   the bound does not flap. Without a known leader position (no leader) the lag is unknown
//!   and streaming replicas stay readable. Positions and replay delay come from the agents'
//!   REST answers while they are fresh, else from the DCS (see `lag`); the replay delay is
//!   bounded by `max_replay_delay` with the same hysteresis.

use std::collections::BTreeSet;
use std::time::Duration;

use pgbaton_dcs::{ClusterState, MemberDoc};
use serde::Serialize;

use crate::lag::{fresh, leader_position, measure, Clock, RestLag};

/// A server the router can connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// The member name.
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Backend {
    fn of(name: &str, doc: &MemberDoc) -> Option<Backend> {
        let (host, port) = doc.host_port()?;
        Some(Backend {
            name: name.to_string(),
            host,
            port,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A replica that may take reads now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    #[serde(flatten)]
    pub backend: Backend,
    /// Bytes behind the leader's position; None when no leader position is known.
    pub lag_bytes: Option<u64>,
    /// Replay delay in milliseconds; None when unknown (DCS only, or nothing replayed yet).
    pub replay_delay_ms: Option<u64>,
    /// Where the lag comes from: `rest` (the agent's API) or `dcs` (its member document).
    pub lag_source: &'static str,
}

/// The bounds a replica must stay within to take reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagBounds {
    pub max_lag_bytes: u64,
    pub max_replay_delay: Option<Duration>,
    /// A REST answer older than this is not used (three poll intervals).
    pub rest_max_age: Duration,
}

impl LagBounds {
    pub fn bytes(max_lag_bytes: u64) -> LagBounds {
        LagBounds {
            max_lag_bytes,
            max_replay_delay: None,
            rest_max_age: Duration::ZERO,
        }
    }
}

/// The router's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub leader: Option<Backend>,
    pub replicas: Vec<Replica>,
    /// Streaming replicas kept out of reads by the lag bounds (for `/status`).
    pub lagging: Vec<Replica>,
    /// A switchover or failover was requested in the DCS (`failover` key) and not done yet.
    pub failover_pending: bool,
    /// The leader's WAL position the lags are measured against.
    pub leader_position: Option<u64>,
    /// The etcd revision of the snapshot.
    pub revision: i64,
    /// The leader lease's lifetime (the DCS `config` key's `ttl`), when known.
    #[serde(skip)]
    pub lease_ttl: Option<std::time::Duration>,
    /// The router has not read etcd for longer than the leader's lease can last: the leader
    /// it knew is not trusted any more (`leader` is None) until etcd answers again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dcs_unreadable: bool,
}

/// A replica that was readable stays so up to `max_lag`; a new one joins below this.
pub fn rejoin_threshold(max_lag: u64) -> u64 {
    max_lag / 5 * 4 + (max_lag % 5) * 4 / 5
}

impl Topology {
    /// From the DCS alone, with a byte bound.
    pub fn from_cluster(state: &ClusterState, previous: &Topology, max_lag: u64) -> Topology {
        let bounds = LagBounds::bytes(max_lag);
        Topology::compute(state, previous, &bounds, &RestLag::new(), Clock::now())
    }

    /// From the DCS and the agents' fresh REST answers.
    pub fn compute(
        state: &ClusterState,
        previous: &Topology,
        bounds: &LagBounds,
        rest: &RestLag,
        clock: Clock,
    ) -> Topology {
        let leader = state.leader_name().and_then(|name| {
            let doc = state.members.get(name)?;
            let serving = doc.is_running() && doc.is_primary_role();
            serving.then(|| Backend::of(name, doc)).flatten()
        });
        let leader_rest = leader
            .as_ref()
            .and_then(|l| fresh(rest, &l.name, clock, bounds.rest_max_age));
        let leader_position = leader
            .as_ref()
            .and_then(|_| leader_position(state.leader_optime(), leader_rest));
        let was_readable: BTreeSet<&str> = previous
            .replicas
            .iter()
            .map(|r| r.backend.name.as_str())
            .collect();
        let mut replicas = Vec::new();
        let mut lagging = Vec::new();
        for (name, doc) in &state.members {
            if leader.as_ref().is_some_and(|l| &l.name == name) {
                continue;
            }
            let eligible = doc.is_running()
                && !doc.is_primary_role()
                && doc.replication_state.as_deref() == Some("streaming")
                && !doc.tag_true("noloadbalance");
            let Some(backend) = eligible.then(|| Backend::of(name, doc)).flatten() else {
                continue;
            };
            let own = fresh(rest, name, clock, bounds.rest_max_age);
            let measured = measure(doc, own, leader_position, leader_rest, clock);
            if measured.position.is_none() {
                continue;
            }
            let was = was_readable.contains(name.as_str());
            let replica = Replica {
                backend,
                lag_bytes: measured.lag_bytes,
                replay_delay_ms: measured
                    .replay_delay
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                lag_source: measured.source,
            };
            let bytes_ok = match measured.lag_bytes {
                Some(lag) if was => lag <= bounds.max_lag_bytes,
                Some(lag) => lag < rejoin_threshold(bounds.max_lag_bytes) || lag == 0,
                None => true,
            };
            let delay_ok = match (bounds.max_replay_delay, measured.replay_delay) {
                (Some(max), Some(delay)) if was => delay <= max,
                (Some(max), Some(delay)) => delay < max * 4 / 5 || delay.is_zero(),
                _ => true,
            };
            if bytes_ok && delay_ok {
                replicas.push(replica);
            } else {
                lagging.push(replica);
            }
        }
        Topology {
            leader,
            replicas,
            lagging,
            failover_pending: state.failover.is_some(),
            leader_position,
            revision: state.revision,
            lease_ttl: lease_ttl(state),
            dcs_unreadable: false,
        }
    }
}

/// The `ttl` Patroni uses when the DCS `config` names none.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The leader lease's lifetime: the DCS `config` key's `ttl` as etcd grants it (whole
/// seconds, rounded up, at least 2), None when the key is not there (yet).
pub(crate) fn lease_ttl(state: &ClusterState) -> Option<Duration> {
    let ttl = config_seconds(state, "ttl")?;
    let secs = pgbaton_dcs::lease_ttl_secs(ttl);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(30)))
}

/// A duration in seconds from the DCS `config` key (a number, `"5s"` or `"250ms"`), when it
/// is there and between 0 and an hour.
pub(crate) fn config_seconds(state: &ClusterState, key: &str) -> Option<Duration> {
    let value = state.config.as_ref().and_then(|c| c.value.get(key));
    let seconds = match value {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => {
            let s = s.trim();
            s.strip_suffix("ms")
                .and_then(|ms| ms.trim().parse::<f64>().ok().map(|ms| ms / 1000.0))
                .or_else(|| s.strip_suffix('s').unwrap_or(s).trim().parse::<f64>().ok())
        }
        _ => None,
    };
    match seconds {
        Some(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbaton_dcs::LeaderKey;

    fn member(port: u16, role: &str, xlog: u64) -> MemberDoc {
        MemberDoc {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            api_url: String::new(),
            state: "running".into(),
            role: role.into(),
            xlog_location: Some(xlog),
            replication_state: (role == "replica").then(|| "streaming".to_string()),
            ..MemberDoc::default()
        }
    }

    fn cluster(leader: Option<&str>, members: &[(&str, MemberDoc)]) -> ClusterState {
        ClusterState {
            leader: leader.map(|name| LeaderKey {
                name: name.into(),
                lease_id: 1,
                mod_revision: 1,
            }),
            members: members
                .iter()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect(),
            ..ClusterState::default()
        }
    }

    fn names(t: &Topology) -> Vec<&str> {
        t.replicas.iter().map(|r| r.backend.name.as_str()).collect()
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn leader_and_streaming_replicas() {
        let mut lagging = member(3, "replica", 1000 * MB - 2 * MB);
        lagging.tags.insert("x".into(), true.into());
        let mut hidden = member(4, "replica", 1000 * MB);
        hidden
            .tags
            .insert("noloadbalance".into(), serde_json::Value::Bool(true));
        let mut not_streaming = member(5, "replica", 1000 * MB);
        not_streaming.replication_state = None;
        let mut stopped = member(6, "replica", 1000 * MB);
        stopped.state = "stopped".into();
        let state = cluster(
            Some("a"),
            &[
                ("a", member(1, "master", 1000 * MB)),
                ("b", member(2, "replica", 1000 * MB - 100)),
                ("c", lagging),
                ("d", hidden),
                ("e", not_streaming),
                ("f", stopped),
            ],
        );
        let t = Topology::from_cluster(&state, &Topology::default(), MB);
        let leader = t.leader.clone().expect("leader");
        assert_eq!((leader.name.as_str(), leader.port), ("a", 1));
        assert_eq!(names(&t), vec!["b"]);
        assert_eq!(t.replicas[0].lag_bytes, Some(100));
    }

    #[test]
    fn leader_key_without_a_running_primary_means_no_leader() {
        // The new leader took the key but has not promoted yet.
        let state = cluster(
            Some("b"),
            &[
                ("a", member(1, "replica", 10)),
                ("b", member(2, "replica", 10)),
            ],
        );
        let t = Topology::from_cluster(&state, &Topology::default(), MB);
        assert_eq!(t.leader, None);
        // The lag is unknown without a leader; streaming replicas (the one about to be
        // promoted included) stay readable.
        assert_eq!(names(&t), vec!["a", "b"]);
        assert_eq!(t.replicas[0].lag_bytes, None);
        let mut crashed = member(1, "master", 10);
        crashed.state = "crashed".into();
        let state = cluster(Some("a"), &[("a", crashed)]);
        assert_eq!(
            Topology::from_cluster(&state, &Topology::default(), MB).leader,
            None
        );
        let state = cluster(None, &[("a", member(1, "master", 10))]);
        assert_eq!(
            Topology::from_cluster(&state, &Topology::default(), MB).leader,
            None
        );
    }

    #[test]
    fn hysteresis_keeps_a_replica_near_the_bound_from_flapping() {
        let at = |lag: u64| {
            cluster(
                Some("a"),
                &[
                    ("a", member(1, "master", 100 * MB)),
                    ("b", member(2, "replica", 100 * MB - lag)),
                ],
            )
        };
        let max = 10 * MB;
        assert_eq!(rejoin_threshold(max), 8 * MB);
        // Starts readable at 9 MB? No: a newcomer must be below 8 MB.
        let t = Topology::from_cluster(&at(9 * MB), &Topology::default(), max);
        assert!(names(&t).is_empty());
        let t = Topology::from_cluster(&at(7 * MB), &t, max);
        assert_eq!(names(&t), vec!["b"]);
        // Once in, it stays up to the bound itself.
        let t = Topology::from_cluster(&at(10 * MB), &t, max);
        assert_eq!(names(&t), vec!["b"]);
        let t = Topology::from_cluster(&at(10 * MB + 1), &t, max);
        assert!(names(&t).is_empty());
        // Between 0.8 and 1.0 × bound it does not come back.
        let t = Topology::from_cluster(&at(9 * MB), &t, max);
        assert!(names(&t).is_empty());
        let t = Topology::from_cluster(&at(8 * MB - 1), &t, max);
        assert_eq!(names(&t), vec!["b"]);
    }

    #[test]
    fn zero_bound_admits_only_caught_up_replicas() {
        let state = cluster(
            Some("a"),
            &[
                ("a", member(1, "master", 50)),
                ("b", member(2, "replica", 50)),
                ("c", member(3, "replica", 49)),
            ],
        );
        let t = Topology::from_cluster(&state, &Topology::default(), 0);
        assert_eq!(names(&t), vec!["b"]);
    }
}

#[cfg(test)]
mod rest_tests {
    use super::*;
    use crate::lag::RestSample;
    use pgbaton_dcs::LeaderKey;
    use std::time::{Instant, SystemTime};

    const MB: u64 = 1 << 20;

    fn member(port: u16, role: &str, xlog: u64) -> MemberDoc {
        MemberDoc {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            state: "running".into(),
            role: role.into(),
            xlog_location: Some(xlog),
            replication_state: (role == "replica").then(|| "streaming".to_string()),
            ..MemberDoc::default()
        }
    }

    /// The DCS says both are at 100 MB (stale); REST says otherwise.
    fn state() -> ClusterState {
        ClusterState {
            leader: Some(LeaderKey {
                name: "a".into(),
                lease_id: 1,
                mod_revision: 1,
            }),
            members: [
                ("a".to_string(), member(1, "master", 100 * MB)),
                ("b".to_string(), member(2, "replica", 100 * MB)),
            ]
            .into_iter()
            .collect(),
            ..ClusterState::default()
        }
    }

    fn sample(at: Instant, location: Option<u64>, replayed: Option<u64>) -> RestSample {
        RestSample {
            fetched: at,
            location,
            received: replayed,
            replayed,
            replayed_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)),
            previous_location: location,
        }
    }

    fn clock(at: Instant, wall_secs: u64) -> Clock {
        Clock {
            now: at,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(wall_secs),
        }
    }

    fn names(t: &Topology) -> Vec<&str> {
        t.replicas.iter().map(|r| r.backend.name.as_str()).collect()
    }

    #[test]
    fn fresh_rest_positions_override_a_stale_dcs_and_expire() {
        let at = Instant::now();
        let bounds = LagBounds {
            max_lag_bytes: MB,
            max_replay_delay: None,
            rest_max_age: Duration::from_secs(3),
        };
        let mut rest = RestLag::new();
        rest.insert("a".into(), sample(at, Some(150 * MB), None));
        rest.insert("b".into(), sample(at, None, Some(120 * MB)));
        let previous = Topology::from_cluster(&state(), &Topology::default(), MB);
        assert_eq!(names(&previous), ["b"], "the DCS alone says caught up");
        let t = Topology::compute(&state(), &previous, &bounds, &rest, clock(at, 1000));
        assert_eq!(t.leader_position, Some(150 * MB));
        assert!(names(&t).is_empty(), "30 MB behind by REST");
        assert_eq!(t.lagging[0].lag_bytes, Some(30 * MB));
        assert_eq!(t.lagging[0].lag_source, "rest");
        // Four seconds later without new answers: back to the DCS view.
        let later = clock(at + Duration::from_secs(4), 1004);
        let t = Topology::compute(&state(), &t, &bounds, &rest, later);
        assert_eq!(names(&t), ["b"]);
        assert_eq!(t.replicas[0].lag_source, "dcs");
    }

    #[test]
    fn the_replay_delay_bound_has_hysteresis() {
        let at = Instant::now();
        let bounds = LagBounds {
            max_lag_bytes: 16 * MB,
            max_replay_delay: Some(Duration::from_secs(10)),
            rest_max_age: Duration::from_secs(3),
        };
        let mut rest = RestLag::new();
        rest.insert("a".into(), sample(at, Some(100 * MB), None));
        // Replay stopped at 99 MB; its last commit was at t=1000 s.
        rest.insert("b".into(), sample(at, None, Some(99 * MB)));
        let readable = Topology::from_cluster(&state(), &Topology::default(), MB);
        let at_wall = |secs| {
            let t = Topology::compute(&state(), &readable, &bounds, &rest, clock(at, secs));
            names(&t).len()
        };
        assert_eq!(at_wall(1010), 1, "a readable replica stays up to the bound");
        assert_eq!(at_wall(1011), 0, "and leaves above it");
        let out = Topology::compute(
            &state(),
            &Topology::default(),
            &bounds,
            &rest,
            clock(at, 1009),
        );
        assert!(names(&out).is_empty(), "a newcomer needs < 0.8 × the bound");
        assert_eq!(out.lagging[0].replay_delay_ms, Some(9000));
        let back = Topology::compute(&state(), &out, &bounds, &rest, clock(at, 1007));
        assert_eq!(names(&back), ["b"]);
        // Replay caught up with the leader: no delay whatever the last commit time.
        rest.insert("b".into(), sample(at, None, Some(100 * MB)));
        let t = Topology::compute(&state(), &out, &bounds, &rest, clock(at, 5000));
        assert_eq!(names(&t), ["b"]);
        assert_eq!(t.replicas[0].replay_delay_ms, Some(0));
    }
}
