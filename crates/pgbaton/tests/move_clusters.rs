//! `ctl move`: the clients of cluster A move online to cluster B (same etcd, another scope)
//! while they write. A's router pools in transaction mode (SCRAM checked by the router);
//! four clients keep a session each and two open a connection per write, all through
//! A's router only. B starts empty: `--copy-schema` creates the table, the declared
//! subscription copies the rows and follows; the router holds write transactions while
//! the last changes and the sequence are copied, then sends everything to B. Not one write
//! fails, every acknowledged row is on B once, the writes after the move are on B only, and
//! the ids go on from A's sequence (a sequence not copied would collide on the key).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::router::{app, pool_config, RunningRouter};
use common::{edit_member_yaml, Cluster, UP};
use pgbaton_router::pool::PoolMode;
use tokio_postgres::NoTls;

/// What one client saw.
#[derive(Default)]
struct Seen {
    ids: Vec<i64>,
    errors: Vec<String>,
    /// The longest time between two acknowledged writes.
    longest_gap: Duration,
}

const INSERT: &str = "INSERT INTO items (client, v) VALUES ($1, 'x') RETURNING id";

/// A client writing through `addr` until `stop`: one session, or a connection per write.
async fn writer(
    addr: std::net::SocketAddr,
    client_id: i32,
    per_write: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut session: Option<tokio_postgres::Client> = None;
    let mut last_ok = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if session.is_none() {
            match app(addr).connect(NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    session = Some(client);
                }
                Err(e) => {
                    seen.lock().unwrap().errors.push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(client) = session.as_ref() else {
            continue;
        };
        match client.query_one(INSERT, &[&client_id]).await {
            Ok(row) => {
                let mut seen = seen.lock().unwrap();
                seen.ids.push(row.get(0));
                seen.longest_gap = seen.longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            Err(e) => {
                seen.lock().unwrap().errors.push(format!("insert: {e}"));
                session = None;
            }
        }
        if per_write {
            session = None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `pgbaton ctl --scope SCOPE move ARGS` against `cluster`'s etcd with PGPASSWORD set:
/// whether it succeeded, and what it said.
async fn ctl_move(cluster: &Cluster, scope: &str, args: &[&str]) -> (bool, String) {
    let endpoint = cluster.etcd_endpoint();
    let mut command = vec![
        "ctl".to_string(),
        "--dcs".into(),
        endpoint,
        "--scope".into(),
        scope.into(),
        "move".into(),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgbaton"))
            .args(&command)
            .env("PGPASSWORD", "postgres")
            .output()
            .expect("running ctl move")
    })
    .await
    .expect("ctl move task");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "$ pgbaton ctl --scope {scope} move {}\n{said}",
        args.join(" ")
    );
    (out.status.success(), said)
}

/// `ctl move` refused with a message containing each of `expected`.
async fn refused(cluster: &Cluster, scope: &str, args: &[&str], expected: &[&str]) {
    let (ok, said) = ctl_move(cluster, scope, args).await;
    assert!(!ok, "ctl move {args:?} should fail: {said}");
    for e in expected {
        assert!(
            said.contains(e),
            "ctl move {args:?}: expected {e:?} in {said}"
        );
    }
}

async fn count_items(cluster: &Cluster, member: &str) -> i64 {
    cluster
        .query_one(member, "SELECT count(*) FROM items")
        .await
        .ok()
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_move_sends_the_routers_clients_to_another_cluster_without_a_failed_write() {
    let mut a = Cluster::start_with(0, common::config::Timing::default()).await;
    a.add_member("node1");
    edit_member_yaml(&a, "node1", |yaml| {
        assert!(yaml.contains("wal_level: replica"), "{yaml}");
        yaml.replace("wal_level: replica", "wal_level: logical")
    });
    a.start_agent("node1");
    let b = Cluster::start_beside(&a, "target", 1);
    let a_leader = a.wait_until_all_streaming(UP).await;
    let b_leader = b.wait_until_all_streaming(UP).await;

    a.query(
        &a_leader,
        "CREATE TABLE items (id bigserial PRIMARY KEY, client int NOT NULL, v text);
         GRANT ALL ON items, items_id_seq TO app;
         INSERT INTO items (client, v) SELECT 0, 'before' FROM generate_series(1, 5000)",
    )
    .await
    .unwrap_or_else(|e| a.fail(&format!("setting up A: {e}")));
    // Refused before anything changes: this cluster, a cluster that does not exist, a
    // publisher without wal_level logical, roles whose secrets differ.
    refused(
        &a,
        "it",
        &["--to", "it", "--force"],
        &["names this cluster"],
    )
    .await;
    refused(
        &a,
        "it",
        &["--to", "nowhere", "--force"],
        &["there is no cluster nowhere"],
    )
    .await;
    refused(
        &b,
        "target",
        &["--to", "it", "--force"],
        &["wal_level is replica on target", "nothing was changed"],
    )
    .await;
    refused(
        &a,
        "it",
        &["--to", "target", "--force"],
        &[
            "another password there: app, postgres.",
            "pg_dumpall --roles-only",
            "nothing was changed",
        ],
    )
    .await;
    // The clients' roles with the same secrets on B (as pg_dumpall --roles-only copies
    // them): the router logs in to B with what the clients proved to it.
    let secret = |role: &'static str| {
        let a = &a;
        let leader = a_leader.clone();
        async move {
            a.query_one(
                &leader,
                &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
            )
            .await
            .unwrap_or_else(|e| a.fail(&format!("{role}'s secret: {e}")))
        }
    };
    let (app_secret, postgres_secret) = (secret("app").await, secret("postgres").await);
    b.query(
        &b_leader,
        &format!(
            "ALTER ROLE app PASSWORD '{app_secret}'; ALTER ROLE postgres PASSWORD '{postgres_secret}'"
        ),
    )
    .await
    .unwrap_or_else(|e| b.fail(&format!("roles on B: {e}")));

    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = pool_config(&a, &a_leader, dir.path(), "mover", PoolMode::Transaction).await;
    let router = RunningRouter::start(cfg).await;
    // The router registers before the move (the move waits for registered routers only).
    a.wait_until("the router never registered", UP, || async {
        a.state()
            .await
            .is_ok_and(|s| s.routers.contains_key("mover"))
    })
    .await;

    refused(
        &a,
        "it",
        &["--to", "target", "--force"],
        &["lacks these tables of it: public.items", "--copy-schema"],
    )
    .await;
    let published = a
        .query_one(&a_leader, "SELECT count(*) FROM pg_publication")
        .await
        .ok();
    assert_eq!(published.as_deref(), Some("0"), "nothing was changed");

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..6 {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(writer(
            router.write,
            k + 1,
            k >= 4,
            stop.clone(),
            seen.clone(),
        ));
        clients.push((k + 1, k >= 4, seen, task));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (ok, said) = ctl_move(&a, "it", &["--to", "target", "--copy-schema", "--force"]).await;
    if !ok {
        stop.store(true, Ordering::Relaxed);
        a.fail(&format!("ctl move failed:\n{said}"));
    }
    assert!(
        said.contains("Moved: the routers of it send every client to target"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for (id, per_write, seen, task) in clients {
        let _ = task.await;
        let seen = seen.lock().unwrap();
        println!(
            "client {id} ({}): {} writes acknowledged, {} failed, longest gap {:?}",
            if per_write {
                "connection per write"
            } else {
                "session"
            },
            seen.ids.len(),
            seen.errors.len(),
            seen.longest_gap
        );
        failures.extend(seen.errors.iter().map(|e| format!("client {id}: {e}")));
        acknowledged.extend(seen.ids.iter().copied());
    }
    assert!(failures.is_empty(), "failed writes: {failures:#?}");
    assert!(acknowledged.len() > 100, "{} writes", acknowledged.len());

    // Every acknowledged row is on B, once; the writes after the move only there.
    let ids = acknowledged
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let on_b = b
        .query_one(
            &b_leader,
            &format!("SELECT count(DISTINCT id) FROM items WHERE id IN ({ids})"),
        )
        .await
        .unwrap_or_else(|e| b.fail(&format!("rows on B: {e}")));
    assert_eq!(
        on_b,
        acknowledged.len().to_string(),
        "every acknowledged row on B"
    );
    let rows_a = count_items(&a, &a_leader).await;
    let rows_b = count_items(&b, &b_leader).await;
    println!("rows on A {rows_a}, on B {rows_b}");
    assert!(rows_b > rows_a, "the writes after the move went to B");

    // Recorded: another move is refused; --back routes the clients to A again.
    refused(
        &a,
        "it",
        &["--to", "target", "--force"],
        &["is recorded already", "--back"],
    )
    .await;
    let server_port = || async {
        let (client, connection) = app(router.write)
            .connect(NoTls)
            .await
            .expect("via the router");
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .expect("inet_server_port");
        row.get::<_, Option<i32>>(0).unwrap_or_default() as u16
    };
    assert_eq!(
        server_port().await,
        b.pg_port(&b_leader),
        "on B after the move"
    );
    // The router is registered where it routes: B's leader waits for it at a switchover,
    // A's no longer does.
    let registered = |cluster: &'static str| {
        let cluster = if cluster == "a" { &a } else { &b };
        async move {
            cluster
                .state()
                .await
                .is_ok_and(|s| s.routers.contains_key("mover"))
        }
    };
    b.wait_until("the router never registered under B", UP, || {
        registered("b")
    })
    .await;
    a.wait_until("the router stayed registered under A", UP, || async {
        !registered("a").await
    })
    .await;
    let (ok, said) = ctl_move(&a, "it", &["--back", "--to", "target", "--force"]).await;
    assert!(ok && said.contains("route to it again"), "{said}");
    a.wait_until("the router never routed to A again", UP, || async {
        server_port().await == a.pg_port(&a_leader)
    })
    .await;
    a.wait_until("the router never registered under A again", UP, || {
        registered("a")
    })
    .await;
    b.wait_until("the router stayed registered under B", UP, || async {
        !registered("b").await
    })
    .await;
    drop(router);
}
