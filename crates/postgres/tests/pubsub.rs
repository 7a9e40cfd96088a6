//! Declared publications and subscriptions on two real PostgreSQL 15 servers: planned,
//! carried out, read back equal to the declaration (then nothing more to do), rows flowing
//! with pgoutput, the checks finding a table without replica identity and a sequence before
//! anything breaks, changes applied in place, a drop only when asked (taking the publisher's
//! slot with it), and an unreachable source refused with the step and the cause named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{eventually, hba, sql, start, test_parameters, Sandbox};
use pgbaton_config::{PublicationScope, PublicationSpec, SubscriptionSpec};
use pgbaton_postgres::{
    apply_logical_changes, check_publications, ensure_users, initdb, plan_publications,
    plan_subscriptions, read_publications, read_subscriptions, subscription_stats, write_config,
    PgSpec, Postmaster,
};

const T: Duration = Duration::from_secs(10);

async fn bootstrap(spec: &PgSpec) -> Postmaster {
    let mut parameters = test_parameters();
    parameters.insert("wal_level".into(), "logical".into());
    initdb(spec, &[]).await.expect("initdb");
    write_config(spec, &parameters, &hba(), None).expect("write_config");
    let postmaster = start(spec).await;
    ensure_users(spec, &[], T).await.expect("ensure_users");
    postmaster
}

fn source(publisher: &PgSpec) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres password='super secret' dbname=postgres",
        publisher.port
    )
}

async fn count(spec: &PgSpec, query: &str) -> i64 {
    let client = pgbaton_postgres::connect(spec, T).await.expect("connect");
    client.query_one(query, &[]).await.expect("count").get(0)
}

const TABLES: &str = "CREATE TABLE t (id serial PRIMARY KEY, v text);
                      CREATE TABLE nopk (v text);";

