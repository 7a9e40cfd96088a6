//! The router following leader changes on real PostgreSQL 15 and etcd: sessions to a
//! demoted leader are closed, new writes reach the new leader through the same address, a
//! write arriving while there is no leader waits for one, a write connection is never
//! handed to a server that is still in recovery, and a router that cannot read etcd trusts
//! the leader it knows only while that leader's lease can last.

mod support;

use std::time::{Duration, Instant};

use pgbaton_dcs::Dcs;

use support::{
    connect, connect_config, eventually, server_of, Cluster, RunningRouter, POSITION, T,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_moves_writes_and_closes_old_sessions() {
    let cluster = Cluster::start(true).await;
    let replica = cluster.replica();
    let router = RunningRouter::start(cluster.router_config()).await;
    router
        .wait_status("the leader and the replica", |s| {
            support::leader_name(s).as_deref() == Some("node1")
                && support::readable_names(s) == ["node2"]
        })
        .await;
    let old = connect(router.write, None).await;
    assert_eq!(server_of(&old).await, (false, cluster.primary.spec.port));
    let reader = connect(router.read, None).await;

    // Switchover: node2 is promoted, node1 gives the key up and node2 takes it.
    pgbaton_postgres::promote(&replica.spec, T)
        .await
        .expect("promote");
    cluster.primary.release_leader().await;
    replica.publish("master", POSITION + 100).await;
    let moved_at = Instant::now();
    replica.take_leader().await;

    // The old write session is closed by the router (node1 itself is still up).
    eventually("the old write session to be closed", T, || async {
        old.is_closed().then_some(())
    })
    .await;
    let closed_after = moved_at.elapsed();
    assert!(old.simple_query("SELECT 1").await.is_err());

    // The same address now writes on node2.
    let first_write = eventually("a write through the router on node2", T, || async {
        let client = connect_config(&support::app_config(router.write, None))
            .await
            .ok()?;
        client
            .execute("INSERT INTO t (note) VALUES ('after switchover')", &[])
            .await
            .ok()?;
        Some(client)
    })
    .await;
    let write_after = moved_at.elapsed();
    assert_eq!(server_of(&first_write).await, (false, replica.spec.port));
    println!(
        "leader key moved -> old session closed {closed_after:?}, first write {write_after:?}"
    );

    // Read sessions are not closed by a leader change.
    reader
        .simple_query("SELECT 1")
        .await
        .expect("read session survives");
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains("pgbaton_router_closed_on_leader_change_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_a_leader_during_a_switchover() {
    let cluster = Cluster::start(false).await;
    let router = RunningRouter::start(cluster.router_config()).await;
    connect(router.write, None).await;

    cluster.primary.release_leader().await;
    router
        .wait_status("no leader", |s| s["leader"].is_null())
        .await;
    let config = support::app_config(router.write, None);
    let started = Instant::now();
    let waiting = tokio::spawn(async move { connect_config(&config).await });
    // The switchover takes a moment; the client must still be waiting, not refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "the client waits while there is no leader"
    );
    cluster.primary.take_leader().await;
    let client = tokio::time::timeout(T, waiting)
        .await
        .expect("connected in time")
        .expect("join")
        .expect("connected once the leader key appeared");
    assert!(started.elapsed() >= Duration::from_millis(400));
    client
        .execute("INSERT INTO t (note) VALUES ('waited')", &[])
        .await
        .expect("write");

    // With no leader at all, the client is refused after handover_wait.
    let mut cfg = cluster.router_config();
    cfg.handover_wait = Some(Duration::from_millis(300));
    let impatient = RunningRouter::start(cfg).await;
    cluster.primary.release_leader().await;
    impatient
        .wait_status("no leader", |s| s["leader"].is_null())
        .await;
    let err = connect_config(&support::app_config(impatient.write, None))
        .await
        .expect_err("refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "57P03", "{err:?}");
    assert!(db.message().contains("no writable leader"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_never_handed_to_a_server_in_recovery() {
    let cluster = Cluster::start(true).await;
    let replica = cluster.replica();
    let mut cfg = cluster.router_config();
    cfg.handover_wait = Some(Duration::from_secs(2));
    let router = RunningRouter::start(cfg).await;

    // etcd claims node2 leads, but it is still a standby.
    cluster.primary.release_leader().await;
    replica.publish("master", POSITION).await;
    replica.take_leader().await;
    router
        .wait_status("node2 as leader", |s| {
            support::leader_name(s).as_deref() == Some("node2")
        })
        .await;
    let err = connect_config(&support::app_config(router.write, None))
        .await
        .expect_err("refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "57P03", "{err:?}");
    assert!(db.message().contains("in_hot_standby=on"), "{err:?}");

    // The same with SCRAM: the retry cannot repeat the authentication, still no standby.
    let mut config = support::app_config(router.write, None);
    config.user("postgres").password("super secret");
    let err = connect_config(&config).await.expect_err("refused");
    assert_eq!(err.code().map(|c| c.code()), Some("57P03"), "{err:?}");

    // A client arriving while the promotion completes gets the promoted server on the retry.
    let config = support::app_config(router.write, None);
    let waiting = tokio::spawn(async move { connect_config(&config).await });
    pgbaton_postgres::promote(&replica.spec, T)
        .await
        .expect("promote");
    let client = tokio::time::timeout(T, waiting)
        .await
        .expect("in time")
        .expect("join")
        .expect("connected after the promotion");
    assert_eq!(server_of(&client).await, (false, replica.spec.port));
}

/// A router that cannot read etcd keeps sending writes to the leader it knows only while
/// that leader's lease can still be valid (ttl from the DCS configuration, counted from its
/// last successful read); then it holds new write work and refuses it, after
/// `handover_wait`, saying why; once etcd answers again writes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_cannot_read_etcd_trusts_the_leader_only_while_its_lease_can_last() {
    let cluster = Cluster::start(false).await;
    cluster
        .primary
        .dcs
        .set_config(&serde_json::json!({"ttl": 4, "loop_wait": 1}), None)
        .await
        .expect("dynamic configuration");
    let mut cfg = cluster.router_config();
    cfg.handover_wait = Some(Duration::from_secs(2));
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the leader", |s| {
            support::leader_name(s).as_deref() == Some("node1")
        })
        .await;
    let write = |note: &'static str| {
        let addr = router.write;
        async move {
            let client = connect_config(&support::app_config(addr, None)).await?;
            client
                .execute("INSERT INTO t (note) VALUES ($1)", &[&note])
                .await?;
            Ok::<_, tokio_postgres::Error>(())
        }
    };
    write("before").await.expect("a write before etcd stops");

    cluster.etcd.pause();
    let paused = Instant::now();
    // Right away the leader's lease can still be valid: it keeps getting writes.
    write("etcd paused")
        .await
        .expect("a write while the leader's lease can still be valid");

    // Past the lease: held for handover_wait, then refused with the reason.
    let refused = eventually(
        "new writes refused because etcd cannot be read",
        Duration::from_secs(30),
        || async {
            match write("too late").await {
                Err(e) => {
                    let text = format!("{e:?}");
                    text.contains("cannot read etcd").then_some(text)
                }
                Ok(()) => None,
            }
        },
    )
    .await;
    let refused_after = paused.elapsed();
    println!("refused {refused_after:?} after etcd stopped answering: {refused}");
    assert!(
        refused_after >= Duration::from_secs(3),
        "the router trusted the leader for less than its lease (4 s from the last read): {refused_after:?}"
    );
    assert!(
        refused.contains("longer than the leader's lease"),
        "{refused}"
    );

    cluster.etcd.resume();
    let resumed = Instant::now();
    eventually("writes flow again once etcd answers", T, || async {
        write("after").await.ok()
    })
    .await;
    println!("writes again {:?} after etcd resumed", resumed.elapsed());
}
