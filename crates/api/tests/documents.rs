//! The JSON documents (`/patroni`, `/cluster`, `/history`, `/config`) against Patroni 3.0's
//! shapes as observed on this machine (PATRONI-COMPAT.md).

mod common;

use common::*;
use pgbaton_dcs::{HistoryEntry, Versioned};
use serde_json::{json, Value};

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn patroni_document_of_the_leader() {
    let body = get(&leader(), "/patroni").await.json();
    let want = json!({
        "state": "running",
        "postmaster_start_time": "2026-11-26 14:51:49.255275+00:00",
        "role": "master",
        "pgbaton_role": "primary",
        "server_version": 150008,
        "xlog": {"location": OPTIME},
        "timeline": 3,
        "replication": [{"usename": "replicator", "application_name": "node2", "client_addr": "127.0.0.1",
                         "state": "streaming", "sync_state": "async", "sync_priority": 0}],
        "dcs_last_seen": 1795704730,
        "database_system_identifier": "7712492421097396467",
        "patroni": {"version": env!("CARGO_PKG_VERSION"), "scope": "anchor", "name": "node1"}
    });
    assert_eq!(body, want);
}

#[tokio::test]
async fn patroni_document_of_a_replica_with_tags_and_flags() {
    let mut s = replica("node2", 0);
    s.tags.insert("nofailover".into(), Value::Bool(true));
    s.pending_restart = true;
    s.paused = true;
    s.cluster = Some(with_sync(cluster(), "node2"));
    let body = get(&s, "/patroni").await.json();
    assert_eq!(body["role"], "replica");
    assert_eq!(body["pgbaton_role"], "replica");
    assert_eq!(
        body["xlog"],
        json!({"received_location": OPTIME, "replayed_location": OPTIME,
               "replayed_timestamp": "2026-11-26 14:51:02.232496+00:00", "paused": false})
    );
    assert_eq!(body["tags"], json!({"nofailover": true}));
    assert_eq!(body["pending_restart"], true);
    assert_eq!(body["pause"], true);
    assert_eq!(body["sync_standby"], true);
    assert!(body.get("replication").is_none());
    assert_eq!(
        keys(&body),
        vec![
            "database_system_identifier",
            "dcs_last_seen",
            "patroni",
            "pause",
            "pending_restart",
            "pgbaton_role",
            "postmaster_start_time",
            "role",
            "server_version",
            "state",
            "sync_standby",
            "tags",
            "timeline",
            "xlog"
        ]
    );
}

#[tokio::test]
async fn patroni_document_omits_what_is_unknown() {
    let mut s = stopped("node3");
    s.cluster.as_mut().unwrap().leader = None;
    let body = get(&s, "/patroni").await.json();
    assert_eq!(
        body,
        json!({"state": "stopped", "role": "replica", "pgbaton_role": "unknown", "cluster_unlocked": true,
               "patroni": {"version": env!("CARGO_PKG_VERSION"), "scope": "anchor", "name": "node3"}})
    );
}

