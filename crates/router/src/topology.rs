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
//!   and streaming replicas stay readable.

use std::collections::BTreeSet;

use pgbaton_dcs::{ClusterState, MemberDoc};
use serde::Serialize;

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
}

/// The router's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub leader: Option<Backend>,
    pub replicas: Vec<Replica>,
    /// The leader's WAL position the lags are measured against.
    pub leader_position: Option<u64>,
    /// The etcd revision of the snapshot.
    pub revision: i64,
}

/// A replica that was readable stays so up to `max_lag`; a new one joins below this.
pub fn rejoin_threshold(max_lag: u64) -> u64 {
    max_lag / 5 * 4 + (max_lag % 5) * 4 / 5
}

impl Topology {
    pub fn from_cluster(state: &ClusterState, previous: &Topology, max_lag: u64) -> Topology {
        let leader = state.leader_name().and_then(|name| {
            let doc = state.members.get(name)?;
            let serving = doc.state == "running" && doc.is_primary_role();
            serving.then(|| Backend::of(name, doc)).flatten()
        });
        let leader_position = leader.as_ref().and_then(|_| state.leader_optime());
        let was_readable: BTreeSet<&str> = previous
            .replicas
            .iter()
            .map(|r| r.backend.name.as_str())
            .collect();
        let replicas = state
            .members
            .iter()
            .filter(|(name, _)| leader.as_ref().is_none_or(|l| &l.name != *name))
            .filter_map(|(name, doc)| {
                let eligible = doc.state == "running"
                    && !doc.is_primary_role()
                    && doc.replication_state.as_deref() == Some("streaming")
                    && !doc.tag_true("noloadbalance");
                if !eligible {
                    return None;
                }
                let position = doc.xlog_location?;
                let lag_bytes = leader_position.map(|l| l.saturating_sub(position));
                let bound = if was_readable.contains(name.as_str()) {
                    max_lag
                } else {
                    rejoin_threshold(max_lag)
                };
                let within = match lag_bytes {
                    Some(lag) if was_readable.contains(name.as_str()) => lag <= bound,
                    Some(lag) => lag < bound || lag == 0,
                    None => true,
                };
                within
                    .then(|| Backend::of(name, doc).map(|backend| Replica { backend, lag_bytes }))?
            })
            .collect();
        Topology {
            leader,
            replicas,
            leader_position,
            revision: state.revision,
        }
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
