//! A subscription through the publishing cluster's router follows that cluster's switchovers
//! and failovers without anyone editing a conninfo. Cluster A publishes; two routers serve
//! it in this process, one pooling (SCRAM checked by the router, which logs in to the
//! leader with what the client proved) and one forwarding the startup as it is. Cluster B
//! declares two subscriptions, each naming only one router's write address. A switches over
//! without a named candidate, then A's new leader node is SIGKILLed: rows keep arriving at
//! B through both routers, every row exactly once.

mod common;

use std::time::Duration;

use common::logical::{self, other};
use common::router::{router_config, RunningRouter};
use common::{edit_member_yaml, Cluster, UP};
use pgbaton_router::auth::{AuthConfig, AuthType};

const FLOW: Duration = Duration::from_secs(60);
const TABLES: [&str; 2] = ["via_pool", "via_plain"];

/// A's members keep both subscriptions' slots as permanent logical slots.
fn with_subscriber_slots(yaml: String) -> String {
    let mut slots = String::from("    slots:\n");
    for table in TABLES {
        slots.push_str(&format!(
            "      sub_{table}:\n        type: logical\n        database: postgres\n        plugin: pgoutput\n"
        ));
    }
    common::with_bootstrap_dcs(yaml, &slots)
}

/// Both tables on B hold ids 1..=n, each once, and nothing more arrives.
async fn wait_rows(b: &Cluster, member: &str, n: i64, what: &str) {
    for table in TABLES {
        logical::wait_rows(b, member, table, n, FLOW, &format!("{what} ({table})")).await;
    }
}

async fn insert(a: &Cluster, member: &str, from: i64, to: i64) {
    for table in TABLES {
        logical::insert(a, member, table, from, to).await;
    }
}

/// `replica` holds copies of both slots at what B confirmed on `leader`.
async fn wait_for_slot_copies(a: &Cluster, leader: &str, replica: &str) {
    for table in TABLES {
        logical::wait_for_slot_copy(a, leader, replica, &format!("sub_{table}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_through_the_router_follow_the_publishers_switchover_and_failover() {
    let mut a = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2"] {
        a.add_member(name);
        edit_member_yaml(&a, name, with_subscriber_slots);
        a.start_agent(name);
    }
    let b = Cluster::start(1).await;
    let a_leader = a.wait_until_all_streaming(UP).await;
    let b_leader = b.wait_until_all_streaming(UP).await;
    let tables: String = TABLES
        .iter()
        .map(|t| format!("CREATE TABLE {t} (id int PRIMARY KEY, v text);"))
        .collect();
    a.query(&a_leader, &tables)
        .await
        .unwrap_or_else(|e| a.fail(&format!("tables on A: {e}")));
    b.query(&b_leader, &tables)
        .await
        .unwrap_or_else(|e| b.fail(&format!("tables on B: {e}")));
    for table in TABLES {
        a.query(
            &a_leader,
            &format!("CREATE PUBLICATION pub_{table} FOR TABLE {table}"),
        )
        .await
        .unwrap_or_else(|e| a.fail(&format!("publication for {table}: {e}")));
    }

    // The pooling router checks postgres's password itself (its SCRAM secret from the
    // leader, as an auth_file holds it) and logs in to the leader with what the client
    // proved; the other passes the startup through.
    let secret = a
        .query_one(
            &a_leader,
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
        )
        .await
        .unwrap_or_else(|e| a.fail(&format!("postgres's secret: {e}")));
    let dir = tempfile::tempdir().expect("temp dir");
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, format!("\"postgres\" \"{secret}\"\n")).expect("userlist");
    let mut pooling = router_config(&a, "pooling");
    pooling.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        auth_file: Some(userlist),
        ..AuthConfig::default()
    });
    let pooling = RunningRouter::start(pooling).await;
    let plain = RunningRouter::start(router_config(&a, "plain")).await;

    // B subscribes through the routers only.
    let mut set = vec!["edit-config".to_string()];
    for (table, router) in [("via_pool", &pooling), ("via_plain", &plain)] {
        let source = format!(
            "host=127.0.0.1 port={} user=postgres password=postgres dbname=postgres",
            router.write.port()
        );
        for (key, value) in [
            ("database", "postgres".to_string()),
            ("publication", format!("pub_{table}")),
            ("source", source),
        ] {
            set.push("-s".into());
            set.push(format!("logical.subscriptions.sub_{table}.{key}={value}"));
        }
    }
    set.push("--force".into());
    b.ctl_ok(&set.iter().map(String::as_str).collect::<Vec<_>>());
    insert(&a, &a_leader, 1, 100).await;
    wait_rows(&b, &b_leader, 100, "rows 1..100 never reached B").await;
    for table in TABLES {
        let walsender = a
            .query_one(
                &a_leader,
                &format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'sub_{table}'"),
            )
            .await
            .ok();
        assert_eq!(
            walsender.as_deref(),
            Some("1"),
            "sub_{table} streams from A's leader"
        );
    }

    // A planned switchover, no candidate named: the subscriptions reconnect through the
    // routers to the new leader.
    let a_replica = other(&a_leader);
    wait_for_slot_copies(&a, &a_leader, a_replica).await;
    a.ctl_ok(&["switchover", "--force"]);
    a.wait_until("A's replica was never promoted", UP, || async {
        a.in_recovery(a_replica).await.is_ok_and(|r| !r)
    })
    .await;
    insert(&a, a_replica, 101, 200).await;
    wait_rows(
        &b,
        &b_leader,
        200,
        "rows 101..200 never came from A's leader after the switchover",
    )
    .await;

    // A's new leader node dies: the old leader, a replica again, takes over.
    a.wait_until_all_streaming(UP).await;
    wait_for_slot_copies(&a, a_replica, &a_leader).await;
    a.kill_node(a_replica);
    a.wait_until("A's old leader was never promoted again", UP, || async {
        a.in_recovery(&a_leader).await.is_ok_and(|r| !r)
    })
    .await;
    insert(&a, &a_leader, 201, 300).await;
    wait_rows(
        &b,
        &b_leader,
        300,
        "rows 201..300 never came from A's leader after the failover",
    )
    .await;
}
