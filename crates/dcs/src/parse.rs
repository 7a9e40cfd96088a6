//! Turning the raw keys and values read under a cluster prefix into a `ClusterState`.
//!
//! Shared by the etcd adapter and the in-memory store so both read exactly the same way.
//! Members whose document does not parse are skipped with a warning (one broken member must
//! not hide the cluster); `config` and `sync` must parse, because acting on a misread
//! configuration or synchronous state is unsafe; `status`, `history` and `failover` are
//! advisory and ignored with a warning when broken.

use serde::de::DeserializeOwned;

use crate::error::DcsError;
use crate::model::{
    keys, ClusterState, HistoryEntry, LeaderKey, MemberDoc, MoveDoc, RouterDoc, Versioned,
};

/// One key-value pair as the store returns it.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    /// The full key, including the cluster prefix.
    pub key: &'a str,
    pub value: &'a [u8],
    /// The lease the key is attached to (0 when none).
    pub lease: i64,
    pub mod_revision: i64,
}

/// What a key relative to the cluster prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Leader,
    Member(&'a str),
    Initialize,
    Config,
    History,
    Status,
    Sync,
    Failover,
    /// `failsafe`: the failsafe topology, `{"member": "api_url", ...}`.
    Failsafe,
    /// `routers/<name>`: a router registered for the cluster (pgbaton's addition).
    Router(&'a str),
    /// `move`: a move of the cluster's clients to another cluster (pgbaton's addition).
    Move,
    /// A key pgbaton does not read (e.g. Patroni's old `optime/leader`).
    Other,
}

/// Classify a full key; None when it is not under `prefix`.
pub fn classify<'a>(prefix: &str, key: &'a str) -> Option<KeyKind<'a>> {
    let relative = key.strip_prefix(prefix)?;
    Some(match relative {
        keys::LEADER => KeyKind::Leader,
        keys::INITIALIZE => KeyKind::Initialize,
        keys::CONFIG => KeyKind::Config,
        keys::HISTORY => KeyKind::History,
        keys::STATUS => KeyKind::Status,
        keys::SYNC => KeyKind::Sync,
        keys::FAILOVER => KeyKind::Failover,
        keys::FAILSAFE => KeyKind::Failsafe,
        keys::MOVE => KeyKind::Move,
        other => {
            let single = |name: &str| !name.is_empty() && !name.contains('/');
            match (
                other.strip_prefix(keys::MEMBERS),
                other.strip_prefix(keys::ROUTERS),
            ) {
                (Some(name), _) if single(name) => KeyKind::Member(name),
                (_, Some(name)) if single(name) => KeyKind::Router(name),
                _ => KeyKind::Other,
            }
        }
    })
}

fn text<'a>(entry: &RawEntry<'a>) -> Result<&'a str, DcsError> {
    std::str::from_utf8(entry.value).map_err(|e| DcsError::Corrupt {
        key: entry.key.to_string(),
        message: format!("not UTF-8 ({e}); rewrite or delete the key"),
    })
}

fn json<T: DeserializeOwned>(entry: &RawEntry<'_>) -> Result<T, DcsError> {
    serde_json::from_slice(entry.value).map_err(|e| DcsError::Corrupt {
        key: entry.key.to_string(),
        message: format!("not the expected JSON ({e}); rewrite or delete the key"),
    })
}

/// Log and drop an advisory value that does not parse.
fn lenient<T>(result: Result<T, DcsError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("ignoring it: {e}");
            None
        }
    }
}

