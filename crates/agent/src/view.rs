//! Pure conversions from the adapters' types to the core's observation types.

use std::collections::BTreeMap;

use pgbaton_core::{
    DcsView, DocState, FailoverRequest, Initialize, LocalPg, MemberView, PeerView,
    ReplicaConnection, RunningPg, SyncKey,
};
use pgbaton_dcs::{ClusterState, MemberDoc};
use pgbaton_postgres::{DataDirState, PgStatus};
use serde_json::Value;

/// The cluster snapshot reduced to what the core decides with.
pub fn dcs_view(state: &ClusterState) -> DcsView {
    let initialize = match state.initialize.as_deref() {
        None => Initialize::Absent,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(id) => Initialize::SystemId(id),
            Err(_) => Initialize::ClaimedBy(v.to_string()),
        },
    };
    let members = state
        .members
        .iter()
        .map(|(name, doc)| (name.clone(), member_view(doc)))
        .collect();
    DcsView {
        initialize,
        leader: state.leader_name().map(str::to_string),
        members,
        leader_optime: state.leader_optime(),
        history: state.history.iter().map(|h| (h.timeline, h.lsn)).collect(),
        config_revision: state.config.as_ref().map(|c| c.mod_revision),
        failover: state.failover.as_ref().map(|f| FailoverRequest {
            leader: f.value.leader.clone(),
            candidate: f.value.member.clone(),
            scheduled_at_unix_ms: f.value.scheduled_at.as_deref().and_then(parse_time_ms),
            revision: f.mod_revision,
        }),
        sync: state.sync.as_ref().map(|s| SyncKey {
            leader: s.value.leader.clone(),
            members: s.value.members(),
            quorum: s.value.quorum,
        }),
        failsafe: state.failsafe.as_ref().map(|k| k.keys().cloned().collect()),
        leader_oldest_wal: state.status.as_ref().and_then(|s| s.oldest_wal_lsn),
        routers: state
            .routers
            .iter()
            .map(|(name, doc)| (name.clone(), doc.paused_for))
            .collect(),
    }
}

/// An ISO 8601 timestamp (Patroni writes `2026-11-26T15:00:00+00:00`) in Unix milliseconds.
pub fn parse_time_ms(text: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis().max(0) as u64)
}

fn member_view(doc: &MemberDoc) -> MemberView {
    MemberView {
        state: DocState::parse(&doc.state),
        is_primary: doc.is_primary_role(),
        is_standby_leader: doc.is_standby_leader_role(),
        lsn: doc.xlog_location,
        timeline: doc.timeline,
        // A member whose required watchdog is not usable cannot be promoted either.
        nofailover: doc.never_promote() || doc.watchdog_failed(),
        clonefrom: doc.tag_true("clonefrom"),
        replicatefrom: doc
            .tags
            .get("replicatefrom")
            .and_then(Value::as_str)
            .map(str::to_string),
        nosync: doc.tag_true("nosync"),
    }
}

/// A running server's status as the core sees it.
pub fn running_pg(status: &PgStatus) -> RunningPg {
    let lsn = if status.in_recovery {
        status
            .receive_lsn
            .unwrap_or(0)
            .max(status.replay_lsn.unwrap_or(0))
    } else {
        status.wal_lsn.unwrap_or(0)
    };
    RunningPg {
        system_id: status.system_identifier,
        in_recovery: status.in_recovery,
        timeline: status.timeline,
        lsn,
        streaming: status
            .wal_receiver
            .as_ref()
            .is_some_and(|w| w.is_streaming()),
        replicas: status
            .replication
            .iter()
            .map(|r| ReplicaConnection {
                name: r.application_name.clone(),
                streaming: r.state == "streaming",
                synchronous: matches!(r.sync_state.as_str(), "sync" | "quorum"),
                flush_lsn: r.flush_lsn,
            })
            .collect(),
    }
}

/// A data directory that is not running.
pub fn stopped_pg(state: &DataDirState) -> LocalPg {
    match state {
        DataDirState::Missing | DataDirState::Empty => LocalPg::NoData,
        DataDirState::Initialized(cd) => LocalPg::Stopped {
            system_id: cd.system_identifier,
            was_primary: cd.state.was_primary(),
            timeline: cd.timeline,
            lsn: cd.checkpoint_lsn,
        },
    }
}

