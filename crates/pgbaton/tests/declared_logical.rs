//! Declared publications and subscriptions (`logical:`) between two pgbaton clusters, with
//! real `pgoutput` subscriptions: cluster A publishes, cluster B subscribes, both declared
//! with `ctl edit-config`. Rows flow; A's leader node is SIGKILLed, then B's: rows keep
//! flowing from and to the new leaders, every row arriving exactly once. A publication
//! dropped by hand is put back; a subscription whose publisher is unreachable says why;
//! `ctl logical check` finds a table without replica identity and a subscribed table
//! lacking a column, with the SQL that fixes each; a removal drops only with --force.

mod common;

use std::time::{Duration, Instant};

use common::logical::{insert, other, rows, wait_for_slot_copy};
use common::{edit_member_yaml, Cluster, UP};

const FLOW: Duration = Duration::from_secs(60);

/// A's members keep `app_sub` (the subscription's slot on the publisher) as a permanent
/// logical slot, so it survives A's failover.
async fn wait_rows(b: &Cluster, member: &str, n: i64, what: &str) {
    common::logical::wait_rows(b, member, "t", n, FLOW, what).await
}

fn with_subscriber_slot(yaml: String) -> String {
    common::with_bootstrap_dcs(
        yaml,
        "    slots:\n      app_sub:\n        type: logical\n        database: postgres\n        plugin: pgoutput\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_pubsub_survives_the_failover_of_each_side_with_every_row_once() {
    // Cluster A (publisher), wal_level logical for its permanent slot.
    let mut a = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2"] {
        a.add_member(name);
        edit_member_yaml(&a, name, with_subscriber_slot);
        a.start_agent(name);
    }
    // Cluster B (subscriber).
    let mut b = Cluster::start(2).await;
    let a_leader = a.wait_until_all_streaming(UP).await;
    let b_leader = b.wait_until_all_streaming(UP).await;

    for (cluster, leader, sql) in [
        (
            &a,
            &a_leader,
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nopk (v text);
             CREATE TABLE wide (id int PRIMARY KEY, a int, b int)",
        ),
        (
            &b,
            &b_leader,
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nopk (v text);
             CREATE TABLE wide (id int PRIMARY KEY, a int)",
        ),
    ] {
        cluster
            .query(leader, sql)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("creating the tables: {e}")));
    }

    // A publishes every table.
    a.ctl_ok(&[
        "edit-config",
        "-s",
        "logical.publications.app_pub.database=postgres",
        "-s",
        "logical.publications.app_pub.all_tables=true",
        "-s",
        "logical.publications.lost_pub.database=nodb",
        "-s",
        "logical.publications.lost_pub.all_tables=true",
        "--force",
    ]);
    a.wait_until("A's leader never created app_pub", FLOW, || async {
        a.query_one(
            &a_leader,
            "SELECT count(*) FROM pg_publication WHERE pubname = 'app_pub' AND puballtables",
        )
        .await
        .is_ok_and(|n| n == "1")
    })
    .await;

    // B subscribes through both of A's members (the primary is the one that accepts
    // writes), and to a publisher that does not exist.
    let source = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres password=postgres dbname=postgres target_session_attrs=read-write",
        a.pg_port("node1"),
        a.pg_port("node2")
    );
    let nowhere = format!(
        "host=127.0.0.1 port={} user=postgres password=postgres dbname=postgres connect_timeout=2",
        common::ports::closed_port()
    );
    let declared_at = Instant::now();
    b.ctl_ok(&[
        "edit-config",
        "-s",
        "logical.subscriptions.app_sub.database=postgres",
        "-s",
        "logical.subscriptions.app_sub.publication=app_pub",
        "-s",
        &format!("logical.subscriptions.app_sub.source={source}"),
        "-s",
        "logical.subscriptions.bad_sub.database=postgres",
        "-s",
        "logical.subscriptions.bad_sub.publication=app_pub",
        "-s",
        &format!("logical.subscriptions.bad_sub.source={nowhere}"),
        "--force",
    ]);

    // Rows flow (A's leader had created the slot app_sub already: the subscription uses it).
    insert(&a, &a_leader, "t", 1, 100).await;
    wait_rows(&b, &b_leader, 100, "rows 1..100 never reached B").await;
    assert_eq!(
        b.query_one(
            &b_leader,
            "SELECT count(*) FROM pg_subscription WHERE subname = 'app_sub'"
        )
        .await
        .ok()
        .as_deref(),
        Some("1")
    );

    // Watched: both sides' ctl logical and /patroni.
    a.wait_until(
        "ctl logical on A never showed the subscriber's permanent slot",
        FLOW,
        || async {
            let shown = String::from_utf8_lossy(&a.ctl(&["logical"]).stdout).into_owned();
            shown.contains("app_pub") && shown.contains("app_sub") && shown.contains("yes")
        },
    )
    .await;
    // B's table `wide` lacks A's column b: its initial copy fails again and again; the
    // subscription says so (once in the log), and the check gives the SQL that fixes it.
    let logical = |cluster: &Cluster, args: &[&str]| {
        let out = cluster.ctl(args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let find = |v: &serde_json::Value, key: &str, n: &str| {
        v[key]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == n).cloned())
            .unwrap_or_default()
    };
    b.wait_until(
        "ctl logical on B never showed app_sub's error and why bad_sub is missing",
        FLOW,
        || async {
            let v = logical(&b, &["logical", "-f", "json"]);
            let app = find(&v, "subscriptions", "app_sub");
            let bad = find(&v, "subscriptions", "bad_sub");
            app["state"] == "error"
                && app["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("wide"))
                && bad["state"] == "missing"
                && bad["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("could not connect to the publisher"))
        },
    )
    .await;
    println!("B$ pgbaton ctl logical\n{}", b.ctl_ok(&["logical"]));
    println!("A$ pgbaton ctl logical\n{}", a.ctl_ok(&["logical"]));
    // A publication in a database that does not exist says so.
    let lost = find(
        &logical(&a, &["logical", "-f", "json"]),
        "publications",
        "lost_pub",
    );
    assert!(
        lost["state"]
            .as_str()
            .is_some_and(|s| s.contains("database \"nodb\" does not exist")),
        "{lost}"
    );
    let wide = || async {
        logical(&b, &["logical", "check", "-f", "json"])
            .as_array()
            .and_then(|l| l.iter().find(|p| p["target"] == "public.wide").cloned())
    };
    b.wait_until("the check never found public.wide", FLOW, || async {
        wide().await.is_some()
    })
    .await;
    let fix = wide().await.unwrap_or_default()["fix"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "B$ pgbaton ctl logical check\n{}",
        String::from_utf8_lossy(&b.ctl(&["logical", "check"]).stdout)
    );
    assert_eq!(fix, "ALTER TABLE public.wide ADD COLUMN b integer;");
    b.query(&b_leader, &fix).await.expect("the fix");
    b.wait_until("app_sub never streamed after the fix", FLOW, || async {
        let v = logical(&b, &["logical", "-f", "json"]);
        let app = find(&v, "subscriptions", "app_sub");
        app["state"] == "streaming" && app["tables_syncing"] == 0
    })
    .await;
    let patroni = b.patroni(&b_leader).await.expect("GET /patroni on B");
    assert!(
        patroni["logical"]["subscriptions"].is_array() && patroni["role"].is_string(),
        "/patroni keeps Patroni's keys and adds logical: {patroni}"
    );
    let (_, metrics) = b
        .api_get(&b_leader, "/metrics")
        .await
        .expect("GET /metrics");
    assert!(
        metrics.contains("pgbaton_logical_subscription_streaming{")
            && metrics.contains("subscription=\"app_sub\"} 1"),
        "{metrics}"
    );
    // Reported once, not at every retry.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let said = b
        .agent_log(&b_leader)
        .matches("subscription bad_sub (missing): create subscription bad_sub failed: could not connect to the publisher")
        .count();
    assert_eq!(
        said,
        1,
        "bad_sub's failure logged once:\n{}",
        b.agent_log(&b_leader)
    );
    // ... and not tried again every round: a failed change waits 30 s.
    let pg_log =
        std::fs::read_to_string(b.member_dir(&b_leader).join("postgresql.log")).unwrap_or_default();
    let tries = pg_log
        .lines()
        .filter(|l| l.contains("ERROR:  could not connect to the publisher"))
        .count() as u64;
    let bound = declared_at.elapsed().as_secs() / 30 + 2;
    assert!(
        (1..=bound).contains(&tries),
        "CREATE SUBSCRIPTION bad_sub tried {tries} times in {:?}",
        declared_at.elapsed()
    );

    // Checked: A's table without replica identity (exit status 1 when something is found).
    let out = a.ctl(&["logical", "check"]);
    println!(
        "A$ pgbaton ctl logical check\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!out.status.success(), "problems found: exit status 1");
    let problems = logical(&a, &["logical", "check", "-f", "json"]);
    let nopk = problems
        .as_array()
        .and_then(|l| l.iter().find(|p| p["target"] == "public.nopk").cloned())
        .unwrap_or_else(|| a.fail(&format!("no problem found for public.nopk: {problems}")));
    assert!(
        nopk["fix"]
            .as_str()
            .is_some_and(|f| f.contains("REPLICA IDENTITY FULL")),
        "{nopk}"
    );
    assert!(
        a.agent_log(&a_leader).contains("public.nopk"),
        "the agent warns too"
    );

    // A publication dropped by hand is put back.
    a.query(&a_leader, "DROP PUBLICATION app_pub")
        .await
        .expect("drop by hand");
    a.wait_until("app_pub was never put back", FLOW, || async {
        a.query_one(
            &a_leader,
            "SELECT count(*) FROM pg_publication WHERE pubname = 'app_pub'",
        )
        .await
        .is_ok_and(|n| n == "1")
    })
    .await;
    insert(&a, &a_leader, "t", 101, 150).await;
    wait_rows(
        &b,
        &b_leader,
        150,
        "rows 101..150 never reached B after app_pub came back",
    )
    .await;

    // A's replica holds a copy of the subscriber's slot at what B confirmed.
    let a_replica = other(&a_leader);
    wait_for_slot_copy(&a, &a_leader, a_replica, "app_sub").await;
    a.wait_until_all_streaming(UP).await;

    // A's leader node dies: rows keep flowing from its new leader.
    a.kill_node(&a_leader);
    a.wait_until("A's replica was never promoted", UP, || async {
        a.in_recovery(a_replica).await.is_ok_and(|r| !r)
    })
    .await;
    insert(&a, a_replica, "t", 151, 250).await;
    wait_rows(
        &b,
        &b_leader,
        250,
        "rows 151..250 never came from A's new leader",
    )
    .await;

    // B's replica has replayed everything; B's leader node dies: the promoted replica's
    // apply worker resumes from the replication origin.
    let b_replica = other(&b_leader);
    b.wait_until("B's replica never replayed rows 1..250", FLOW, || async {
        rows(&b, b_replica, "t").await == Some((250, 250, 250))
    })
    .await;
    b.kill_node(&b_leader);
    b.wait_until("B's replica was never promoted", UP, || async {
        b.in_recovery(b_replica).await.is_ok_and(|r| !r)
    })
    .await;
    insert(&a, a_replica, "t", 251, 400).await;
    wait_rows(
        &b,
        b_replica,
        400,
        "rows 251..400 never reached B's new leader",
    )
    .await;

    // Removing a declared subscription: refused without --force, saying what goes.
    let out = b.ctl(&["edit-config", "-s", "logical.subscriptions.app_sub=null"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused without --force");
    assert!(
        said.contains("DROP SUBSCRIPTION app_sub")
            && said.contains("slot app_sub on the publisher"),
        "{said}"
    );
    assert_eq!(
        b.query_one(
            b_replica,
            "SELECT count(*) FROM pg_subscription WHERE subname = 'app_sub'"
        )
        .await
        .ok()
        .as_deref(),
        Some("1"),
        "nothing changed"
    );
    b.ctl_ok(&[
        "edit-config",
        "-s",
        "logical.subscriptions.app_sub=null",
        "--force",
    ]);
    b.wait_until("app_sub was never dropped", FLOW, || async {
        b.query_one(
            b_replica,
            "SELECT count(*) FROM pg_subscription WHERE subname = 'app_sub'",
        )
        .await
        .is_ok_and(|n| n == "0")
    })
    .await;
    let config = b.ctl_ok(&["show-config"]);
    assert!(
        config.contains("drop:") && config.contains("app_sub: postgres"),
        "{config}"
    );
}
