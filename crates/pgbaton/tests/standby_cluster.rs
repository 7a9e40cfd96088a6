//! A standby cluster on real etcd, PostgreSQL 15 and agents: cluster B (`standby_cluster`
//! pointing at cluster A's router write address, which always points at A's leader) copies A
//! at bootstrap, its standby leader streams from A and its other member cascades from it. B
//! keeps following through a switchover (no candidate named) and a node loss on A, and
//! through a node loss and a switchover of its own; removing `standby_cluster` with
//! `ctl edit-config` promotes B's standby leader into a writable primary.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::http::get;
use common::router::{router_config, RunningRouter};
use common::{edit_member_yaml, with_bootstrap_dcs, UP};

/// The member YAML with `standby_cluster` (host and port of the remote primary) in
/// bootstrap.dcs.
fn with_standby_cluster(yaml: String, port: u16) -> String {
    with_bootstrap_dcs(
        yaml,
        &format!("    standby_cluster:\n      host: 127.0.0.1\n      port: {port}\n"),
    )
}

/// Wait until B has a running standby leader and every other member streams; its name.
async fn wait_for_standby_leader(b: &Cluster, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(state) = b.state().await {
            let leader = state.leader_name().map(str::to_string);
            let leader_ok = state
                .leader_member()
                .is_some_and(|d| d.state == "running" && d.is_standby_leader_role());
            let others_ok = state.members.iter().all(|(n, d)| {
                Some(n) == leader.as_ref()
                    || (d.state == "running" && d.replication_state.as_deref() == Some("streaming"))
            });
            if let (true, true, Some(name)) = (leader_ok, others_ok, &leader) {
                if state.members.len() == b.members().len() {
                    return name.clone();
                }
            }
            last = format!(
                "leader {leader:?}, members {:?}",
                state
                    .members
                    .iter()
                    .map(|(n, d)| format!("{n}:{}/{}/{:?}", d.role, d.state, d.replication_state))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.fail(&format!(
        "no standby leader with every member streaming within {timeout:?} ({last})"
    ))
}

/// Write `value` through A's router, retrying while A changes leader.
async fn write_to_a(router: &RunningRouter, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sql = format!("INSERT INTO dr VALUES ('{value}')");
        match common::sql::query_port(router.write.port(), &sql).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("write {value} through A's router: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("write {value} through A's router: {e:#}"),
        }
    }
}

async fn wait_for_value_on(b: &Cluster, member: &str, value: &str) {
    b.wait_for_value(member, "dr", value, Duration::from_secs(60))
        .await;
}

async fn expect_code(b: &Cluster, member: &str, path: &str, code: u16) {
    let (got, body) = get(b.api_port(member), path)
        .await
        .expect("REST API answers");
    assert_eq!(got, code, "GET {path} on {member}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_follows_failovers_on_both_sides_and_is_promoted_on_request() {
    let mut a = Cluster::start(2).await;
    let a_leader = a.wait_until_all_streaming(UP).await;
    a.write(&a_leader, "dr", "a1").await.expect("write on A");
    let router = RunningRouter::start(router_config(&a, "dr")).await;

    // B: a standby cluster of whatever A's router writes to.
    let mut b = Cluster::start(0).await;
    for name in ["node1", "node2"] {
        b.add_member(name);
        edit_member_yaml(&b, name, |y| with_standby_cluster(y, router.write.port()));
        b.start_agent(name);
    }
    let b_leader = wait_for_standby_leader(&b, UP).await;
    let b_other = if b_leader == "node1" {
        "node2"
    } else {
        "node1"
    };
    for member in [&b_leader, b_other] {
        wait_for_value_on(&b, member, "a1").await;
        assert!(
            b.in_recovery(member).await.expect("query"),
            "{member} is a replica"
        );
    }
    let sender = b
        .query_one(b_other, "SELECT sender_port FROM pg_stat_wal_receiver")
        .await
        .expect("wal receiver");
    assert_eq!(
        sender,
        b.pg_port(&b_leader).to_string(),
        "{b_other} cascades from the standby leader"
    );
    expect_code(&b, &b_leader, "/standby-leader", 200).await;
    expect_code(&b, &b_leader, "/leader", 200).await;
    expect_code(&b, &b_leader, "/primary", 503).await;
    expect_code(&b, &b_leader, "/replica", 503).await;
    expect_code(&b, b_other, "/standby-leader", 503).await;
    expect_code(&b, b_other, "/replica", 200).await;
    let list = b.ctl_list_json();
    assert!(
        list.iter()
            .any(|m| m["Member"] == b_leader.as_str() && m["Role"] == "Standby Leader"),
        "ctl list: {list:?}"
    );
    let (_, body) = get(b.api_port(&b_leader), "/patroni")
        .await
        .expect("GET /patroni");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["role"], "standby_leader", "{body}");

    // A: a switchover without a candidate, then a write: B follows A's new timeline.
    let out = a.ctl(&["switchover", "--force"]);
    assert!(
        out.status.success(),
        "switchover on A: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_to_a(&router, "a2").await;
    wait_for_value_on(&b, &b_leader, "a2").await;
    wait_for_value_on(&b, b_other, "a2").await;

    // A: its leader's node dies; the other member takes over; B follows again.
    // (Once A's replica has everything its leader wrote: B's standby leader, streaming from
    // the same leader, then holds nothing A's next leader lacks. See CONFIGURATION.md.)
    let a_leader = a.wait_for_leader(UP).await;
    let a_replica = if a_leader == "node1" {
        "node2"
    } else {
        "node1"
    };
    let written = a
        .query_one(&a_leader, "SELECT pg_current_wal_lsn()")
        .await
        .expect("A's position");
    let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn");
    a.wait_until(
        "A's replica replayed everything",
        Duration::from_secs(30),
        || async {
            a.query_one(a_replica, &caught_up)
                .await
                .is_ok_and(|t| t == "t")
        },
    )
    .await;
    a.kill_node(&a_leader);
    write_to_a(&router, "a3").await;
    wait_for_value_on(&b, &b_leader, "a3").await;
    wait_for_value_on(&b, b_other, "a3").await;

    // B: its standby leader's node dies; the other member becomes the standby leader,
    // follows A, and the dead member rejoins by itself behind it.
    let lost_at = Instant::now();
    b.kill_node(&b_leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let state = b.state().await.expect("B's DCS");
        if let Some(doc) = state.leader_member() {
            if state.leader_name() == Some(b_other) && doc.is_standby_leader_role() {
                break b_other.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new standby leader in B within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // ttl 4 + loop_wait 1 + 2 s, and the key's expiry measured from the last renewal.
    let took = lost_at.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "B was without a standby leader for {took:?}"
    );
    write_to_a(&router, "a4").await;
    wait_for_value_on(&b, &new_leader, "a4").await;
    b.start_agent(&b_leader);
    let b_leader = wait_for_standby_leader(&b, UP).await;
    assert_eq!(b_leader, new_leader);
    let b_other = if b_leader == "node1" {
        "node2"
    } else {
        "node1"
    };
    wait_for_value_on(&b, b_other, "a4").await;

    // B: a switchover without a candidate hands the key over without a promotion.
    let out = b.ctl(&["switchover", "--force"]);
    assert!(
        out.status.success(),
        "switchover on B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while wait_for_standby_leader(&b, UP).await == b_leader {
        assert!(
            Instant::now() < deadline,
            "B's switchover did not move the standby leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b_leader = wait_for_standby_leader(&b, UP).await;
    write_to_a(&router, "a5").await;
    wait_for_value_on(&b, "node1", "a5").await;
    wait_for_value_on(&b, "node2", "a5").await;

    // Promote B: remove standby_cluster. Its leader becomes a writable primary, on a new
    // timeline, and its replica follows it; A is not touched.
    let out = b.ctl(&["edit-config", "-s", "standby_cluster=null", "--force"]);
    assert!(
        out.status.success(),
        "edit-config on B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promoted = b.wait_until_all_streaming(UP).await;
    assert_eq!(promoted, b_leader, "the standby leader is the one promoted");
    b.write(&promoted, "dr", "b1")
        .await
        .expect("B takes writes");
    let b_other = if promoted == "node1" {
        "node2"
    } else {
        "node1"
    };
    wait_for_value_on(&b, b_other, "b1").await;
    let a_leader = a.wait_for_leader(UP).await;
    let on_a = a.values(&a_leader, "dr").await.expect("A's rows");
    assert!(
        !on_a.contains(&"b1".to_string()),
        "B's write reached A: {on_a:?}"
    );
    drop(router);
}
