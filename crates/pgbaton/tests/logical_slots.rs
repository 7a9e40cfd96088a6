//! Permanent logical slots survive a failover: the leader creates the slot from the dynamic
//! configuration, the replica holds a copy advanced to what the consumer confirmed, and after
//! the leader's node is SIGKILLed the promoted replica hands the consumer every change it had
//! not confirmed — and none that it had. A replica drops its copy once the slot leaves the
//! configuration.

mod common;

use std::time::{Duration, Instant};

use common::{edit_member_yaml, Cluster, UP};

/// Generous: the copy waits for the consumer to move the slot past the replica's oldest WAL,
/// then restarts the replica once.
const COPY: Duration = Duration::from_secs(60);

fn with_logical_slot(yaml: String) -> String {
    common::with_bootstrap_dcs(
        yaml,
        "    slots:\n      cdc:\n        type: logical\n        database: postgres\n        plugin: test_decoding\n      archive:\n        type: physical\n",
    )
    .replacen("pgbaton:\n", "pgbaton:\n  slot_retained_wal_warning_mb: 1\n", 1)
}

/// Ids of `INSERT`s into `t` in test_decoding output rows.
fn inserted_ids(rows: &[String]) -> Vec<i64> {
    rows.iter()
        .filter(|r| r.starts_with("table public.t: INSERT:"))
        .filter_map(|r| {
            r.split("id[integer]:")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

async fn poll<F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            cluster.fail(what);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `member` has `count` slots named `cdc`.
async fn cdc_slots(cluster: &Cluster, member: &str, count: &str, timeout: Duration, what: &str) {
    poll(cluster, what, timeout, || async {
        cluster
            .query_one(
                member,
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'",
            )
            .await
            .is_ok_and(|n| n == count)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_logical_slot_survives_failover_without_losing_changes() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, with_logical_slot);
        cluster.start_agent(name);
    }
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replica = if leader == "node1" { "node2" } else { "node1" };

    // The leader creates the slot (wal_level is set to logical for it).
    poll(&cluster, "the leader never created slot cdc", UP, || async {
        cluster
            .query_one(&leader, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc' AND slot_type = 'logical'")
            .await
            .is_ok_and(|n| n == "1")
    })
    .await;

    // The consumer reads rows 1..5 and confirms them.
    cluster
        .query(&leader, "CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("create table");
    cluster
        .query(&leader, "INSERT INTO t SELECT generate_series(1, 5)")
        .await
        .expect("insert 1..5");
    let consumed = cluster
        .query(
            &leader,
            "SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)",
        )
        .await
        .expect("consume");
    assert_eq!(inserted_ids(&consumed), vec![1, 2, 3, 4, 5]);
    let confirmed = cluster
        .query_one(
            &leader,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc'",
        )
        .await
        .expect("confirmed_flush_lsn");

    // The replica gets a copy and advances it to the consumer's position.
    poll(
        &cluster,
        &format!("{replica} never held a copy of cdc advanced to {confirmed}"),
        COPY,
        || async {
            cluster
                .query_one(
                    replica,
                    &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc' AND confirmed_flush_lsn >= '{confirmed}'"),
                )
                .await
                .is_ok_and(|n| n == "1")
        },
    )
    .await;
    cluster.wait_until_all_streaming(UP).await;

    // The permanent physical slot `archive` has no consumer: 3 MB of WAL later the leader
    // warns that it keeps more than the 1 MB limit; `list -e` and /patroni show the slots.
    cluster
        .query(
            &leader,
            "CREATE TABLE filler AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, 3000)",
        )
        .await
        .expect("writing 3 MB");
    poll(
        &cluster,
        "the leader never warned about the WAL kept by slot archive",
        UP,
        || async {
            cluster
                .agent_log(&leader)
                .contains("keeps more WAL than pgbaton.slot_retained_wal_warning_mb")
        },
    )
    .await;
    let list = cluster.ctl(&["list", "-e"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("Retained WAL in MB") && list.contains("archive") && list.contains("cdc"),
        "list -e should show the leader's slots:\n{list}"
    );
    let patroni = cluster.patroni(&leader).await.expect("GET /patroni");
    let names: Vec<&str> = patroni["replication_slots"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"archive") && names.contains(&"cdc"),
        "/patroni should list the slots, got {names:?}"
    );

    // Rows 6..10 are written but not consumed; the replica replays them.
    cluster
        .query(&leader, "INSERT INTO t SELECT generate_series(6, 10)")
        .await
        .expect("insert 6..10");
    poll(
        &cluster,
        "the replica never replayed rows 6..10",
        UP,
        || async {
            cluster
                .query_one(replica, "SELECT count(*) FROM t")
                .await
                .is_ok_and(|n| n == "10")
        },
    )
    .await;

    // The leader's node dies; the replica is promoted with the slot.
    cluster.kill_node(&leader);
    poll(&cluster, "the replica was never promoted", UP, || async {
        cluster.in_recovery(replica).await.is_ok_and(|r| !r)
    })
    .await;
    let resumed = cluster
        .query(
            replica,
            "SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)",
        )
        .await
        .expect("reading the slot on the new leader");
    assert_eq!(
        inserted_ids(&resumed),
        vec![6, 7, 8, 9, 10],
        "the consumer must get exactly the changes it had not confirmed; got:\n{}",
        resumed.join("\n")
    );

    // The old leader comes back as a replica, still holding its slot (now a copy). When
    // `cdc` leaves the configuration, the replica drops its copy; the leader keeps the slot
    // (a logical slot on a primary may be the user's: never dropped by pgbaton).
    cluster.start_agent(&leader);
    cluster.wait_until_all_streaming(UP).await;
    cdc_slots(
        &cluster,
        &leader,
        "1",
        COPY,
        &format!("{leader} (now a replica) holds no copy of cdc"),
    )
    .await;
    let out = cluster.ctl(&["edit-config", "-s", "slots.cdc=null", "--force"]);
    assert!(
        out.status.success(),
        "edit-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cdc_slots(
        &cluster,
        &leader,
        "0",
        UP,
        &format!("{leader} (now a replica) never dropped its copy of cdc"),
    )
    .await;
    assert!(
        cluster
            .agent_log(&leader)
            .contains("dropped the copy of a logical slot"),
        "the replica should log the drop"
    );
    let kept = cluster
        .query_one(
            replica,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'",
        )
        .await
        .expect("slots on the leader");
    assert_eq!(kept, "1", "the leader keeps its logical slot");
}
