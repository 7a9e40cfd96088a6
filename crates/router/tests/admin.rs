//! The pooler's admin surface on real PostgreSQL 15 and etcd: `GET /clients`, `/servers`,
//! `/stats` with PgBouncer's columns, the per-pool series of `/metrics`, the pools in
//! `/status`, `POST /pause` and `/resume` (new work waits, busy server connections close at
//! the end of their transaction), and SIGHUP reloading router.yml in the standalone router
//! binary without dropping a client (a bigger pool applies at once; an invalid file is
//! refused and the running configuration kept).

mod support;

use std::time::{Duration, Instant};

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, RouterConfig};
use serde_json::Value;
use support::{Cluster, RunningRouter, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pooled_config(cluster: &Cluster, size: usize) -> RouterConfig {
    let mut cfg = cluster.router_config();
    cfg.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: vec!["host all app 127.0.0.1/32 trust".into()],
        ..AuthConfig::default()
    });
    cfg.pool = PoolSettings {
        pool_mode: PoolMode::Transaction,
        default_pool_size: size,
        query_wait_timeout: Duration::from_secs(30),
        ..PoolSettings::default()
    };
    cfg.forwarding = Forwarding::Userspace;
    cfg
}

/// (HTTP status, body) of `method path` on the API at `api`.
async fn http(api: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(api)
        .await
        .expect("connect api");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: router\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn json(api: std::net::SocketAddr, path: &str) -> Value {
    let (code, body) = http(api, "GET", path).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Backends of `app` on the server, seen directly.
async fn app_backends(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_servers_stats_metrics_and_pause_resume() {
    let cluster = Cluster::start(false).await;
    let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("direct connection");
    let router = RunningRouter::start(pooled_config(&cluster, 2)).await;
    let api = router.api;

    let holder = support::connect(router.write, None).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let holder_pid = pid(&holder).await;
    let idle = support::connect(router.write, None).await;
    for i in 0..5 {
        idle.query_one("SELECT $1::int", &[&i])
            .await
            .expect("query");
    }

    // SHOW CLIENTS: both clients, the one in a transaction active and linked to its server
    // (the other's last ReadyForQuery may still be on its way when the driver returns).
    let clients = support::eventually("one active client and one idle", T, || async {
        let clients = json(api, "/clients").await;
        let count = |state: &str| {
            clients
                .as_array()
                .map(|l| l.iter().filter(|c| c["state"] == state).count())
        };
        (count("active") == Some(1) && count("idle") == Some(1)).then_some(clients)
    })
    .await;
    let clients = clients.as_array().expect("a list");
    assert_eq!(clients.len(), 2, "{clients:?}");
    for column in [
        "type",
        "user",
        "database",
        "state",
        "addr",
        "port",
        "local_addr",
        "local_port",
        "connect_time",
        "request_time",
        "wait",
        "wait_us",
        "close_needed",
        "ptr",
        "link",
        "remote_pid",
        "tls",
        "application_name",
    ] {
        assert!(clients[0].get(column).is_some(), "{column} in {clients:?}");
    }
    let active: Vec<&Value> = clients.iter().filter(|c| c["state"] == "active").collect();
    assert_eq!(active.len(), 1, "{clients:?}");
    assert_eq!(active[0]["user"], "app");
    assert_eq!(active[0]["database"], "postgres");
    assert!(active[0]["connect_time"]
        .as_str()
        .is_some_and(|t| t.ends_with(" UTC")));
    let link = active[0]["link"]
        .as_u64()
        .expect("the active client's server");
    assert!(clients.iter().any(|c| c["state"] == "idle"), "{clients:?}");

    // SHOW SERVERS: the active one is the holder's backend, linked back to its client.
    let servers = json(api, "/servers").await;
    let servers = servers.as_array().expect("a list");
    let busy = servers
        .iter()
        .find(|s| s["state"] == "active")
        .unwrap_or_else(|| panic!("an active server in {servers:?}"));
    assert_eq!(busy["ptr"].as_u64(), Some(link));
    assert_eq!(busy["link"], active[0]["ptr"]);
    assert_eq!(busy["remote_pid"].as_i64(), Some(i64::from(holder_pid)));
    assert_eq!(
        busy["port"].as_u64(),
        Some(u64::from(cluster.primary.spec.port))
    );
    assert!(servers.iter().all(|s| s["type"] == "S"));

    // SHOW STATS: per database.
    let stats = json(api, "/stats").await;
    let db = stats
        .as_array()
        .and_then(|l| l.iter().find(|s| s["database"] == "postgres"))
        .unwrap_or_else(|| panic!("postgres in {stats}"));
    for column in [
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
    ] {
        assert!(db[column].is_u64(), "{column} in {db}");
    }
    assert!(db["total_xact_count"].as_u64() >= Some(5), "{db}");
    assert!(db["total_query_count"].as_u64() >= Some(5), "{db}");
    assert!(db["total_received"].as_u64() > Some(0), "{db}");
    assert!(db["total_query_time"].as_u64() > Some(0), "{db}");

    // Per-pool Prometheus series.
    let metrics = router.http_get("/metrics").await;
    let series = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("pgbaton_router_{name}{{"))
                    && l.contains("database=\"postgres\"")
                    && l.contains("user=\"app\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(series("pool_clients_active"), Some(1.0), "{metrics}");
    assert_eq!(series("pool_clients_waiting"), Some(0.0), "{metrics}");
    assert_eq!(series("pool_servers_active"), Some(1.0), "{metrics}");
    assert!(series("pool_servers_idle").is_some(), "{metrics}");
    assert!(series("pool_max_wait_seconds").is_some(), "{metrics}");
    assert!(series("pool_transactions_total") >= Some(5.0), "{metrics}");
    assert!(series("pool_queries_total") >= Some(5.0), "{metrics}");
    assert!(series("pool_received_bytes_total") > Some(0.0), "{metrics}");
    assert!(series("pool_sent_bytes_total") > Some(0.0), "{metrics}");

    // The pools in /status (what `ctl router-status` prints).
    let status = router.status().await;
    assert_eq!(status["pools"][0]["database"], "postgres", "{status}");
    let table = pgbaton_router::render_status_table(&status);
    assert!(
        table.contains("Pools:") && table.contains("transaction"),
        "{table}"
    );

    // PAUSE: the holder's transaction keeps its connection; the pause answers 202 while it
    // is busy, idle connections are closed at once.
    let (code, body) = http(api, "POST", "/pause?database=postgres&timeout=0.5").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"server_connections\":1"), "{body}");
    // New work waits.
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let row = idle
            .query_one("SELECT 42", &[])
            .await
            .expect("after resume");
        (row.get::<_, i32>(0), started.elapsed(), idle)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a paused database's query waits");
    // The transaction in progress goes on, and its end releases (closes) the connection.
    holder
        .query_one("SELECT 1", &[])
        .await
        .expect("in the transaction");
    holder.batch_execute("COMMIT").await.expect("commit");
    let (code, body) = http(api, "POST", "/pause?database=postgres&timeout=10").await;
    assert_eq!(code, 200, "{body}");
    support::eventually("no app backend while paused", T, || async {
        (app_backends(&admin).await == 0).then_some(())
    })
    .await;
    let status = router.status().await;
    assert_eq!(status["paused"], serde_json::json!(["postgres"]));
    let clients = json(api, "/clients").await;
    assert!(
        clients
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["state"] == "waiting")),
        "{clients}"
    );
    assert!(!waiter.is_finished());
    // RESUME: the waiting query runs.
    let (code, body) = http(api, "POST", "/resume?database=postgres").await;
    assert_eq!(code, 200, "{body}");
    let (value, waited, _idle) = tokio::time::timeout(T, waiter)
        .await
        .expect("resumed in time")
        .expect("join");
    assert_eq!(value, 42);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(pid(&holder).await > 0, "the holder goes on");
}

