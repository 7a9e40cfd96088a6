//! Planned switchovers that the router's clients do not see, on real etcd, PostgreSQL 15
//! and agents, with the router in this process (ARCHITECTURE.md, "Handover"): the router
//! registers under `routers/<name>`, holds new write connections and transactions while a
//! switchover is due, lets running transactions finish, acknowledges, and the leader stops
//! PostgreSQL only then; the held work continues on the new leader.
//!
//! Several concurrent clients write through the router's write address: persistent
//! tokio-postgres sessions and clients opening one connection per write. Switchovers
//! without a named candidate and with one.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, UP};
use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, Router, RouterConfig};
use tokio_postgres::NoTls;

/// A router serving the test cluster, stopped on drop.
struct RunningRouter {
    write: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningRouter {
    async fn start(cfg: RouterConfig) -> RunningRouter {
        let router = Router::bind(cfg).await.expect("bind router");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let write = router.write_addr();
        tokio::spawn(async move {
            let _ = router
                .serve(async move {
                    let _ = rx.await;
                })
                .await;
        });
        RunningRouter {
            write,
            stop: Some(tx),
        }
    }
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn router_config(cluster: &Cluster, name: &str) -> RouterConfig {
    let mut cfg = RouterConfig::new(vec![cluster.etcd_endpoint()], "/service/", &cluster.scope);
    cfg.write_listen = "127.0.0.1:0".into();
    cfg.read_listen = "127.0.0.1:0".into();
    cfg.lag_source = pgbaton_router::LagSource::Dcs;
    cfg.name = Some(name.to_string());
    cfg
}

async fn superuser(cluster: &Cluster, member: &str) -> tokio_postgres::Client {
    let (admin, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.pg_port(member))
        .user("postgres")
        .password("postgres")
        .dbname("postgres")
        .connect(NoTls)
        .await
        .expect("superuser connection");
    tokio::spawn(connection);
    admin
}

/// Transaction pooling with SCRAM: `app`'s secret copied from `pg_authid` on the leader.
async fn pooled_config(cluster: &Cluster, leader: &str, dir: &std::path::Path) -> RouterConfig {
    let admin = superuser(cluster, leader).await;
    let secret: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .expect("app's secret")
        .get(0);
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, format!("\"app\" \"{secret}\"\n")).expect("userlist");
    let mut cfg = router_config(cluster, "pooled");
    cfg.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        auth_file: Some(userlist),
        ..AuthConfig::default()
    });
    cfg.pool = PoolSettings {
        pool_mode: PoolMode::Transaction,
        default_pool_size: 8,
        query_wait_timeout: Duration::from_secs(30),
        ..PoolSettings::default()
    };
    cfg.forwarding = Forwarding::Userspace;
    cfg
}

fn app(addr: SocketAddr) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(20));
    config
}

async fn connect(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = app(addr).connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
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
    let candidate = cluster
        .members()
        .into_iter()
        .find(|m| *m != b)
        .expect("another member");
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
    report("transaction pool", "persistent sessions", &sessions);
    report("transaction pool", "connection per write", &connections);
    assert!(sessions.ok > 0 && connections.ok > 0, "the clients wrote");
    assert!(
        sessions.failed.is_empty() && connections.failed.is_empty(),
        "no failed operation across two switchovers: {:?} {:?}",
        sessions.failed,
        connections.failed
    );
    assert!(
        acks.load(Ordering::Relaxed) >= 2,
        "the router acknowledged each switchover in routers/pooled ({} seen)",
        acks.load(Ordering::Relaxed)
    );
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