/// Build the cluster state from every entry read under `prefix` at `revision`.
pub fn parse_cluster<'a>(
    prefix: &str,
    entries: impl IntoIterator<Item = RawEntry<'a>>,
    revision: i64,
) -> Result<ClusterState, DcsError> {
    let mut state = ClusterState {
        revision,
        ..ClusterState::default()
    };
    for entry in entries {
        let Some(kind) = classify(prefix, entry.key) else {
            continue;
        };
        match kind {
            KeyKind::Leader => {
                state.leader = Some(LeaderKey {
                    name: text(&entry)?.trim().to_string(),
                    lease_id: entry.lease,
                    mod_revision: entry.mod_revision,
                });
            }
            KeyKind::Member(name) => {
                if let Some(doc) = lenient(json::<MemberDoc>(&entry)) {
                    state.members.insert(name.to_string(), doc);
                }
            }
            KeyKind::Initialize => state.initialize = Some(text(&entry)?.trim().to_string()),
            KeyKind::Config => {
                let value: serde_json::Value = json(&entry)?;
                if !value.is_object() {
                    return Err(DcsError::Corrupt {
                        key: entry.key.to_string(),
                        message: "not a JSON object; rewrite or delete the key".to_string(),
                    });
                }
                state.config = Some(Versioned {
                    value,
                    mod_revision: entry.mod_revision,
                });
            }
            KeyKind::History => {
                if let Some(t) = lenient(text(&entry)) {
                    state.history = HistoryEntry::parse_list(t);
                }
            }
            KeyKind::Status => state.status = lenient(json(&entry)),
            KeyKind::Sync => {
                state.sync = Some(Versioned {
                    value: json(&entry)?,
                    mod_revision: entry.mod_revision,
                });
            }
            KeyKind::Failover => {
                state.failover = lenient(json(&entry)).map(|value| Versioned {
                    value,
                    mod_revision: entry.mod_revision,
                });
            }
            // Unreadable: as if absent (every member then reads it the same way).
            KeyKind::Failsafe => state.failsafe = lenient(json(&entry)),
            // A router whose key does not parse still counts: it has acknowledged nothing
            // (so a leader waits for it, within switchover_drain_timeout).
            KeyKind::Router(name) => {
                let doc = lenient(json::<RouterDoc>(&entry)).unwrap_or_default();
                state.routers.insert(name.to_string(), doc);
            }
            KeyKind::Move => {
                state.moving = lenient(json::<MoveDoc>(&entry)).map(|value| Versioned {
                    value,
                    mod_revision: entry.mod_revision,
                });
            }
            KeyKind::Other => {}
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/service/c/";

    fn e<'a>(key: &'a str, value: &'a str) -> RawEntry<'a> {
        RawEntry {
            key,
            value: value.as_bytes(),
            lease: 7,
            mod_revision: 3,
        }
    }

    #[test]
    fn classifies_patroni_keys() {
        assert_eq!(classify(P, "/service/c/leader"), Some(KeyKind::Leader));
        assert_eq!(
            classify(P, "/service/c/members/n1"),
            Some(KeyKind::Member("n1"))
        );
        assert_eq!(classify(P, "/service/c/members/"), Some(KeyKind::Other));
        assert_eq!(classify(P, "/service/c/members/a/b"), Some(KeyKind::Other));
        assert_eq!(
            classify(P, "/service/c/initialize"),
            Some(KeyKind::Initialize)
        );
        assert_eq!(classify(P, "/service/c/config"), Some(KeyKind::Config));
        assert_eq!(classify(P, "/service/c/history"), Some(KeyKind::History));
        assert_eq!(classify(P, "/service/c/status"), Some(KeyKind::Status));
        assert_eq!(classify(P, "/service/c/sync"), Some(KeyKind::Sync));
        assert_eq!(classify(P, "/service/c/failover"), Some(KeyKind::Failover));
        assert_eq!(classify(P, "/service/c/failsafe"), Some(KeyKind::Failsafe));
        assert_eq!(
            classify(P, "/service/c/optime/leader"),
            Some(KeyKind::Other)
        );
        assert_eq!(classify(P, "/service/other/leader"), None);
        assert_eq!(classify(P, "/service/cc/leader"), None);
    }

    #[test]
    fn parses_the_state_patroni_wrote() {
        let member = r#"{"conn_url":"postgres://127.0.0.1:5441/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67404768,"timeline":3}"#;
        let history = r#"[[1,67271592,"no recovery target specified","2026-11-26T14:50:25.970867+00:00","node2"]]"#;
        let entries = vec![
            e("/service/c/leader", "node1"),
            e("/service/c/initialize", "7712492421097396467"),
            e("/service/c/status", r#"{"optime":67404768}"#),
            e("/service/c/history", history),
            e("/service/c/members/node1", member),
            e("/service/c/config", r#"{"ttl":30,"loop_wait":10}"#),
            e(
                "/service/c/sync",
                r#"{"leader":"node1","sync_standby":"node2"}"#,
            ),
            e(
                "/service/c/failover",
                r#"{"leader":"node1","member":"node2"}"#,
            ),
            e("/service/c/failsafe", r#"{"node1":"x"}"#),
        ];
        let s = parse_cluster(P, entries, 42).expect("parses");
        assert_eq!(s.revision, 42);
        assert_eq!(
            s.leader,
            Some(LeaderKey {
                name: "node1".into(),
                lease_id: 7,
                mod_revision: 3
            })
        );
        assert_eq!(s.initialize.as_deref(), Some("7712492421097396467"));
        assert_eq!(s.status.as_ref().and_then(|x| x.optime), Some(67404768));
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.members["node1"].timeline, Some(3));
        assert_eq!(s.config.as_ref().map(|c| c.mod_revision), Some(3));
        assert_eq!(
            s.sync.as_ref().map(|x| x.value.members()),
            Some(vec!["node2".to_string()])
        );
        assert_eq!(
            s.failover.as_ref().and_then(|f| f.value.member.clone()),
            Some("node2".into())
        );
        assert_eq!(s.leader_optime(), Some(67404768));
        assert_eq!(
            s.failsafe,
            Some([("node1".to_string(), "x".to_string())].into())
        );
    }

    #[test]
    fn a_broken_member_is_skipped_but_others_are_kept() {
        let entries = vec![
            e("/service/c/members/bad", "{not json"),
            e(
                "/service/c/members/good",
                r#"{"conn_url":"","api_url":"","state":"running","role":"replica"}"#,
            ),
            e("/service/c/status", "garbage"),
            e("/service/c/failover", "garbage"),
        ];
        let s = parse_cluster(P, entries, 1).expect("parses");
        assert_eq!(s.members.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(s.status, None);
        assert_eq!(s.failover, None);
    }

    #[test]
    fn a_move_is_read_with_its_revision_and_an_unreadable_one_is_absent() {
        let s = parse_cluster(
            P,
            vec![e(
                "/service/c/move",
                r#"{"to":"other","state":"holding","started_at":"x"}"#,
            )],
            1,
        )
        .expect("parses");
        assert_eq!(classify(P, "/service/c/move"), Some(KeyKind::Move));
        let moving = s.moving.expect("a move");
        assert_eq!(moving.value.to, "other");
        assert_eq!(moving.value.state, crate::model::MoveState::Holding);
        assert_eq!(moving.value.extra["started_at"], "x");
        let s = parse_cluster(
            P,
            vec![e("/service/c/move", r#"{"to":"x","state":"?"}"#)],
            1,
        )
        .expect("parses");
        assert_eq!(s.moving, None);
    }

    #[test]
    fn routers_are_read_and_a_broken_one_counts_as_unacknowledged() {
        let entries = vec![
            e(
                "/service/c/routers/r1",
                r#"{"paused_for":17,"version":"x"}"#,
            ),
            e("/service/c/routers/r2", "{}"),
            e("/service/c/routers/r3", "garbage"),
            e("/service/c/routers/a/b", "{}"),
        ];
        assert_eq!(
            classify(P, "/service/c/routers/r1"),
            Some(KeyKind::Router("r1"))
        );
        assert_eq!(classify(P, "/service/c/routers/"), Some(KeyKind::Other));
        let s = parse_cluster(P, entries, 1).expect("parses");
        assert_eq!(s.routers.keys().collect::<Vec<_>>(), vec!["r1", "r2", "r3"]);
        assert_eq!(s.routers["r1"].paused_for, Some(17));
        assert_eq!(s.routers["r2"].paused_for, None);
        assert_eq!(s.routers["r3"].paused_for, None);
    }

    #[test]
    fn broken_config_or_sync_is_corrupt_and_names_the_key() {
        for (key, value) in [
            ("/service/c/config", "{oops"),
            ("/service/c/config", "[1]"),
            ("/service/c/sync", "nope"),
        ] {
            match parse_cluster(P, vec![e(key, value)], 1) {
                Err(DcsError::Corrupt { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected Corrupt for {key}={value}, got {other:?}"),
            }
        }
    }

    #[test]
    fn keys_of_other_clusters_are_ignored() {
        let s = parse_cluster(P, vec![e("/service/c2/leader", "x"), e("/other", "y")], 5)
            .expect("parses");
        assert_eq!(
            s,
            ClusterState {
                revision: 5,
                ..ClusterState::default()
            }
        );
    }
}
