//! NodeStatus fixtures shaped like the Patroni 3.0.2 cluster observed on this machine, and
//! a helper that drives one request through the Router without a socket.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use pgbaton_api::{router, NodeStatus, PgRole, ReplicationRow};
use pgbaton_dcs::{ClusterState, LeaderKey, MemberDoc, StatusDoc, SyncDoc, Versioned};
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

pub const OPTIME: u64 = 67404768;
pub const MB: u64 = 1024 * 1024;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn member(port: u16, role: &str, xlog: Option<u64>) -> MemberDoc {
    MemberDoc {
        conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
        api_url: format!("http://127.0.0.1:{}/patroni", port + 2567),
        state: "running".into(),
        role: role.into(),
        version: "0.1.0".into(),
        xlog_location: xlog,
        timeline: Some(3),
        ..MemberDoc::default()
    }
}

/// node1 leads at OPTIME; node2 is level with it; node3 is 3 MB behind.
pub fn cluster() -> ClusterState {
    let mut state = ClusterState {
        initialize: Some("7712492421097396467".into()),
        leader: Some(LeaderKey {
            name: "node1".into(),
            lease_id: 7,
            mod_revision: 4,
        }),
        status: Some(StatusDoc {
            optime: Some(OPTIME),
            ..StatusDoc::default()
        }),
        ..ClusterState::default()
    };
    state
        .members
        .insert("node1".into(), member(5441, "master", Some(OPTIME)));
    state
        .members
        .insert("node2".into(), member(5442, "replica", Some(OPTIME)));
    state.members.insert(
        "node3".into(),
        member(5443, "replica", Some(OPTIME - 3 * MB)),
    );
    state
}

pub fn with_sync(mut state: ClusterState, standbys: &str) -> ClusterState {
    state.sync = Some(Versioned {
        value: SyncDoc {
            leader: Some("node1".into()),
            sync_standby: Some(standbys.into()),
            ..SyncDoc::default()
        },
        mod_revision: 8,
    });
    state
}

fn base(name: &str) -> NodeStatus {
    let mut s = NodeStatus::starting("anchor", name, 30_000);
    s.state = "running".into();
    s.pg_running = true;
    s.server_version = Some(150008);
    s.timeline = Some(3);
    s.postmaster_start_time = Some("2026-11-26 14:51:49.255275+00:00".into());
    s.system_identifier = Some("7712492421097396467".into());
    s.dcs_last_seen = Some(1795704730);
    s.last_cycle_unix_ms = now_ms();
    s.cluster = Some(cluster());
    s
}

pub fn leader() -> NodeStatus {
    let mut s = base("node1");
    s.pg_role = PgRole::Primary;
    s.writable_leader = true;
    s.holds_leader_key = true;
    s.wal_position = Some(OPTIME);
    s.replication = vec![ReplicationRow {
        usename: "replicator".into(),
        application_name: "node2".into(),
        client_addr: Some("127.0.0.1".into()),
        state: "streaming".into(),
        sync_state: "async".into(),
        sync_priority: 0,
        replay_lag_bytes: Some(0),
    }];
    s
}

/// A streaming replica `lag` bytes behind the leader optime.
pub fn replica(name: &str, lag: u64) -> NodeStatus {
    let mut s = base(name);
    s.pg_role = PgRole::Replica;
    s.received_location = Some(OPTIME - lag);
    s.replayed_location = Some(OPTIME - lag);
    s.replayed_timestamp = Some("2026-11-26 14:51:02.232496+00:00".into());
    s.replication_state = Some("streaming".into());
    s
}

pub fn stopped(name: &str) -> NodeStatus {
    let mut s = NodeStatus::starting("anchor", name, 30_000);
    s.state = "stopped".into();
    s.last_cycle_unix_ms = now_ms();
    s.cluster = Some(cluster());
    s
}

pub struct Reply {
    pub code: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

pub async fn request(status: &NodeStatus, method: Method, uri: &str) -> Reply {
    let (_tx, rx) = watch::channel(status.clone());
    let response = router(rx, None, None)
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let code = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        code,
        content_type,
        body,
    }
}

pub async fn get(status: &NodeStatus, uri: &str) -> Reply {
    request(status, Method::GET, uri).await
}

/// The status code of GET `uri`.
pub async fn code(status: &NodeStatus, uri: &str) -> u16 {
    get(status, uri).await.code.as_u16()
}