#[tokio::test]
async fn declared_publications_and_subscriptions_are_kept_checked_and_dropped_only_when_asked() {
    let sandbox = Sandbox::new();
    let publisher = sandbox.member("publisher");
    let subscriber = sandbox.member("subscriber");
    let _p1 = bootstrap(&publisher).await;
    let _p2 = bootstrap(&subscriber).await;
    sql(&publisher, TABLES).await;
    sql(&subscriber, TABLES).await;

    // The publication, declared for two tables.
    let mut pubs = BTreeMap::new();
    pubs.insert(
        "app_pub".to_string(),
        PublicationSpec {
            database: "postgres".into(),
            scope: PublicationScope::Tables(vec!["t".into(), "public.nopk".into()]),
            publish: ["insert", "update", "delete", "truncate"]
                .map(String::from)
                .to_vec(),
        },
    );
    let client = pgbaton_postgres::connect(&publisher, T)
        .await
        .expect("connect");
    let now = read_publications(&client).await.expect("read");
    let plan = plan_publications(&pubs, &now, &BTreeSet::new());
    assert_eq!(plan.len(), 1, "{plan:?}");
    apply_logical_changes(&client, &plan).await.expect("apply");
    let now = read_publications(&client).await.expect("read");
    assert_eq!(
        now["app_pub"].tables,
        BTreeSet::from(["public.t".to_string(), "public.nopk".to_string()])
    );
    assert_eq!(plan_publications(&pubs, &now, &BTreeSet::new()), vec![]);

    // The checks: nopk has no replica identity; t's sequence is not replicated.
    let problems = check_publications(&client, &pubs).await.expect("check");
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.table.as_str(), p.fix.as_str()))
        .collect();
    assert!(
        found
            .iter()
            .any(|(t, fix)| *t == "public.nopk" && fix.contains("REPLICA IDENTITY FULL")),
        "{problems:?}"
    );
    assert!(
        found
            .iter()
            .any(|(t, fix)| *t == "public.t_id_seq" && fix.contains("setval")),
        "{problems:?}"
    );
    sql(&publisher, "ALTER TABLE nopk REPLICA IDENTITY FULL").await;
    let problems = check_publications(&client, &pubs).await.expect("check");
    assert!(
        problems.iter().all(|p| p.table != "public.nopk"),
        "fixed: {problems:?}"
    );

    // The subscription: rows arrive.
    let mut subs = BTreeMap::new();
    subs.insert(
        "app_sub".to_string(),
        SubscriptionSpec {
            database: "postgres".into(),
            publications: vec!["app_pub".into()],
            source: source(&publisher),
            copy_data: true,
            enabled: true,
        },
    );
    sql(&publisher, "INSERT INTO t (v) VALUES ('before')").await;
    let sub_client = pgbaton_postgres::connect(&subscriber, T)
        .await
        .expect("connect");
    let now = read_subscriptions(&sub_client).await.expect("read");
    let plan = plan_subscriptions(&subs, &now, &BTreeSet::new());
    apply_logical_changes(&sub_client, &plan)
        .await
        .expect("create subscription");
    let now = read_subscriptions(&sub_client).await.expect("read");
    assert_eq!(plan_subscriptions(&subs, &now, &BTreeSet::new()), vec![]);
    sql(
        &publisher,
        "INSERT INTO t (v) VALUES ('after'); INSERT INTO nopk VALUES ('x')",
    )
    .await;
    eventually("the rows to arrive", Duration::from_secs(30), || async {
        (count(&subscriber, "SELECT count(*) FROM t").await == 2
            && count(&subscriber, "SELECT count(*) FROM nopk").await == 1)
            .then_some(())
    })
    .await;
    let stats = subscription_stats(&sub_client).await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert!(
        stats[0].enabled && stats[0].apply_error_count == 0,
        "{stats:?}"
    );

    // Changed in place: insert only; the subscription disabled.
    pubs.get_mut("app_pub").expect("declared").publish = vec!["insert".into()];
    let plan = plan_publications(
        &pubs,
        &read_publications(&client).await.expect("read"),
        &BTreeSet::new(),
    );
    assert_eq!(plan.len(), 1, "{plan:?}");
    apply_logical_changes(&client, &plan).await.expect("alter");
    subs.get_mut("app_sub").expect("declared").enabled = false;
    let plan = plan_subscriptions(
        &subs,
        &read_subscriptions(&sub_client).await.expect("read"),
        &BTreeSet::new(),
    );
    apply_logical_changes(&sub_client, &plan)
        .await
        .expect("disable");
    let stats = subscription_stats(&sub_client).await.expect("stats");
    assert!(!stats[0].enabled, "{stats:?}");

    // Not declared any more: kept, until its removal is asked for.
    let none = BTreeMap::new();
    let now = read_subscriptions(&sub_client).await.expect("read");
    assert_eq!(plan_subscriptions(&none, &now, &BTreeSet::new()), vec![]);
    let remove = BTreeSet::from(["app_sub".to_string()]);
    // A disabled subscription keeps its slot only if it is detached first; enable it so
    // that DROP SUBSCRIPTION removes the publisher's slot too.
    sql(&subscriber, "ALTER SUBSCRIPTION app_sub ENABLE").await;
    let plan = plan_subscriptions(&none, &now, &remove);
    assert!(plan.len() == 1 && plan[0].drops, "{plan:?}");
    apply_logical_changes(&sub_client, &plan)
        .await
        .expect("drop");
    assert_eq!(
        count(
            &publisher,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'app_sub'"
        )
        .await,
        0,
        "the publisher's slot went with the subscription"
    );

    // Bad input: an unreachable source is refused, naming the step and the cause; nothing
    // is created.
    let mut bad = BTreeMap::new();
    bad.insert(
        "bad_sub".to_string(),
        SubscriptionSpec {
            database: "postgres".into(),
            publications: vec!["app_pub".into()],
            source: "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2".into(),
            copy_data: true,
            enabled: true,
        },
    );
    let plan = plan_subscriptions(&bad, &BTreeMap::new(), &BTreeSet::new());
    let e = apply_logical_changes(&sub_client, &plan)
        .await
        .expect_err("unreachable source")
        .to_string();
    assert!(e.contains("create subscription bad_sub"), "{e}");
    assert!(
        e.contains("could not connect to the publisher"),
        "the cause: {e}"
    );
    assert!(read_subscriptions(&sub_client)
        .await
        .expect("read")
        .is_empty());
}
