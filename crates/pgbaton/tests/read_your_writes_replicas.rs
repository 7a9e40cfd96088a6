//! Read-your-writes with two replicas, one of them held back (`recovery_min_apply_delay`
//! 1 s): a read-only transaction after the client's write runs on a replica that has the
//! write. When the replica its first server connection reaches has not replayed it, the
//! router asks another replica before it waits, so the reads stay on replicas instead of
//! going to the leader; never a stale read.

mod common;

use common::router::{app, pool_config, superuser, RunningRouter};
use common::{Cluster, UP};
use pgbaton_router::pool::PoolMode;
use tokio_postgres::NoTls;

const PAIRS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_go_to_the_replica_that_has_them_when_another_lags() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replicas = cluster.others(&leader);
    let admin = superuser(&cluster, &leader).await;
    admin
        .batch_execute("CREATE TABLE ryw (id serial PRIMARY KEY, note text); GRANT ALL ON ryw, ryw_id_seq TO app")
        .await
        .expect("table");
    // One replica held back 1 s.
    let delayed = &replicas[0];
    let held_back = superuser(&cluster, delayed).await;
    for sql in [
        "ALTER SYSTEM SET recovery_min_apply_delay = '1s'",
        "SELECT pg_reload_conf()",
    ] {
        held_back.batch_execute(sql).await.expect(sql);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = pool_config(&cluster, &leader, dir.path(), "ryw", PoolMode::Transaction).await;
    cfg.auto_listen = Some("127.0.0.1:0".into());
    cfg.api_listen = Some("127.0.0.1:0".into());
    let router = RunningRouter::start(cfg).await;
    let api = router.api.expect("api address");
    // Both replicas readable for the router (their lag from the DCS).
    cluster
        .wait_until(
            "the router never saw both replicas readable",
            UP,
            || async {
                let status: serde_json::Value = match common::http::get(api.port(), "/status").await
                {
                    Ok((_, body)) => serde_json::from_str(&body).unwrap_or_default(),
                    Err(_) => return false,
                };
                status["replicas"].as_array().is_some_and(|r| r.len() == 2)
            },
        )
        .await;

    let auto = router.auto.expect("auto listener");
    let (mut client, connection) = app(auto).connect(NoTls).await.expect("auto listener");
    tokio::spawn(connection);
    let delayed_port = cluster.pg_port(delayed) as i32;
    let (mut stale, mut on_replica, mut on_delayed) = (0, 0, 0);
    for k in 0..PAIRS {
        let id: i32 = client
            .query_one(
                "INSERT INTO ryw (note) VALUES ($1) RETURNING id",
                &[&format!("pair {k}")],
            )
            .await
            .expect("insert")
            .get(0);
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .expect("read-only transaction");
        let row = tx
            .query_one(
                "SELECT count(*), pg_is_in_recovery(), inet_server_port() FROM ryw WHERE id = $1",
                &[&id],
            )
            .await
            .expect("read");
        tx.commit().await.expect("commit");
        let (seen, recovery, port): (i64, bool, i32) = (row.get(0), row.get(1), row.get(2));
        stale += usize::from(seen != 1);
        on_replica += usize::from(recovery);
        on_delayed += usize::from(port == delayed_port);
    }
    println!(
        "{PAIRS} write-then-read pairs through the auto listener, {delayed} held back 1 s: {stale} stale, {on_replica} on a replica, {on_delayed} on {delayed}"
    );
    assert_eq!(stale, 0, "never a stale read");
    assert_eq!(
        on_delayed, 0,
        "never on the replica that has not replayed the write"
    );
    // The first server connection reaches the held-back replica about every other time;
    // the other replica has the write within milliseconds.
    assert!(
        on_replica >= PAIRS * 9 / 10,
        "reads on a replica: {on_replica} of {PAIRS}"
    );
}
