//! Where connections land, on real PostgreSQL 15 and etcd: writes on the leader, reads on the
//! streaming replica, the role chosen in the startup packet, the lag bound with fallback or
//! refusal, and the API's view.

mod support;

use support::{connect, connect_config, server_of, Cluster, RunningRouter, POSITION, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_leader_and_reads_the_replica() {
    let cluster = Cluster::start(true).await;
    let primary_port = cluster.primary.spec.port;
    let replica_port = cluster.replica().spec.port;
    let router = RunningRouter::start(cluster.router_config()).await;
    router
        .wait_status("the router to see the replica", |s| {
            support::readable_names(s) == ["node2"]
        })
        .await;

    let writer = connect(router.write, None).await;
    assert_eq!(server_of(&writer).await, (false, primary_port));
    writer
        .execute("INSERT INTO t (note) VALUES ('through the router')", &[])
        .await
        .expect("insert through the write listener");

    let reader = connect(router.read, None).await;
    assert_eq!(server_of(&reader).await, (true, replica_port));

    // The startup packet chooses the role; other options survive the rewrite.
    let routed = connect(
        router.write,
        Some("-c statement_timeout=1234 -c pgbaton.target=read"),
    )
    .await;
    assert_eq!(server_of(&routed).await, (true, replica_port));
    let row = routed
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "1234ms");
    let routed = connect(router.read, Some("-c pgbaton.target=write")).await;
    assert_eq!(server_of(&routed).await, (false, primary_port));

    // A bad role is refused with a message that names the option.
    let err = connect_config(&support::app_config(
        router.write,
        Some("-c pgbaton.target=sideways"),
    ))
    .await
    .expect_err("bad target");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "22023", "{db:?}");
    assert!(db.message().contains("pgbaton.target"), "{db:?}");

    // SCRAM authentication is relayed between client and server.
    let mut config = support::app_config(router.write, None);
    config.user("postgres").password("super secret");
    let scram = connect_config(&config)
        .await
        .expect("SCRAM through the router");
    assert_eq!(server_of(&scram).await, (false, primary_port));

    let status = router.status().await;
    assert_eq!(support::leader_name(&status).as_deref(), Some("node1"));
    assert_eq!(status["replicas"][0]["lag_bytes"], 0);
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"pgbaton_router_connections_total{role="write",backend="node1"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"pgbaton_router_routing_decisions_total{target="read",decision="replica"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads() {
    let cluster = Cluster::start(true).await;
    let primary_port = cluster.primary.spec.port;
    let replica_port = cluster.replica().spec.port;
    let router = RunningRouter::start(cluster.router_config()).await;
    let mut refusing = cluster.router_config();
    refusing.read_fallback = pgbaton_router::ReadFallback::Refuse;
    let refusing = RunningRouter::start(refusing).await;
    for r in [&router, &refusing] {
        r.wait_status("the replica to be readable", |s| {
            support::readable_names(s) == ["node2"]
        })
        .await;
    }

    // 64 MB behind (the bound is 1 MB): no reads; the leader takes them or they are refused.
    cluster
        .replica()
        .publish("replica", POSITION - 64 * 1024 * 1024)
        .await;
    for r in [&router, &refusing] {
        r.wait_status("the lagging replica to leave", |s| {
            support::readable_names(s).is_empty()
        })
        .await;
    }
    let reader = connect(router.read, None).await;
    assert_eq!(server_of(&reader).await, (false, primary_port));
    let err = connect_config(&support::app_config(refusing.read, None))
        .await
        .expect_err("refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "57P03", "{err:?}");
    assert!(db.message().contains("max_lag"), "{err:?}");

    // Within 0.8 × the bound it comes back.
    cluster.replica().publish("replica", POSITION - 1000).await;
    router
        .wait_status("the replica to be readable again", |s| {
            support::readable_names(s) == ["node2"]
        })
        .await;
    let reader = connect(router.read, None).await;
    assert_eq!(server_of(&reader).await, (true, replica_port));
    tokio::time::timeout(T, reader.simple_query("SELECT 1"))
        .await
        .expect("in time")
        .expect("query");
}
