//! The `nosync` and `noloadbalance` tags on a real cluster in synchronous mode: a member
//! tagged `nosync` is never named a synchronous standby (not even when it is the only
//! replica left), and one tagged `noloadbalance` answers 503 on `GET /replica` while it
//! still answers 200 on `/read-only`.

mod common;

use std::time::{Duration, Instant};

use common::{edit_member_yaml, with_sync_mode, Cluster, UP};

/// The members the DCS `sync` key names now (empty when there is no key or it names none).
async fn sync_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .state()
        .await
        .ok()
        .and_then(|s| s.sync.map(|k| k.value.members()))
        .unwrap_or_default()
}

fn tagged(yaml: String) -> String {
    yaml.replace(
        "  noloadbalance: false",
        "  noloadbalance: true\n  nosync: true",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nosync_is_never_synchronous_and_noloadbalance_leaves_replica_checks() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2", "node3"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, |yaml| {
            let yaml = with_sync_mode(yaml, false);
            if name == "node2" {
                tagged(yaml)
            } else {
                yaml
            }
        });
    }
    // node1 bootstraps alone, so that the tagged node2 is a replica.
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    cluster.start_agent("node2");
    cluster.start_agent("node3");
    cluster.wait_until_all_streaming(UP).await;

    // The leader names node3, never node2, for as long as we watch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut named_node3_since: Option<Instant> = None;
    loop {
        let names = sync_names(&cluster).await;
        assert!(
            !names.contains(&"node2".to_string()),
            "the sync key names the nosync member: {names:?}"
        );
        if names == ["node3"] {
            let since = *named_node3_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(5) {
                break;
            }
        } else {
            named_node3_since = None;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("the sync key did not settle on node3: {names:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // noloadbalance: out of /replica, still in /read-only; node3 is in both.
    let (code, _) = cluster.api_get("node2", "/replica").await.expect("GET");
    assert_eq!(code, 503, "GET /replica on the noloadbalance member");
    let (code, _) = cluster.api_get("node2", "/read-only").await.expect("GET");
    assert_eq!(code, 200, "GET /read-only on the noloadbalance member");
    let (code, _) = cluster.api_get("node3", "/replica").await.expect("GET");
    assert_eq!(code, 200, "GET /replica on an untagged replica");

    // node3 leaves: node2, the only replica now, is still never named (non-strict mode
    // then runs without a synchronous standby rather than use a nosync member).
    cluster.kill_node("node3");
    let until = Instant::now() + Duration::from_secs(15);
    let mut emptied = false;
    while Instant::now() < until {
        let names = sync_names(&cluster).await;
        assert!(
            !names.contains(&"node2".to_string()),
            "with node3 gone the sync key names the nosync member: {names:?}"
        );
        emptied |= names.is_empty();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(emptied, "the sync key still names the departed node3");
    // Writes still commit on the leader (not strict).
    cluster
        .write("node1", "after", "x")
        .await
        .expect("a write on the leader without a synchronous standby");
}
