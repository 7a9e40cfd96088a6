//! Tests specific to etcd: a stopped or absent server, the process harness, and the raw key
//! layout (what Patroni's tools read and write) seen through etcd's own client.

mod support;

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use pgbaton_dcs::{list_scopes, load_cluster, ClusterPath, Dcs, DcsError, EtcdDcs, MemberDoc};
use support::{cluster_path, free_port, start_etcd};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(1);

fn assert_unreachable_naming(error: &DcsError, endpoint: &str) {
    assert!(
        matches!(error, DcsError::Unreachable { .. }),
        "expected Unreachable, got {error:?}"
    );
    assert!(
        error.to_string().contains(endpoint),
        "the message must name {endpoint}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_a_stopped_etcd_is_unreachable_in_time() {
    let (mut etcd, _dir) = start_etcd().await;
    let endpoint = etcd.endpoint();
    let dcs = EtcdDcs::new(
        vec![endpoint.clone()],
        cluster_path(),
        "a",
        Duration::from_secs(2),
        TIMEOUT,
    );
    dcs.load().await.expect("load while etcd runs");
    etcd.stop();
    for _ in 0..2 {
        let started = Instant::now();
        let error = dcs.load().await.expect_err("etcd is stopped");
        assert!(
            started.elapsed() <= TIMEOUT + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_unreachable_naming(&error, &endpoint);
    }
    let started = Instant::now();
    let error = load_cluster(std::slice::from_ref(&endpoint), &cluster_path(), TIMEOUT)
        .await
        .expect_err("etcd is stopped");
    assert!(started.elapsed() <= TIMEOUT + Duration::from_secs(1));
    assert_unreachable_naming(&error, &endpoint);
}

#[tokio::test]
async fn a_handle_on_a_port_without_etcd_is_created_and_fails_per_call() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let dcs = EtcdDcs::new(
        vec![endpoint.clone()],
        cluster_path(),
        "a",
        Duration::from_secs(2),
        TIMEOUT,
    );
    let started = Instant::now();
    assert_unreachable_naming(
        &dcs.keepalive().await.expect_err("nothing listens"),
        &endpoint,
    );
    assert_unreachable_naming(
        &dcs.acquire_leader().await.expect_err("nothing listens"),
        &endpoint,
    );
    assert!(started.elapsed() <= 2 * TIMEOUT + Duration::from_secs(1));
}

#[tokio::test]
async fn the_etcd_process_is_killed_on_drop() {
    let (etcd, dir) = start_etcd().await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(etcd.pid()).expect("pid fits"));
    assert!(nix::sys::signal::kill(pid, None).is_ok(), "etcd runs");
    assert!(
        dir.path().join("etcd.log").exists(),
        "etcd logs to dir/etcd.log"
    );
    drop(etcd);
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "etcd was killed and reaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_in_patroni_layout() {
    let (etcd, _dir) = start_etcd().await;
    let path = ClusterPath::new("service", "anchor");
    let dcs = EtcdDcs::new(
        vec![etcd.endpoint()],
        path.clone(),
        "node1",
        Duration::from_millis(1500),
        TIMEOUT,
    );
    let member = MemberDoc {
        conn_url: "postgres://127.0.0.1:5441/postgres".into(),
        role: "master".into(),
        ..MemberDoc::default()
    };
    dcs.touch_member(&member).await.expect("touch");
    assert!(dcs.acquire_leader().await.expect("acquire"));
    assert!(dcs
        .claim_initialize("7712492421097396467")
        .await
        .expect("initialize"));
    let ack = dcs.keepalive().await.expect("keepalive");
    assert_eq!(
        ack.ttl,
        Duration::from_secs(2),
        "ttl is rounded up to whole seconds"
    );

    let mut raw = Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw client");
    let leader = raw
        .get("/service/anchor/leader", None)
        .await
        .expect("get leader");
    let leader = &leader.kvs()[0];
    assert_eq!(
        leader.value_str().expect("utf-8"),
        "node1",
        "the leader key holds the plain member name"
    );
    let member_kv = raw
        .get("/service/anchor/members/node1", None)
        .await
        .expect("get member");
    let member_kv = &member_kv.kvs()[0];
    assert_eq!(
        member_kv.lease(),
        leader.lease(),
        "member and leader keys share the agent's lease"
    );
    assert_eq!(leader.lease(), ack.lease_id);
    let doc: serde_json::Value = serde_json::from_slice(member_kv.value()).expect("member JSON");
    assert_eq!(doc["role"], "master");
    let init = raw
        .get("/service/anchor/initialize", None)
        .await
        .expect("get initialize");
    assert_eq!(
        init.kvs()[0].value_str().expect("utf-8"),
        "7712492421097396467"
    );
    assert_eq!(
        init.kvs()[0].lease(),
        0,
        "initialize is not attached to a lease"
    );

    // What Patroni 3.0.2 wrote on this machine reads back through `load`.
    raw.put("/service/anchor/status", r#"{"optime":67404768}"#, None)
        .await
        .expect("put");
    raw.put("/service/anchor/members/node2", r#"{"conn_url":"postgres://127.0.0.1:5442/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"3.0.2","xlog_location":67404768,"timeline":3}"#, None).await.expect("put");
    raw.put(
        "/service/anchor/config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#,
        None,
    )
    .await
    .expect("put");
    raw.put("/service/other/leader", "x", None)
        .await
        .expect("put");
    let state = dcs.load().await.expect("load");
    assert_eq!(state.leader_name(), Some("node1"));
    assert_eq!(state.members["node2"].timeline, Some(3));
    assert_eq!(state.status.and_then(|s| s.optime), Some(67404768));
    assert_eq!(
        state.config.map(|c| c.value["ttl"].clone()),
        Some(serde_json::json!(30))
    );
    let all = raw
        .get(
            "/service/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    assert!(all.count() >= 6);

    let scopes = list_scopes(&[etcd.endpoint()], "/service/", TIMEOUT)
        .await
        .expect("scopes");
    assert_eq!(scopes, vec!["anchor".to_string(), "other".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_a_lease_expiry() {
    let (etcd, _dir) = start_etcd().await;
    let a = EtcdDcs::new(
        vec![etcd.endpoint()],
        cluster_path(),
        "a",
        Duration::from_secs(2),
        TIMEOUT,
    );
    let b = EtcdDcs::new(
        vec![etcd.endpoint()],
        cluster_path(),
        "b",
        Duration::from_secs(2),
        TIMEOUT,
    );
    let mut rx = b.subscribe();
    assert!(a.acquire_leader().await.expect("acquire"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the leader key of an unrenewed lease did not vanish"
        );
        if tokio::time::timeout(left, rx.changed()).await.is_ok()
            && b.load().await.expect("load").leader.is_none()
        {
            break;
        }
    }
}

/// With several endpoints, a dead one costs at most one failed call: the adapter moves on to
/// the next endpoint instead of picking the dead one again after every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_left_for_the_next_one() {
    let (etcd, _dir) = start_etcd().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let dcs = EtcdDcs::new(
        vec![dead, etcd.endpoint()],
        cluster_path(),
        "a",
        Duration::from_secs(2),
        TIMEOUT,
    );
    // The first call may hit the dead endpoint; within two calls the live one answers, and
    // from then on every call does.
    let first = dcs.load().await;
    if first.is_err() {
        dcs.load().await.expect("the second endpoint answers");
    }
    for _ in 0..5 {
        dcs.keepalive()
            .await
            .expect("keepalive through the live endpoint");
        dcs.load().await.expect("load through the live endpoint");
    }
}

/// etcd refuses HTTP/2 pings more often than `--grpc-keepalive-min-time` (5 s by default)
/// and closes a connection after three: a watch that pinged at its request timeout was
/// cut off every 8 s, logged a warning and made every subscriber reload each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_stays_established_past_etcds_ping_limit() {
    let (etcd, _dir) = start_etcd().await;
    let dcs = EtcdDcs::new(
        vec![etcd.endpoint()],
        cluster_path(),
        "a",
        Duration::from_secs(2),
        TIMEOUT,
    );
    let mut events = dcs.subscribe();
    tokio::time::timeout(Duration::from_secs(5), events.changed())
        .await
        .expect("the watch is established within 5 s")
        .expect("the watch task runs");
    events.borrow_and_update();
    dcs.load().await.expect("a read before the quiet time");
    tokio::time::sleep(Duration::from_secs(14)).await;
    // Nothing changed in etcd: a notification means the watch was established again.
    assert!(
        !events.has_changed().expect("the watch task runs"),
        "the watch was established again during 14 quiet seconds: etcd closed the connection"
    );
    dcs.load()
        .await
        .expect("a read after 14 quiet seconds on the same handle");
}
