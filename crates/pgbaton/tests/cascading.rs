//! Cascading replication (seed 2.6): a member tagged `replicatefrom: <replica>` streams from
//! that replica instead of the leader, and falls back to the leader when it is gone.

mod common;

use std::time::{Duration, Instant};

use common::{edit_member_yaml, Cluster, UP};

/// The port the member's WAL receiver streams from ("" when not streaming).
async fn sender_port(cluster: &Cluster, name: &str) -> String {
    cluster
        .query_one(name, "SELECT coalesce((SELECT sender_port::text FROM pg_stat_wal_receiver WHERE status = 'streaming'), '')")
        .await
        .unwrap_or_default()
}

async fn wait_sender(cluster: &Cluster, name: &str, port: u16, what: &str) {
    let deadline = Instant::now() + UP;
    loop {
        if sender_port(cluster, name).await == port.to_string() {
            return;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("{name} does not stream from port {port} ({what})"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicatefrom_tag_makes_a_member_stream_from_a_replica() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let members = cluster.members();
    let replicas: Vec<&String> = members.iter().filter(|m| **m != leader).collect();
    let (upstream, cascaded) = (replicas[0].clone(), replicas[1].clone());

    // Tag the second replica to stream from the first, and restart its agent.
    cluster.kill_agent(&cascaded);
    edit_member_yaml(&cluster, &cascaded, |text| {
        text.replace("tags:\n", &format!("tags:\n  replicatefrom: {upstream}\n"))
    });
    cluster.start_agent(&cascaded);
    wait_sender(&cluster, &cascaded, cluster.pg_port(&upstream), "cascading").await;

    // The upstream replica serves it (pg_stat_replication on the replica), and a write on
    // the leader reaches the cascaded member through it.
    let downstream = cluster
        .query_one(&upstream, "SELECT count(*) FROM pg_stat_replication")
        .await
        .expect("pg_stat_replication on the upstream replica");
    assert_eq!(
        downstream, "1",
        "{upstream} should serve one cascaded standby"
    );
    cluster
        .write(&leader, "cascade", "through-the-replica")
        .await
        .expect("write on the leader");
    cluster
        .wait_for_value(&cascaded, "cascade", "through-the-replica", UP)
        .await;

    // The upstream goes away: the cascaded member falls back to the leader.
    cluster.kill_node(&upstream);
    wait_sender(
        &cluster,
        &cascaded,
        cluster.pg_port(&leader),
        "fallback to the leader",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_clones_from_a_replica_tagged_clonefrom() {
    let mut cluster = Cluster::start(2).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replica = cluster
        .members()
        .into_iter()
        .find(|m| *m != leader)
        .expect("a replica");

    // Tag the replica clonefrom and wait until its member document says so.
    cluster.kill_agent(&replica);
    edit_member_yaml(&cluster, &replica, |text| {
        text.replace("tags:\n", "tags:\n  clonefrom: true\n")
    });
    cluster.start_agent(&replica);
    let deadline = Instant::now() + UP;
    loop {
        let tagged = cluster.state().await.ok().is_some_and(|s| {
            s.members
                .get(&replica)
                .is_some_and(|doc| doc.tag_true("clonefrom") && doc.state == "running")
        });
        if tagged {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("{replica} never published the clonefrom tag"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A third member joins: its base backup comes from the standby, not from the leader
    // (pg_basebackup records where it ran in backup_label, kept as backup_label.old).
    cluster.add_member("node3");
    cluster.start_agent("node3");
    cluster.wait_until_all_streaming(UP).await;
    let label = std::fs::read_to_string(cluster.data_dir("node3").join("backup_label.old"))
        .unwrap_or_else(|e| cluster.fail(&format!("reading node3's backup_label.old: {e}")));
    assert!(
        label.contains("BACKUP FROM: standby"),
        "node3 should have been cloned from the clonefrom replica {replica}; backup_label:\n{label}"
    );
    assert!(
        cluster
            .agent_log("node3")
            .contains(&format!("cloning from {replica}")),
        "node3's log should name {replica} as its clone source"
    );
}
