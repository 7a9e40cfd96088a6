//! Status codes of the health-check endpoints, driven through the Router.

mod common;

use axum::http::Method;
use common::*;
use serde_json::Value;

async fn codes(status: &pgbaton_api::NodeStatus, paths: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for path in paths {
        out.push(code(status, path).await);
    }
    out
}

const TABLE: &[&str] = &[
    "/primary",
    "/replica",
    "/read-only",
    "/health",
    "/liveness",
    "/readiness",
    "/leader",
];

#[tokio::test]
async fn leader_and_replica_answer_like_patroni() {
    // PATRONI-COMPAT.md, leader / replica: /primary 200/503, /replica 503/200, /read-only
    // 200/200, /health 200/200, /liveness 200/200, /readiness 200/200, /leader 200/503.
    assert_eq!(
        codes(&leader(), TABLE).await,
        vec![200, 503, 200, 200, 200, 200, 200]
    );
    assert_eq!(
        codes(&replica("node2", 0), TABLE).await,
        vec![503, 200, 200, 200, 200, 200, 503]
    );
    for alias in ["/", "/master", "/read-write"] {
        assert_eq!(code(&leader(), alias).await, 200, "{alias}");
        assert_eq!(code(&replica("node2", 0), alias).await, 503, "{alias}");
    }
    assert_eq!(code(&leader(), "/standby-leader").await, 503);
}

#[tokio::test]
async fn a_standby_leader_is_leader_and_standby_leader_not_primary_nor_replica() {
    // A standby cluster's leader: it holds the key and replicates the remote primary.
    let mut s = replica("node1", 0);
    s.holds_leader_key = true;
    s.standby_leader = true;
    assert_eq!(
        codes(&s, TABLE).await,
        vec![503, 503, 200, 200, 200, 200, 200]
    );
    assert_eq!(code(&s, "/standby-leader").await, 200);
    assert_eq!(code(&s, "/standby_leader").await, 200);
    assert_eq!(code(&replica("node2", 0), "/standby-leader").await, 503);
    let body: Value = serde_json::from_slice(&get(&s, "/patroni").await.body).expect("JSON");
    assert_eq!(body["role"], "standby_leader");
}

#[tokio::test]
async fn stopped_member_is_unhealthy_but_alive() {
    assert_eq!(
        codes(&stopped("node3"), TABLE).await,
        vec![503, 503, 503, 503, 200, 503, 503]
    );
}

#[tokio::test]
async fn leader_key_without_writable_postgres_is_not_primary() {
    // Patroni answers 200 here; pgbaton does not (a primary that cannot take writes yet).
    let mut s = leader();
    s.writable_leader = false;
    assert_eq!(code(&s, "/primary").await, 503);
    assert_eq!(code(&s, "/leader").await, 200);
    assert_eq!(code(&s, "/readiness").await, 503);
    s.pg_running = false;
    assert_eq!(code(&s, "/leader").await, 503);
}

#[tokio::test]
async fn noloadbalance_takes_a_replica_out_of_replica_but_not_read_only() {
    let mut s = replica("node2", 0);
    s.tags.insert("noloadbalance".into(), Value::Bool(true));
    assert_eq!(code(&s, "/replica").await, 503);
    assert_eq!(code(&s, "/read-only").await, 200);
    s.tags.insert("noloadbalance".into(), Value::from("false"));
    assert_eq!(code(&s, "/replica").await, 200);
}

#[tokio::test]
async fn lag_filter_compares_with_the_leader_optime() {
    let s = replica("node3", 3 * MB);
    assert_eq!(code(&s, "/replica?lag=1MB").await, 503);
    assert_eq!(code(&s, "/replica?lag=3MB").await, 200);
    assert_eq!(code(&s, "/replica?lag=10MB").await, 200);
    assert_eq!(code(&s, "/replica?lag=1048576").await, 503);
    assert_eq!(code(&s, "/replica?lag=16kB").await, 503);
    assert_eq!(code(&s, "/replica?lag=1GB").await, 200);
    assert_eq!(code(&s, "/read-only?lag=1MB").await, 503);
    assert_eq!(code(&s, "/readiness?lag=1MB").await, 503);
    assert_eq!(code(&s, "/readiness?lag=4MB").await, 200);
    // The larger of received and replayed counts: WAL received but not yet replayed is not lag.
    let mut received = s.clone();
    received.received_location = Some(OPTIME);
    assert_eq!(code(&received, "/replica?lag=1MB").await, 200);
    // Unknown leader optime: within any bound.
    let mut unknown = s.clone();
    let cluster = unknown.cluster.as_mut().unwrap();
    cluster.status = None;
    cluster.members.get_mut("node1").unwrap().xlog_location = None;
    assert_eq!(code(&unknown, "/replica?lag=0").await, 200);
}

