//! Bootstrap of a 3-member cluster: one leader, two streaming replicas through their slots,
//! Patroni's key layout in etcd, and data written on the leader visible on both replicas.

mod common;

use std::time::Duration;

use common::{Cluster, UP};
use etcd_client::GetOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_bootstrap_into_one_leader_and_two_streaming_replicas() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replicas = cluster.others(&leader);

    // ctl list -f json: Leader running + 2 Replicas streaming, all on timeline 1.
    let rows = cluster.ctl_list_json();
    assert_eq!(rows.len(), 3, "ctl list rows: {rows:?}");
    for row in &rows {
        let member = row["Member"].as_str().unwrap_or_default();
        assert_eq!(row["TL"], 1, "timeline of {member}: {row}");
        assert_eq!(row["Cluster"], "it", "{row}");
        if member == leader {
            assert_eq!(row["Role"], "Leader", "{row}");
            assert_eq!(row["State"], "running", "{row}");
        } else {
            assert_eq!(row["Role"], "Replica", "{row}");
            assert_eq!(row["State"], "streaming", "{row}");
        }
    }

    // The keys in etcd, in Patroni's layout.
    let system_id = cluster
        .query_one(&leader, "SELECT system_identifier FROM pg_control_system()")
        .await
        .expect("system identifier");
    let mut etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connecting to etcd");
    let resp = etcd
        .get("/service/it/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("reading /service/it/");
    let keys: std::collections::BTreeMap<String, String> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_string(),
                kv.value_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let names: Vec<&String> = keys.keys().collect();
    assert_eq!(
        keys.get("/service/it/leader"),
        Some(&leader),
        "keys: {names:?}"
    );
    assert_eq!(
        keys.get("/service/it/initialize"),
        Some(&system_id),
        "keys: {names:?}"
    );
    for m in cluster.members() {
        let doc = keys
            .get(&format!("/service/it/members/{m}"))
            .unwrap_or_else(|| panic!("no members/{m} key; keys: {names:?}"));
        let doc: serde_json::Value = serde_json::from_str(doc).expect("member doc is JSON");
        let port = cluster.pg_port(&m);
        assert_eq!(
            doc["conn_url"],
            format!("postgres://127.0.0.1:{port}/postgres"),
            "{doc}"
        );
        assert_eq!(
            doc["api_url"],
            format!("http://127.0.0.1:{}/patroni", cluster.api_port(&m)),
            "{doc}"
        );
        assert_eq!(
            doc["role"],
            if m == leader { "master" } else { "replica" },
            "{doc}"
        );
        assert_eq!(doc["state"], "running", "{doc}");
    }
    let config: serde_json::Value = serde_json::from_str(
        keys.get("/service/it/config")
            .unwrap_or_else(|| panic!("no config key; keys: {names:?}")),
    )
    .expect("config is JSON");
    assert_eq!(config["ttl"], 4, "config: {config}");
    assert_eq!(config["loop_wait"], 1, "config: {config}");

    // A table written on the leader shows up on both replicas.
    cluster
        .write(&leader, "bootstrap_check", "hello")
        .await
        .expect("write on the leader");
    for r in &replicas {
        cluster
            .wait_for_value(r, "bootstrap_check", "hello", Duration::from_secs(10))
            .await;
        assert!(cluster.in_recovery(r).await.expect("pg_is_in_recovery"));
    }
    assert!(!cluster
        .in_recovery(&leader)
        .await
        .expect("pg_is_in_recovery"));

    // One physical slot per other member on the leader, each in use by that member.
    let slots = cluster
        .query(
            &leader,
            "SELECT slot_name || ':' || slot_type || ':' || active FROM pg_replication_slots ORDER BY 1",
        )
        .await
        .expect("pg_replication_slots");
    let expected: Vec<String> = replicas
        .iter()
        .map(|r| format!("{r}:physical:true"))
        .collect();
    assert_eq!(slots, expected, "slots on the leader {leader}");
    for r in &replicas {
        let receiver = cluster
            .query_one(
                r,
                "SELECT slot_name || ':' || status FROM pg_stat_wal_receiver",
            )
            .await
            .expect("pg_stat_wal_receiver");
        assert_eq!(receiver, format!("{r}:streaming"), "WAL receiver of {r}");
    }
}
