//! Read routing on lag from the agents' REST API, on real PostgreSQL 15 and etcd: each
//! member's `api_url` points at a stub serving Patroni's `/patroni` document from real
//! queries, polled every 200 ms, while the member documents in etcd are never refreshed
//! (as with a long loop_wait). Pausing replay on the replica and writing ~20 MB on the
//! leader takes the replica out of reads within a few seconds (by its replay delay: its
//! received position keeps up); resuming brings it back; when its REST API goes silent
//! its DCS document is used again.

mod support;

use std::time::{Duration, Instant};

use support::{
    connect, eventually, patroni_document, server_of, Cluster, RestStub, RunningRouter, T,
};

async fn current_lsn(client: &tokio_postgres::Client) -> u64 {
    let row = client
        .query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[])
        .await
        .expect("lsn");
    u64::try_from(row.get::<_, i64>(0)).expect("positive")
}

fn replica_entry<'a>(status: &'a serde_json::Value, list: &str) -> Option<&'a serde_json::Value> {
    status[list]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "node2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_replay_stalls_leaves_reads_within_seconds() {
    let cluster = Cluster::start(true).await;
    let (primary, replica) = (&cluster.primary, cluster.replica());
    let leader_sql = pgbaton_postgres::connect(&primary.spec, T)
        .await
        .expect("connect leader");
    let replica_sql = pgbaton_postgres::connect(&replica.spec, T)
        .await
        .expect("connect replica");
    let stub1 = RestStub::start(&primary.spec).await;
    let stub2 = RestStub::start(&replica.spec).await;
    // A transaction for the replica to replay, so it has a replay timestamp.
    leader_sql
        .execute("INSERT INTO t (note) VALUES ('before')", &[])
        .await
        .expect("insert");
    eventually("the replica to replay a transaction", T, || async {
        let doc = patroni_document(&replica.spec).await.ok()?;
        doc["xlog"]["replayed_timestamp"].as_str().map(|_| ())
    })
    .await;
    // The DCS documents, with real positions, written once and never refreshed.
    let lsn = current_lsn(&leader_sql).await;
    primary.publish_api("master", lsn, &stub1.url()).await;
    replica.publish_api("replica", lsn, &stub2.url()).await;

    let mut cfg = cluster.router_config();
    cfg.rest_poll_interval = Duration::from_millis(200);
    cfg.max_lag_bytes = 16 << 20;
    cfg.max_replay_delay = Some(Duration::from_secs(1));
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the replica readable by REST lag", |s| {
            replica_entry(s, "replicas").is_some_and(|r| r["lag_source"] == "rest")
        })
        .await;

    // Stall replay, then write ~20 MB (incompressible) on the leader.
    replica_sql
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause");
    eventually("replay to pause", T, || async {
        let row = replica_sql
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .ok()?;
        (row.get::<_, String>(0) == "paused").then_some(())
    })
    .await;
    let wrote_at = Instant::now();
    leader_sql
        .batch_execute(
            "INSERT INTO t (note)
             SELECT (SELECT string_agg(md5(random()::text || g::text || i::text), '')
                     FROM generate_series(1, 32) i)
             FROM generate_series(1, 20000) g",
        )
        .await
        .expect("write 20 MB");
    let written = current_lsn(&leader_sql).await - lsn;
    assert!(written > 20 << 20, "wrote {written} bytes of WAL");
    router
        .wait_status("the stalled replica to leave reads", |s| {
            support::readable_names(s).is_empty()
                && replica_entry(s, "lagging").is_some_and(|r| {
                    r["lag_source"] == "rest" && r["replay_delay_ms"].as_u64() > Some(1000)
                })
        })
        .await;
    let left_after = wrote_at.elapsed();
    let status = router.status().await;
    println!(
        "replica left reads {left_after:?} after the write started: {}",
        replica_entry(&status, "lagging").expect("lagging")
    );
    assert!(
        left_after < Duration::from_secs(8),
        "much faster than a loop_wait: {left_after:?}"
    );
    let reader = connect(router.read, None).await;
    assert_eq!(
        server_of(&reader).await,
        (false, primary.spec.port),
        "reads fall back to the leader"
    );
    // What `pgbaton ctl router-status` prints for it (a REST answer that came late on a
    // busy machine shows the DCS figure for a moment: the next poll brings REST again).
    let table = eventually("the status table to show node2's REST lag", T, || async {
        let table = pgbaton_router::render_status_table(&router.status().await);
        table
            .lines()
            .any(|l| l.contains("node2") && l.contains("(rest)"))
            .then_some(table)
    })
    .await;
    println!("{table}");
    assert!(table.contains("Leader: node1"), "{table}");
    assert!(table.contains(&router.read.to_string()), "{table}");
    assert!(
        table.lines().any(|l| l.contains("node2")
            && l.contains("lagging, no reads")
            && l.contains("(rest)")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("read") && l.contains("node1") && l.contains("fallback")),
        "{table}"
    );

    // Resume: it catches up and gets reads again.
    replica_sql
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume");
    router
        .wait_status("the replica to come back", |s| {
            support::readable_names(s) == ["node2"]
        })
        .await;
    let reader = connect(router.read, None).await;
    assert_eq!(server_of(&reader).await, (true, replica.spec.port));

    // Its REST API goes silent: after three intervals its DCS document counts again (here
    // an agent's fresh report that it is caught up).
    stub2.stop();
    replica
        .publish_api("replica", current_lsn(&leader_sql).await, &stub2.url())
        .await;
    router
        .wait_status("the replica measured from the DCS", |s| {
            replica_entry(s, "replicas").is_some_and(|r| r["lag_source"] == "dcs")
        })
        .await;
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains("pgbaton_router_rest_poll_errors_total"),
        "{metrics}"
    );
    drop(stub1);
}