#[tokio::test]
async fn bad_lag_is_a_400_naming_the_accepted_forms() {
    let reply = get(&replica("node2", 0), "/replica?lag=10XB").await;
    assert_eq!(reply.code.as_u16(), 400);
    assert!(
        reply.text().contains("invalid lag \"10XB\""),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("16MB"), "{}", reply.text());
}

#[tokio::test]
async fn replication_state_filter() {
    let mut s = replica("node2", 0);
    assert_eq!(code(&s, "/replica?replication_state=streaming").await, 200);
    s.replication_state = None;
    assert_eq!(code(&s, "/replica?replication_state=streaming").await, 503);
    assert_eq!(code(&s, "/replica").await, 200);
    assert_eq!(code(&s, "/readiness").await, 503);
}

#[tokio::test]
async fn tag_filters_compare_strings_and_bool_words() {
    let mut s = replica("node2", 0);
    s.tags.insert("zone".into(), Value::from("a"));
    s.tags.insert("nosync".into(), Value::Bool(true));
    s.tags.insert("weight".into(), Value::from(3));
    assert_eq!(code(&s, "/replica?tag_zone=a").await, 200);
    assert_eq!(code(&s, "/replica?tag_zone=b").await, 503);
    assert_eq!(code(&s, "/replica?tag_nosync=true").await, 200);
    assert_eq!(code(&s, "/replica?tag_nosync=True").await, 200);
    assert_eq!(code(&s, "/replica?tag_nosync=false").await, 503);
    assert_eq!(code(&s, "/replica?tag_weight=3").await, 200);
    assert_eq!(code(&s, "/replica?tag_missing=x").await, 503);
    assert_eq!(
        code(&s, "/replica?tag_zone=a&tag_nosync=yes&lag=1MB").await,
        200
    );
}

#[tokio::test]
async fn sync_and_async_follow_the_sync_key() {
    let mut sync = replica("node2", 0);
    sync.cluster = Some(with_sync(cluster(), "node2"));
    let mut other = replica("node3", 0);
    other.cluster = sync.cluster.clone();
    let mut primary = leader();
    primary.cluster = sync.cluster.clone();
    for (path, want) in [
        ("/sync", [503, 200, 503]),
        ("/synchronous", [503, 200, 503]),
        ("/async", [503, 503, 200]),
        ("/asynchronous", [503, 503, 200]),
        ("/read-only-sync", [200, 200, 503]),
    ] {
        assert_eq!(
            [
                code(&primary, path).await,
                code(&sync, path).await,
                code(&other, path).await
            ],
            want,
            "{path}"
        );
    }
}

#[tokio::test]
async fn liveness_goes_stale_after_ttl_on_leader_and_twice_ttl_elsewhere() {
    let now = now_ms();
    let mut l = leader();
    l.last_cycle_unix_ms = now - 20_000;
    assert_eq!(code(&l, "/liveness").await, 200);
    l.last_cycle_unix_ms = now - 31_000;
    assert_eq!(code(&l, "/liveness").await, 503);
    let mut r = replica("node2", 0);
    r.last_cycle_unix_ms = now - 31_000;
    assert_eq!(code(&r, "/liveness").await, 200);
    r.last_cycle_unix_ms = now - 61_000;
    assert_eq!(code(&r, "/liveness").await, 503);
    let never = pgbaton_api::NodeStatus::starting("anchor", "node9", 30_000);
    assert_eq!(code(&never, "/liveness").await, 503);
}

#[tokio::test]
async fn head_and_options_return_the_code_without_a_body() {
    for method in [Method::HEAD, Method::OPTIONS] {
        let reply = request(&leader(), method.clone(), "/primary").await;
        assert_eq!(reply.code.as_u16(), 200);
        assert!(reply.body.is_empty(), "{method}");
        let reply = request(&replica("node2", 0), method.clone(), "/primary").await;
        assert_eq!(reply.code.as_u16(), 503);
        assert!(reply.body.is_empty(), "{method}");
        let reply = request(&leader(), method.clone(), "/metrics").await;
        assert_eq!(reply.code.as_u16(), 200);
        assert!(reply.body.is_empty(), "{method}");
    }
}

#[tokio::test]
async fn check_bodies_are_the_patroni_document() {
    let reply = get(&replica("node2", 0), "/primary").await;
    assert_eq!(reply.code.as_u16(), 503);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    assert_eq!(reply.json()["role"], "replica");
}

#[tokio::test]
async fn unknown_path_is_404_with_a_reason_and_wrong_methods_are_405() {
    let reply = get(&leader(), "/no-such-thing").await;
    assert_eq!(reply.code.as_u16(), 404);
    assert_eq!(reply.json()["error"], "no such endpoint: /no-such-thing");
    // /switchover is a write endpoint: POST and DELETE only.
    let reply = get(&leader(), "/switchover").await;
    assert_eq!(reply.code.as_u16(), 405);
    let reply = request(&leader(), Method::POST, "/primary").await;
    assert_eq!(reply.code.as_u16(), 405);
}
