//! Planned switchovers that the router's clients do not see, on real etcd, PostgreSQL 15
//! and agents, with the router in this process (ARCHITECTURE.md, "Handover"): the router
//! registers under `routers/<name>`, holds new write connections and transactions while a
//! switchover is due, lets running transactions finish, acknowledges, and the leader stops
//! PostgreSQL only then; the held work continues on the new leader.
//!
//! Several concurrent clients write through the router's write address: persistent
//! tokio-postgres sessions and clients opening one connection per write. Switchovers
//! without a named candidate and with one; a switchover followed by a failover (the
//! leader's agent and PostgreSQL SIGKILLed) with transaction and session pooling.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::router::{app, pool_config, router_config, superuser, RunningRouter};
use common::{Cluster, UP};
use pgbaton_router::pool::PoolMode;
use pgbaton_router::{Forwarding, RouterConfig};
use tokio_postgres::NoTls;

/// Transaction pooling with SCRAM: `app`'s secret copied from `pg_authid` on the leader.
async fn pooled_config(cluster: &Cluster, leader: &str, dir: &std::path::Path) -> RouterConfig {
    pool_config(cluster, leader, dir, "pooled", PoolMode::Transaction).await
}

async fn connect(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = app(addr).connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A session through `addr` that has run `sql`, and its connection's task (which ends
/// when the router closes the session).
async fn session_with(
    addr: SocketAddr,
    sql: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = app(addr).connect(NoTls).await.expect("session");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (client, connection)
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    /// The longest time a client waited for one write (connect included).
    longest: Duration,
}

fn record(tally: &Mutex<Tally>, took: Duration, failure: Option<String>) {
    let mut t = tally.lock().expect("tally");
    t.longest = t.longest.max(took);
    match failure {
        None => t.ok += 1,
        Some(f) => t.failed.push(f),
    }
}

/// The persistent sessions' tally, the per-write clients' tally, and their tasks.
type Clients = (
    Arc<Mutex<Tally>>,
    Arc<Mutex<Tally>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// `persistent` clients writing over one session each (reconnecting after an error) and
/// `per_write` clients opening a connection per write, until `stop`.
fn spawn_clients(
    addr: SocketAddr,
    persistent: usize,
    per_write: usize,
    stop: Arc<AtomicBool>,
) -> Clients {
    let sessions = Arc::new(Mutex::new(Tally::default()));
    let connections = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for k in 0..persistent {
        let (tally, stop) = (sessions.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = async {
                    if client.is_none() {
                        client = Some(connect(addr).await?);
                    }
                    let c = client.as_ref().expect("connected");
                    c.execute(
                        "INSERT INTO handover (client, note) VALUES ($1, 'session')",
                        &[&(k as i32)],
                    )
                    .await
                }
                .await;
                let took = started.elapsed();
                let failed = result.is_err();
                record(
                    &tally,
                    took,
                    result.err().map(|e| format!("session {k}: {e:?}")),
                );
                if failed {
                    client = None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for k in 0..per_write {
        let (tally, stop) = (connections.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = async {
                    let c = connect(addr).await?;
                    c.execute(
                        "INSERT INTO handover (client, note) VALUES ($1, 'per write')",
                        &[&(100 + k as i32)],
                    )
                    .await
                }
                .await;
                let took = started.elapsed();
                record(
                    &tally,
                    took,
                    result.err().map(|e| format!("per-write {k}: {e:?}")),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    (sessions, connections, tasks)
}

/// `ctl switchover --force [--candidate c]` and wait until another member leads and the
/// router has written on it.
async fn switchover(cluster: &Cluster, candidate: Option<&str>) -> (String, String, Duration) {
    let all = cluster.members();
    cluster
        .wait_until_streaming(&all, Duration::from_secs(60))
        .await;
    let from = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let mut args = vec!["switchover", "--force"];
    if let Some(c) = candidate {
        args.extend(["--candidate", c]);
    }
    let started = Instant::now();
    let out = cluster.ctl(&args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let state = cluster.state().await.ok();
        let settled = state.as_ref().is_some_and(|s| {
            s.failover.is_none() && s.members.get(&now).is_some_and(|m| m.is_primary_role())
        });
        if now != from && settled {
            if let Some(c) = candidate {
                assert_eq!(now, c, "the named candidate leads");
            }
            return (from, now, started.elapsed());
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("{from} still leads after `ctl {args:?}`"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member of `cluster` other than `than`.
fn another_member(cluster: &Cluster, than: &str) -> String {
    cluster
        .members()
        .into_iter()
        .find(|m| m != than)
        .expect("another member")
}

/// The table the clients write, made by the superuser on the leader.
async fn create_table(cluster: &Cluster) {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = superuser(cluster, &leader).await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS handover (id bigserial PRIMARY KEY, client int, note text);
             GRANT ALL ON handover, handover_id_seq TO app",
        )
        .await
        .expect("create table");
}

/// Run the clients through `router` across a switchover without a candidate and one with,
/// and return (sessions, per-write) tallies.
async fn run_switchovers(cluster: &Cluster, router: &RunningRouter, label: &str) -> (Tally, Tally) {
    create_table(cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sessions, connections, tasks) = spawn_clients(router.write, 4, 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a, b, took) = switchover(cluster, None).await;
    eprintln!("{label}: switchover without candidate {a} -> {b} in {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let candidate = another_member(cluster, &b);
    let (a, b, took) = switchover(cluster, Some(&candidate)).await;
    eprintln!("{label}: switchover to {candidate} {a} -> {b} in {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let take = |m: Arc<Mutex<Tally>>| std::mem::take(&mut *m.lock().expect("tally"));
    (take(sessions), take(connections))
}

fn report(label: &str, kind: &str, t: &Tally) {
    eprintln!(
        "{label}: {kind}: {} ok, {} failed, longest wait for one write {:?}{}",
        t.ok,
        t.failed.len(),
        t.longest,
        if t.failed.is_empty() {
            String::new()
        } else {
            format!("\n  {}", t.failed.join("\n  "))
        }
    );
}

/// Both kinds of clients wrote, none of their operations failed across the two
/// switchovers, and the router `name` acknowledged each.
fn assert_nothing_failed(
    label: &str,
    sessions: &Tally,
    connections: &Tally,
    acks: &std::sync::atomic::AtomicUsize,
    name: &str,
) {
    report(label, "persistent sessions", sessions);
    report(label, "connection per write", connections);
    assert!(sessions.ok > 0 && connections.ok > 0, "the clients wrote");
    assert!(
        sessions.failed.is_empty() && connections.failed.is_empty(),
        "no failed operation across two switchovers: {:?} {:?}",
        sessions.failed,
        connections.failed
    );
    let seen = acks.load(Ordering::Relaxed);
    assert!(
        seen >= 2,
        "the router acknowledged each switchover in routers/{name} ({seen} seen)"
    );
}

/// The router registered itself and acknowledged the switchover in its key: the agents'
/// log says the leader waited for it (or that no wait was needed).
async fn wait_registered(cluster: &Cluster, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(state) = cluster.state().await {
            if state.routers.contains_key(name) {
                return;
            }
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("the router never registered as routers/{name}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts the distinct `failover` revisions the router `name` acknowledged in its key.
fn watch_acks(
    cluster: &Cluster,
    name: &str,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (endpoint, prefix) = (cluster.etcd_endpoint(), cluster.path());
    let (name, seen) = (name.to_string(), count.clone());
    let task = tokio::spawn(async move {
        let mut last = None;
        loop {
            if let Ok(state) = pgbaton_dcs::load_cluster(
                std::slice::from_ref(&endpoint),
                &prefix,
                Duration::from_secs(2),
            )
            .await
            {
                let acked = state.routers.get(&name).and_then(|r| r.paused_for);
                if acked.is_some() && acked != last {
                    seen.fetch_add(1, Ordering::Relaxed);
                    last = acked;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (count, task)
}

/// The agents' lines about the switchovers (what the leaders waited for, and how long).
fn print_handover_log(cluster: &Cluster) {
    for m in cluster.members() {
        for line in cluster.agent_log(&m).lines() {
            if line.contains("switchover") || line.contains("promot") {
                eprintln!("{m}: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_cost_transaction_pooled_and_per_write_clients_nothing() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let router = RunningRouter::start(pooled_config(&cluster, &leader, dir.path()).await).await;
    wait_registered(&cluster, "pooled").await;
    let (acks, watching) = watch_acks(&cluster, "pooled");
    let (sessions, connections) = run_switchovers(&cluster, &router, "transaction pool").await;
    watching.abort();
    print_handover_log(&cluster);
    assert_nothing_failed("transaction pool", &sessions, &connections, &acks, "pooled");
    drop(router);
    // The router's key goes when it stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .state()
        .await
        .is_ok_and(|s| s.routers.contains_key("pooled"))
    {
        assert!(
            Instant::now() < deadline,
            "routers/pooled outlived the router"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_cost_per_write_clients_nothing_without_pooling() {
    let cluster = Cluster::start(3).await;
    cluster.wait_until_all_streaming(UP).await;
    let router = RunningRouter::start(router_config(&cluster, "relay")).await;
    wait_registered(&cluster, "relay").await;
    let (acks, watching) = watch_acks(&cluster, "relay");
    let (sessions, connections) = run_switchovers(&cluster, &router, "no pooling").await;
    watching.abort();
    print_handover_log(&cluster);
    assert!(
        acks.load(Ordering::Relaxed) >= 2,
        "the router acknowledged each switchover in routers/relay"
    );
    report("no pooling", "persistent sessions", &sessions);
    report("no pooling", "connection per write", &connections);
    assert!(connections.ok > 0, "the clients wrote");
    assert!(
        connections.failed.is_empty(),
        "no failed connection-per-write operation across two switchovers: {:?}",
        connections.failed
    );
    // Sessions forwarded without pooling cannot be moved (the router never saw the
    // client's credentials): each is closed once per switchover at most.
    assert!(
        sessions.failed.len() <= 2 * 4,
        "at most one error per session per switchover: {:?}",
        sessions.failed
    );
}

/// One operation of a client: when it started and ended, and its error.
struct Op {
    client: String,
    start: Instant,
    end: Instant,
    error: Option<String>,
}

/// `persistent` clients over one session each (reconnecting after an error) and `per_write`
/// clients opening a connection per write, through `addr`, each operation recorded.
fn spawn_recorded(
    addr: SocketAddr,
    label: &'static str,
    persistent: usize,
    per_write: usize,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for k in 0..persistent + per_write {
        let (ops, stop) = (ops.clone(), stop.clone());
        let per_op = k >= persistent;
        let client_name = format!(
            "{label} {} {k}",
            if per_op { "per-write" } else { "session" }
        );
        tasks.push(tokio::spawn(async move {
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let result = async {
                    if client.is_none() || per_op {
                        // The last session ends before the next one asks for a place: a
                        // client holding one while it waits for another could wait for
                        // itself when the session pool is full.
                        client = None;
                        client = Some(connect(addr).await?);
                    }
                    let c = client.as_ref().expect("connected");
                    c.execute(
                        "INSERT INTO handover (client, note) VALUES ($1, $2)",
                        &[&(k as i32), &label],
                    )
                    .await
                }
                .await;
                let error = result.err().map(|e| format!("{e:?}"));
                if error.is_some() {
                    client = None;
                }
                ops.lock().expect("ops").push(Op {
                    client: client_name.clone(),
                    start,
                    end: Instant::now(),
                    error,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_then_a_failover_cost_pooled_clients_one_error_per_transaction_in_flight() {
    // The routers' own account of the handover, for a failure's diagnosis.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pgbaton_router=info")
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let txn = RunningRouter::start(
        pool_config(&cluster, &leader, dir.path(), "txn", PoolMode::Transaction).await,
    )
    .await;
    // Session mode: one server connection per session; 10 sessions here (4 persistent, 4
    // connecting per write, 2 idle ones moved or closed at the switchover), so the per-write
    // clients take turns at the 2 places left.
    let session_cfg =
        pool_config(&cluster, &leader, dir.path(), "session", PoolMode::Session).await;
    let session = RunningRouter::start(session_cfg).await;
    wait_registered(&cluster, "txn").await;
    wait_registered(&cluster, "session").await;
    create_table(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = spawn_recorded(txn.write, "transaction", 4, 4, stop.clone(), ops.clone());
    tasks.extend(spawn_recorded(
        session.write,
        "session",
        4,
        4,
        stop.clone(),
        ops.clone(),
    ));
    // Two idle session-mode sessions: one whose state the router knows (a reported
    // parameter) moves, one with state it cannot carry (search_path) is closed, saying why.
    let (mover, _) = session_with(session.write, "SET application_name = 'mover'").await;
    let port = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let port_before = port(
        mover
            .query_one("SELECT inet_server_port()", &[])
            .await
            .expect("port"),
    );
    let (stayer, stayer_conn) = session_with(session.write, "SET search_path TO public").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (a, b, took) = switchover(&cluster, None).await;
    eprintln!("switchover without candidate {a} -> {b} in {took:?}");
    let row = mover
        .query_one(
            "SELECT inet_server_port(), current_setting('application_name'), pg_is_in_recovery()",
            &[],
        )
        .await
        .expect("the idle session moved to the new leader");
    let (port_after, name, recovery): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
    eprintln!("moved session: server port {port_before} -> {port_after}, application_name {name}");
    assert_ne!(
        port_before, port_after,
        "the session runs on another server"
    );
    assert_eq!((name.as_str(), recovery), ("mover", false));
    let closed = tokio::time::timeout(Duration::from_secs(10), stayer_conn)
        .await
        .expect("the unmovable session was closed")
        .expect("join");
    let message = format!("{closed:?}");
    eprintln!("unmovable session: {message}");
    assert!(
        message.contains("57P01") || message.contains("E57P01"),
        "closed with 57P01: {message}"
    );
    assert!(
        message.contains("search_path") && message.contains("connect again"),
        "the message names the state and asks to reconnect: {message}"
    );
    drop(stayer);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The leader's node dies: agent and PostgreSQL SIGKILLed, not restarted.
    let killed = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let kill = Instant::now();
    cluster.kill_node(&killed);
    eprintln!("killed {killed} (agent and PostgreSQL)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let new_leader = loop {
        let now = cluster.wait_for_leader(Duration::from_secs(30)).await;
        if now != killed {
            break now;
        }
        assert!(Instant::now() < deadline, "nobody replaced {killed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{new_leader} leads {:?} after the kill", kill.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop((txn, session));
    print_handover_log(&cluster);

    let ops = std::mem::take(&mut *ops.lock().expect("ops"));
    let ok = |o: &&Op| o.error.is_none();
    assert!(
        ops.iter().filter(|o| o.end < kill).filter(ok).count() > 100,
        "the clients wrote before the failover"
    );
    // The switchover: nothing failed, in either mode.
    let before: Vec<String> = ops
        .iter()
        .filter(|o| o.end < kill)
        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.client)))
        .collect();
    // The failover: at most the operation each client had in flight at the kill.
    let mut after: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for o in ops.iter().filter(|o| o.end >= kill) {
        if let Some(e) = &o.error {
            let in_flight = o.start <= kill;
            after.entry(o.client.as_str()).or_default().push(format!(
                "{}{e}",
                if in_flight { "in flight: " } else { "after: " }
            ));
        }
    }
    // The first write acknowledged by the new leader: an operation started after the kill.
    let first = ops
        .iter()
        .filter(|o| o.start > kill && o.error.is_none())
        .map(|o| o.end.duration_since(kill))
        .min()
        .expect("a write after the failover");
    let started_after = |label: &str| {
        ops.iter()
            .filter(|o| o.start > kill && o.client.starts_with(label))
            .filter(ok)
            .count()
    };
    eprintln!(
        "switchover: {} ok, {} failed; failover: first write {:?} after the kill, failures per client {:?}; ok after: transaction {}, session {}",
        ops.iter().filter(|o| o.end < kill).filter(ok).count(),
        before.len(),
        first,
        after,
        started_after("transaction"),
        started_after("session"),
    );
    assert!(before.is_empty(), "the switchover cost nothing: {before:?}");
    for (client, failures) in &after {
        // In flight: the operation running at the kill, or a message tokio-postgres sent
        // in the background (the Close of the statement `execute` prepared) that the lost
        // leader never answered, seen by the client's next operation as "closed".
        assert!(
            failures.len() <= 1,
            "{client}: at most the transaction in flight at the kill failed: {failures:?}"
        );
        assert!(
            failures.iter().all(|f| f.contains("failover")
                || f.contains("57P01")
                || f.contains("08006")
                || f.contains("kind: Closed")),
            "{client}: the failure names the failover: {failures:?}"
        );
    }
    // ttl 4 s + 1 s, and slack for a loaded machine.
    assert!(
        first <= Duration::from_secs(4 + 1 + 2),
        "first acknowledged write {first:?} after the kill"
    );
    assert!(
        started_after("transaction") > 0 && started_after("session") > 0,
        "both routers' clients wrote on the new leader"
    );
}

/// The router's Prometheus counter `name` (its status API on `api`).
async fn router_counter(api: u16, name: &str) -> f64 {
    let (_, body) = common::http::get(api, "/metrics")
        .await
        .expect("router metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Session pooling with kernel forwarding, as `local up` sets it up: at each switchover
/// the kernel-forwarded sessions are taken out of the kernel between two transactions and
/// moved to the new leader with their state. Busy persistent sessions see no error; an idle
/// session keeps the parameters it SET and its prepared statement; a session holding
/// LISTEN is closed with a message naming it; the router still acknowledges each switchover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_move_kernel_forwarded_sessions_with_their_state() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pgbaton_router=info")
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = pool_config(&cluster, &leader, dir.path(), "kernel", PoolMode::Session).await;
    // Refuses to start where the kernel cannot forward: the test needs it.
    cfg.forwarding = Forwarding::Kernel;
    cfg.pool.default_pool_size = 20;
    let api = common::ports::closed_port();
    cfg.api_listen = Some(format!("127.0.0.1:{api}"));
    let router = RunningRouter::start(cfg).await;
    wait_registered(&cluster, "kernel").await;
    let (acks, watching) = watch_acks(&cluster, "kernel");
    create_table(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sessions, connections, tasks) = spawn_clients(router.write, 4, 2, stop.clone());

    // An idle session with state: parameters it SET and a prepared statement.
    let (keeper, _) = session_with(
        router.write,
        "SET work_mem = '7MB'; SET search_path TO public, pg_catalog",
    )
    .await;
    let statement = keeper
        .prepare("SELECT $1::int4 + 1, inet_server_port()")
        .await
        .expect("prepare");
    let before: i32 = keeper
        .query_one(&statement, &[&41i32])
        .await
        .expect("prepared statement")
        .get(1);
    // A session holding LISTEN, which cannot move.
    let (_listener, listener_conn) = session_with(router.write, "LISTEN handover_news").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forwarded = router_counter(api, "pgbaton_router_kernel_forwarded_sessions").await;
    assert!(
        forwarded >= 6.0,
        "the sessions are forwarded by the kernel ({forwarded} counted)"
    );

    let (a, b, took) = switchover(&cluster, None).await;
    eprintln!("kernel sessions: switchover without candidate {a} -> {b} in {took:?}");
    let check = |label: &'static str| {
        let (keeper, statement) = (&keeper, &statement);
        async move {
            let row = keeper
                .query_one(statement, &[&41i32])
                .await
                .unwrap_or_else(|e| panic!("{label}: the prepared statement after the move: {e}"));
            let (sum, port): (i32, i32) = (row.get(0), row.get(1));
            let row = keeper
                .query_one(
                    "SELECT current_setting('work_mem'), current_setting('search_path'), pg_is_in_recovery()",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{label}: the moved session: {e}"));
            let (work_mem, path, recovery): (String, String, bool) =
                (row.get(0), row.get(1), row.get(2));
            eprintln!(
                "{label}: moved session on port {port}: work_mem {work_mem}, search_path {path}"
            );
            assert_eq!(sum, 42);
            assert_eq!(
                (work_mem.as_str(), path.as_str(), recovery),
                ("7MB", "public, pg_catalog", false),
                "{label}: the session's parameters moved with it, to the leader"
            );
            port
        }
    };
    let after_first = check("first switchover").await;
    assert_ne!(
        before, after_first,
        "the idle session runs on the new leader"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), listener_conn)
        .await
        .expect("the LISTEN session was closed")
        .expect("join");
    let message = format!("{closed:?}");
    assert!(
        message.contains("LISTEN") && message.contains("switchover"),
        "the LISTEN session hears why: {message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let candidate = another_member(&cluster, &b);
    let (a, b, took) = switchover(&cluster, Some(&candidate)).await;
    eprintln!("kernel sessions: switchover to {candidate} {a} -> {b} in {took:?}");
    let after_second = check("second switchover").await;
    assert_ne!(after_first, after_second);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .is_err()
        {
            for path in ["/clients", "/servers", "/pools"] {
                let (_, body) = common::http::get(api, path).await.unwrap_or_default();
                eprintln!("{path}: {body}");
            }
            panic!("a client is stuck (its last operation never ended)");
        }
    }
    watching.abort();
    print_handover_log(&cluster);
    let take = |m: Arc<Mutex<Tally>>| std::mem::take(&mut *m.lock().expect("tally"));
    let (sessions, connections) = (take(sessions), take(connections));
    assert_nothing_failed("kernel sessions", &sessions, &connections, &acks, "kernel");
}