#[tokio::test]
async fn patroni_document_says_when_failsafe_mode_is_in_force() {
    let mut s = leader();
    assert!(get(&s, "/patroni")
        .await
        .json()
        .get("failsafe_mode_is_active")
        .is_none());
    s.failsafe_active = true;
    let body = get(&s, "/patroni").await.json();
    assert_eq!(body["failsafe_mode_is_active"], json!(true), "{body}");
    let text = get(&s, "/metrics").await.text();
    assert!(
        text.lines()
            .any(|l| l == r#"patroni_failsafe_mode_is_active{scope="anchor",name="node1"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn cluster_document_computes_lag_against_the_leader_optime() {
    let mut s = replica("node2", 0);
    let mut state = with_sync(cluster(), "node2");
    state
        .members
        .get_mut("node3")
        .unwrap()
        .tags
        .insert("nofailover".into(), Value::Bool(true));
    let mut stopped_member = state.members["node3"].clone();
    stopped_member.state = "stopped".into();
    stopped_member.xlog_location = None;
    stopped_member.tags.clear();
    state.members.insert("node4".into(), stopped_member);
    s.cluster = Some(state);
    let body = get(&s, "/cluster").await.json();
    let want = json!({
        "scope": "anchor",
        "members": [
            {"name": "node1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni",
             "host": "127.0.0.1", "port": 5441, "timeline": 3},
            {"name": "node2", "role": "sync_standby", "state": "running", "api_url": "http://127.0.0.1:8009/patroni",
             "host": "127.0.0.1", "port": 5442, "timeline": 3, "lag": 0},
            {"name": "node3", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:8010/patroni",
             "host": "127.0.0.1", "port": 5443, "timeline": 3, "lag": 3 * MB, "tags": {"nofailover": true}},
            {"name": "node4", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:8010/patroni",
             "host": "127.0.0.1", "port": 5443, "timeline": 3, "lag": "unknown"}
        ]
    });
    assert_eq!(body, want);
}

#[tokio::test]
async fn cluster_document_shows_pause_and_scheduled_switchover() {
    let mut s = leader();
    let state = s.cluster.as_mut().unwrap();
    state.config = Some(Versioned {
        value: json!({"ttl": 30, "pause": true}),
        mod_revision: 2,
    });
    state.failover = Some(Versioned {
        value: pgbaton_dcs::FailoverDoc {
            leader: Some("node1".into()),
            member: Some("node2".into()),
            scheduled_at: Some("2026-11-27T10:00:00+00:00".into()),
            ..Default::default()
        },
        mod_revision: 3,
    });
    let body = get(&s, "/cluster").await.json();
    assert_eq!(body["pause"], true);
    assert_eq!(
        body["scheduled_switchover"],
        json!({"at": "2026-11-27T10:00:00+00:00", "from": "node1", "to": "node2"})
    );
    let none = get(
        &pgbaton_api::NodeStatus::starting("anchor", "node1", 30_000),
        "/cluster",
    )
    .await
    .json();
    assert_eq!(none, json!({"members": [], "scope": "anchor"}));
}

/// How old the reported position is: read after PostgreSQL was asked, rounded up to the
/// millisecond (a quorum candidate compares it with when it found the leader key gone).
#[tokio::test]
async fn patroni_document_says_how_old_the_position_is() {
    let mut s = replica("node2", 0);
    assert!(get(&s, "/patroni")
        .await
        .json()
        .get("pgbaton_position_age_ms")
        .is_none());
    let asked = tokio::time::Instant::now() - std::time::Duration::from_micros(740_200);
    s.positions_read_at = Some(asked);
    let body = get(&s, "/patroni").await.json();
    let age = body["pgbaton_position_age_ms"]
        .as_u64()
        .expect("an age in ms");
    let bound = asked.elapsed().as_micros().div_ceil(1000) as u64;
    assert!((741..=bound).contains(&age), "{age} ms, {bound} ms at most");
}

#[tokio::test]
async fn history_and_config_documents() {
    let mut s = leader();
    let text = r#"[[1,67271592,"no recovery target specified","2026-11-26T14:50:25.970867+00:00","node2"],[2,67404312,"no recovery target specified"]]"#;
    s.cluster.as_mut().unwrap().history = HistoryEntry::parse_list(text);
    assert_eq!(
        get(&s, "/history").await.json(),
        serde_json::from_str::<Value>(text).unwrap()
    );
    assert_eq!(get(&s, "/config").await.json(), json!({}));
    s.cluster.as_mut().unwrap().config = Some(Versioned {
        value: json!({"ttl": 30, "postgresql": {"use_slots": true}}),
        mod_revision: 2,
    });
    assert_eq!(
        get(&s, "/config").await.json(),
        json!({"ttl": 30, "postgresql": {"use_slots": true}})
    );
}