/// SIGHUP to this test process: the router under test reads router.yml again. The test's
/// own SIGHUP listener, installed first, makes sure the signal never takes its default
/// action (ending the process) whatever the router's listener is doing.
fn hup() {
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_router_yml_without_dropping_clients() {
    let cluster = Cluster::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("router.yml");
    let mut cfg = pooled_config(&cluster, 1);
    let write: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    cfg.write_listen = write.to_string();
    cfg.read_listen = format!("127.0.0.1:{}", support::free_port());
    cfg.api_listen = Some(api.to_string());
    cfg.pool.query_wait_timeout = Duration::from_secs(1);
    std::fs::write(&path, cfg.to_yaml()).expect("write router.yml");
    let _own_listener =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("SIGHUP");
    let running = pgbaton_router::Router::bind(RouterConfig::from_yaml_file(&path).expect("valid"))
        .await
        .expect("bind")
        .reload_on_sighup(&path);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(running.serve(async move {
        let _ = stopped.await;
    }));
    struct Router {
        api: std::net::SocketAddr,
        write: std::net::SocketAddr,
    }
    let router = Router { api, write };
    support::eventually("the router's API", T, || async {
        tokio::net::TcpStream::connect(router.api).await.ok()
    })
    .await;

    // Pool of one, held by a transaction: a second client times out.
    let holder = support::connect(router.write, None).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let holder_pid = pid(&holder).await;
    let second = support::connect(router.write, None).await;
    let err = second
        .query_one("SELECT 1", &[])
        .await
        .expect_err("pool of one is busy");
    assert!(
        err.to_string().contains("query_wait_timeout")
            || format!("{err:?}").contains("query_wait_timeout"),
        "{err:?}"
    );

    // default_pool_size 1 -> 3 on SIGHUP: the second client gets a connection while the
    // holder's transaction stays open on its own.
    cfg.pool.default_pool_size = 3;
    std::fs::write(&path, cfg.to_yaml()).expect("write router.yml");
    hup();
    support::eventually("the reload applied", T, || async {
        let status = json(router.api, "/status").await;
        (status["reload"]["outcome"] == "ok" && status["pools"][0]["pool_size"] == 3).then_some(())
    })
    .await;
    let second = support::connect(router.write, None).await;
    let row = second
        .query_one("SELECT 7", &[])
        .await
        .expect("a bigger pool");
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(
        pid(&holder).await,
        holder_pid,
        "the holder kept its connection"
    );

    // An invalid file: refused with a clear error, the running configuration kept.
    std::fs::write(
        &path,
        format!(
            "{}pool:\n  default_pool_sise: 9\n",
            cfg.to_yaml().replace("pool:\n", "poolx:\n")
        ),
    )
    .expect("write a broken router.yml");
    hup();
    let status = support::eventually("the reload refused", T, || async {
        let status = json(router.api, "/status").await;
        (status["reload"]["outcome"] == "refused").then_some(status)
    })
    .await;
    let error = status["reload"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("poolx") || error.contains("default_pool_sise"),
        "{status}"
    );
    assert_eq!(
        status["pools"][0]["pool_size"], 3,
        "the old configuration stays"
    );
    let metrics = http(router.api, "GET", "/metrics").await.1;
    assert!(
        metrics.contains("pgbaton_router_config_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    // Every client survived both reloads.
    holder.batch_execute("COMMIT").await.expect("commit");
    assert!(pid(&holder).await > 0, "the holder survived the reloads");
    assert_eq!(
        second
            .query_one("SELECT 8", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        8
    );
    let _ = stop.send(());
    serving
        .await
        .expect("join")
        .expect("the router stopped cleanly");
}
