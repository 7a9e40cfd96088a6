//! `watchdog: mode: required` on a real cluster, with a device path that does not exist on
//! one member (this machine has no watchdog device and no softdog module): that member never
//! takes the leader key — not by a switchover to it, not at a failover where it is as good a
//! candidate as any — it says why in its log, its `GET /patroni` and its member document,
//! and the cluster still elects another member.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{api_send, edit_member_yaml, Cluster, UP};
use serde_json::json;

const REQUIRED_WITHOUT_DEVICE: &str = "
watchdog:
  mode: required
  device: /nonexistent/watchdog
  safety_margin: -1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_requires_a_missing_watchdog_never_leads() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2", "node3"] {
        cluster.add_member(name);
    }
    edit_member_yaml(&cluster, "node3", |yaml| {
        format!("{yaml}{REQUIRED_WITHOUT_DEVICE}")
    });
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    cluster.start_agent("node2");
    cluster.start_agent("node3");
    cluster.wait_until_all_streaming(UP).await;

    // Every leader key value from now on, sampled every 50 ms.
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let endpoint = cluster.etcd_endpoint();
        let path = cluster.path();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(state) = pgbaton_dcs::load_cluster(
                    std::slice::from_ref(&endpoint),
                    &path,
                    Duration::from_secs(1),
                )
                .await
                {
                    if let Some(l) = state.leader_name() {
                        let mut seen = seen.lock().unwrap();
                        if seen.last().map(String::as_str) != Some(l) {
                            seen.push(l.to_string());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // It says why: REST (Patroni's key), its member document, its log.
    let patroni = cluster
        .patroni("node3")
        .await
        .expect("GET /patroni on node3");
    assert_eq!(patroni["watchdog_failed"], json!(true), "{patroni}");
    let patroni2 = cluster
        .patroni("node2")
        .await
        .expect("GET /patroni on node2");
    assert!(patroni2.get("watchdog_failed").is_none(), "{patroni2}");
    let state = cluster.state().await.expect("cluster state");
    assert!(state.members["node3"].watchdog_failed());
    assert!(!state.members["node2"].watchdog_failed());

    // A switchover to it is refused up front, with the reason.
    let (code, reply) = api_send(
        cluster.api_port("node1"),
        reqwest::Method::POST,
        "/switchover",
        &json!({"leader": "node1", "candidate": "node3"}),
        None,
    )
    .await
    .expect("POST /switchover");
    assert_eq!(code, 412, "{reply}");
    assert!(reply.contains("watchdog"), "{reply}");

    // The leader's node dies: node3 is as caught up as node2, but only node2 may lead.
    cluster.kill_node("node1");
    let deadline = tokio::time::Instant::now() + UP;
    loop {
        let state = cluster.state().await.ok();
        let leader = state
            .as_ref()
            .and_then(|s| s.leader_name().map(str::to_string));
        let running = state
            .as_ref()
            .and_then(|s| s.leader_member())
            .is_some_and(|d| d.state == "running" && d.is_primary_role());
        if leader.as_deref() == Some("node2") && running {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            cluster.fail(&format!(
                "node2 did not become the leader (leader {leader:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // node3 follows the new leader and keeps serving reads.
    cluster
        .wait_until_streaming(&["node2".to_string(), "node3".to_string()], UP)
        .await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.expect("sampler");

    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|l| l == "node3"),
        "node3 held the leader key: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("node2"), "{seen:?}");
    let log = cluster.agent_log("node3");
    assert!(
        log.contains("watchdog.mode is required and the watchdog is not usable")
            && log.contains("/nonexistent/watchdog"),
        "node3's log does not say why it does not lead:\n{}",
        common::procs::tail(&cluster.member_dir("node3").join("agent.log"), 40)
    );
    assert!(
        !log.contains("acquired the leader key")
            && !log.contains("holding the leader key: promoting"),
        "node3 tried to lead"
    );
    assert!(
        cluster.in_recovery("node3").await.expect("node3 answers"),
        "node3 is not a replica"
    );
}
