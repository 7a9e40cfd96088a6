//! Role by database name on real PostgreSQL 15 and etcd, through psql: `databases:` maps
//! `app_ro` and `app_rw` to the real database `app` with a role each; the alias chooses the
//! server whatever the listener, and the server sees the real name.

mod support;

use std::collections::BTreeMap;

use pgbaton_router::protocol::Target;
use pgbaton_router::DatabaseAlias;
use support::{conninfo, eventually, psql, psql_ok, Cluster, RunningRouter, T};

const WHERE: &str = "SELECT pg_is_in_recovery(), current_database()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_database_picks_the_role_and_the_server_sees_the_real_name() {
    let cluster = Cluster::start(true).await;
    let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("connect");
    admin
        .batch_execute("CREATE DATABASE app")
        .await
        .expect("create database");
    let mut cfg = cluster.router_config();
    cfg.databases = BTreeMap::from([
        (
            "app_ro".to_string(),
            DatabaseAlias {
                dbname: "app".into(),
                target: Some(Target::Read),
                pool_mode: None,
                pool_size: None,
            },
        ),
        (
            "app_rw".to_string(),
            DatabaseAlias {
                dbname: "app".into(),
                target: Some(Target::Write),
                pool_mode: None,
                pool_size: None,
            },
        ),
    ]);
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the leader and the readable replica", |s| {
            support::leader_name(s).as_deref() == Some("node1")
                && support::readable_names(s) == ["node2"]
        })
        .await;

    // The new database reaches the replica by streaming replication.
    let out = eventually("database app on the replica", T, || async {
        let out = psql(&conninfo(router.write, "app", "app_ro", ""), &[WHERE]).await;
        out.status.success().then_some(out)
    })
    .await;
    assert_eq!(
        psql_ok(&out, "app_ro on the write listener"),
        "t|app",
        "a replica, and the real database"
    );
    let out = psql(&conninfo(router.read, "app", "app_rw", ""), &[WHERE]).await;
    assert_eq!(psql_ok(&out, "app_rw on the read listener"), "f|app");
    // SCRAM through an alias.
    let out = psql(&conninfo(router.read, "postgres", "app_rw", ""), &[WHERE]).await;
    assert_eq!(psql_ok(&out, "app_rw as postgres"), "f|app");
    // An explicit role option wins over the alias.
    let explicit = conninfo(
        router.read,
        "app",
        "app_ro",
        "options='-c pgbaton.target=write'",
    );
    let out = psql(&explicit, &[WHERE]).await;
    assert_eq!(psql_ok(&out, "option over alias"), "f|app");
    // Other databases pass untouched: the listener's role, the name as given.
    let out = psql(&conninfo(router.write, "app", "app", ""), &[WHERE]).await;
    assert_eq!(psql_ok(&out, "plain app"), "f|app");
    let out = psql(&conninfo(router.write, "app", "nope", ""), &[WHERE]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database \"nope\" does not exist"),
        "{stderr}"
    );

    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"pgbaton_router_alias_connections_total{alias="app_ro"} "#),
        "{metrics}"
    );
    let status = router.status().await;
    assert_eq!(status["databases"]["app_ro"]["dbname"], "app", "{status}");
}