/// A peer's `GET /patroni` answer.
pub fn peer_view(body: &Value) -> PeerView {
    let running = body.get("state").and_then(Value::as_str) == Some("running");
    let role = body.get("role").and_then(Value::as_str).unwrap_or("");
    let primary = matches!(role, "master" | "primary");
    let xlog = body.get("xlog");
    let get = |k: &str| xlog.and_then(|x| x.get(k)).and_then(Value::as_u64);
    let lsn = if primary {
        get("location")
    } else {
        match (get("received_location"), get("replayed_location")) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    };
    let nofailover = match body.get("tags").and_then(|t| t.get("nofailover")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    // Patroni 3.1: priority 0 means never promote; absent means 1.
    let failover_priority = body
        .get("tags")
        .and_then(|t| t.get("failover_priority"))
        .and_then(|p| {
            p.as_u64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
        })
        .map(|p| p.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(1);
    PeerView::Report {
        replica_running: running && !primary,
        primary_running: running && primary,
        lsn,
        timeline: body
            .get("timeline")
            .and_then(Value::as_u64)
            .map(|t| t as u32),
        // Patroni's failover_limitation: `watchdog_failed` (a required watchdog that is not
        // usable) keeps a peer from racing, so it must not hold the others back either.
        nofailover: nofailover
            || failover_priority == 0
            || body.get("watchdog_failed") == Some(&Value::Bool(true)),
        failover_priority,
        settled: body.get("pgbaton_no_leader_seen") == Some(&Value::Bool(true)),
        // How long before it answered the peer read its position; the caller adds the time
        // since it asked (`Agent::observe`).
        read_within_ms: body.get("pgbaton_position_age_ms").and_then(Value::as_u64),
    }
}

/// Members to ask for their position when the cluster has no leader (everyone but us).
pub fn peer_api_urls(state: &ClusterState, me: &str) -> BTreeMap<String, String> {
    state
        .members
        .iter()
        .filter(|(name, doc)| name.as_str() != me && !doc.api_url.is_empty())
        .map(|(name, doc)| (name.clone(), doc.api_url.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_view_reads_patroni_replica_json() {
        let body: Value = serde_json::from_str(
            r#"{"state": "running", "role": "replica", "xlog": {"received_location": 67404768, "replayed_location": 67404700, "paused": false}, "timeline": 3}"#,
        )
        .unwrap();
        assert_eq!(
            peer_view(&body),
            PeerView::Report {
                replica_running: true,
                primary_running: false,
                lsn: Some(67404768),
                timeline: Some(3),
                nofailover: false,
                failover_priority: 1,
                settled: false,
                read_within_ms: None,
            }
        );
    }

    #[test]
    fn a_peer_that_found_no_leader_key_reports_a_settled_position() {
        let body: Value = serde_json::from_str(
            r#"{"state": "running", "role": "replica", "xlog": {"received_location": 9, "replayed_location": 9}, "timeline": 1, "pgbaton_no_leader_seen": true}"#,
        )
        .unwrap();
        assert!(matches!(
            peer_view(&body),
            PeerView::Report { settled: true, .. }
        ));
    }

    #[test]
    fn a_peer_says_how_long_before_answering_it_read_its_position() {
        let body: Value = serde_json::from_str(
            r#"{"state": "running", "role": "replica", "xlog": {"received_location": 9, "replayed_location": 9}, "timeline": 1, "pgbaton_position_age_ms": 740}"#,
        )
        .unwrap();
        assert!(matches!(
            peer_view(&body),
            PeerView::Report {
                settled: false,
                read_within_ms: Some(740),
                ..
            }
        ));
    }

    #[test]
    fn a_peer_or_member_without_its_required_watchdog_may_not_be_promoted() {
        let body: Value = serde_json::from_str(
            r#"{"state": "running", "role": "replica", "xlog": {"received_location": 9, "replayed_location": 9}, "timeline": 1, "watchdog_failed": true}"#,
        )
        .unwrap();
        assert!(matches!(
            peer_view(&body),
            PeerView::Report {
                nofailover: true,
                ..
            }
        ));
        let doc: MemberDoc = serde_json::from_str(
            r#"{"conn_url": "postgres://h:5432/postgres", "api_url": "http://h:8008/patroni", "state": "running", "role": "replica", "watchdog_failed": true}"#,
        )
        .unwrap();
        assert!(member_view(&doc).nofailover);
    }

    #[test]
    fn initialize_claim_and_system_id() {
        let mut st = ClusterState {
            initialize: Some("node1".into()),
            ..Default::default()
        };
        assert_eq!(
            dcs_view(&st).initialize,
            Initialize::ClaimedBy("node1".into())
        );
        st.initialize = Some("7712492421097396467".into());
        assert_eq!(
            dcs_view(&st).initialize,
            Initialize::SystemId(7712492421097396467)
        );
    }
}
