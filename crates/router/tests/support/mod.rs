//! Test harness for the router: a real etcd and real PostgreSQL 15 (a primary and optionally
//! a streaming replica, run as the `postgres` OS user) in a temp directory, the cluster state
//! written into etcd by hand (one `EtcdDcs` handle per member, as the agents would), a router
//! on free ports, and clients. Every process is killed on drop, even when a test panics.
#![allow(dead_code)]

mod rest_stub;
#[allow(unused_imports)]
pub use rest_stub::{patroni_document, RestStub};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use pgbaton_dcs::{ClusterPath, Dcs, EtcdDcs, EtcdProcess, MemberDoc, ETCD_BIN};
use pgbaton_postgres::{
    basebackup, initdb, query_status, slot_name_for, write_config, Credentials, PgSpec, Postmaster,
    StandbyConfig, Upstream,
};
use pgbaton_router::{Router, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
pub const SCOPE: &str = "routed";
/// The leader's (fake but consistent) WAL position in the member documents.
pub const POSITION: u64 = 1 << 30;
pub const T: Duration = Duration::from_secs(10);

/// Panics (never skips) when PostgreSQL 15 or etcd is not installed.
pub fn require_binaries() {
    for binary in ["initdb", "postgres", "pg_basebackup"] {
        let path = Path::new(BIN_DIR).join(binary);
        assert!(
            path.is_file(),
            "{} is missing: install PostgreSQL 15 with `apt-get install -y postgresql-15`",
            path.display()
        );
    }
    assert!(
        User::from_name("postgres").ok().flatten().is_some(),
        "OS user postgres is missing: `apt-get install -y postgresql-15` creates it"
    );
    assert!(
        Path::new(ETCD_BIN).is_file(),
        "{ETCD_BIN} is missing: install etcd with `apt-get install -y etcd-server`"
    );
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it yields Some, panicking after `timeout`.
pub async fn eventually<V, F, Fut>(what: &str, timeout: Duration, mut check: F) -> V
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<V>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the postmasters of the given data directories on drop.
struct Reaper {
    data_dirs: Vec<PathBuf>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for dir in &self.data_dirs {
            let Ok(text) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
                continue;
            };
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains("postgres") {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for dir in &self.data_dirs {
            pgbaton_testkit::release_shared_memory_under(dir);
        }
    }
}

/// One member: its PostgreSQL and its DCS handle.
pub struct Member {
    pub name: String,
    pub spec: PgSpec,
    pub postmaster: Postmaster,
    pub dcs: EtcdDcs,
}

impl Member {
    pub fn doc(&self, role: &str, xlog: u64) -> MemberDoc {
        self.doc_with_api(role, xlog, "http://127.0.0.1:9/patroni")
    }

    /// The document with `api_url` (the default one points at a closed port).
    pub fn doc_with_api(&self, role: &str, xlog: u64, api_url: &str) -> MemberDoc {
        MemberDoc {
            conn_url: format!("postgres://127.0.0.1:{}/postgres", self.spec.port),
            api_url: api_url.into(),
            state: "running".into(),
            role: role.into(),
            version: "0.1.0".into(),
            xlog_location: Some(xlog),
            timeline: Some(1),
            replication_state: (role == "replica").then(|| "streaming".to_string()),
            ..MemberDoc::default()
        }
    }

    /// Publish this member's document (keepalive first, as an agent does).
    pub async fn publish(&self, role: &str, xlog: u64) {
        self.dcs.keepalive().await.expect("keepalive");
        self.dcs
            .touch_member(&self.doc(role, xlog))
            .await
            .expect("touch member");
    }

    /// Publish this member's document with a live `api_url`.
    pub async fn publish_api(&self, role: &str, xlog: u64, api_url: &str) {
        self.dcs.keepalive().await.expect("keepalive");
        self.dcs
            .touch_member(&self.doc_with_api(role, xlog, api_url))
            .await
            .expect("touch member");
    }

    pub async fn take_leader(&self) {
        assert!(
            self.dcs.acquire_leader().await.expect("acquire"),
            "{} took the leader key",
            self.name
        );
    }

    pub async fn release_leader(&self) {
        assert!(
            self.dcs.release_leader().await.expect("release"),
            "{} released the leader key",
            self.name
        );
    }
}

/// etcd + a primary (+ a streaming replica), with the DCS saying so.
pub struct Cluster {
    pub primary: Member,
    pub replica: Option<Member>,
    pub etcd: EtcdProcess,
    reaper: Reaper,
    // Dropped last: the files go after the processes.
    _dir: tempfile::TempDir,
}

fn spec(root: &Path, name: &str) -> PgSpec {
    let dir = root.join(name);
    PgSpec {
        bin_dir: BIN_DIR.into(),
        data_dir: dir.join("data"),
        listen_host: "127.0.0.1".into(),
        port: free_port(),
        socket_dir: dir.join("socket"),
        run_as: Some("postgres".into()),
        superuser: Credentials {
            username: "postgres".into(),
            password: Some("super secret".into()),
        },
        replication: Credentials {
            username: "replicator".into(),
            password: Some("repl".into()),
        },
        rewind: None,
        log_file: dir.join("postgres.log"),
        application_name: name.into(),
        replication_tls: Vec::new(),
        rewind_tls: Vec::new(),
    }
}

fn parameters() -> BTreeMap<String, String> {
    [
        ("shared_buffers", "16MB"),
        ("max_connections", "60"),
        ("max_wal_senders", "5"),
        ("max_replication_slots", "5"),
        ("hot_standby", "on"),
        ("fsync", "off"),
        ("wal_receiver_status_interval", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The role `app` logs in without a password (so a retry on another server can be
/// repeated); `postgres` uses SCRAM.
fn hba() -> Vec<String> {
    vec![
        "host replication replicator 127.0.0.1/32 scram-sha-256".into(),
        "host all app 127.0.0.1/32 trust".into(),
    ]
}

async fn start(spec: &PgSpec) -> Postmaster {
    let mut postmaster = Postmaster::spawn(spec).expect("spawn postgres");
    postmaster
        .wait_ready(spec, Duration::from_secs(30))
        .await
        .expect("postgres ready");
    postmaster
}

fn handle(etcd: &EtcdProcess, name: &str) -> EtcdDcs {
    EtcdDcs::new(
        vec![etcd.endpoint()],
        ClusterPath::new("/service/", SCOPE),
        name,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
}

impl Cluster {
    pub async fn start(with_replica: bool) -> Cluster {
        require_binaries();
        let dir = tempfile::Builder::new()
            .prefix("pgbaton-router-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .expect("postgres user");
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");

        let etcd = EtcdProcess::start(&dir.path().join("etcd"), "etcd", free_port(), free_port())
            .await
            .expect("start etcd");
        let node1 = spec(dir.path(), "node1");
        let node2 = spec(dir.path(), "node2");
        let mut reaper = Reaper {
            data_dirs: vec![node1.data_dir.clone()],
        };
        initdb(&node1, &[]).await.expect("initdb");
        write_config(&node1, &parameters(), &hba(), None).expect("config");
        let pm1 = start(&node1).await;
        let admin = pgbaton_postgres::connect(&node1, T).await.expect("connect");
        admin
            .batch_execute(
                "CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'repl';
                 CREATE ROLE app LOGIN SUPERUSER;
                 CREATE TABLE t (id serial PRIMARY KEY, note text);",
            )
            .await
            .expect("roles");
        let primary = Member {
            name: "node1".into(),
            spec: node1.clone(),
            postmaster: pm1,
            dcs: handle(&etcd, "node1"),
        };
        let replica = if with_replica {
            reaper.data_dirs.push(node2.data_dir.clone());
            admin
                .batch_execute(&format!(
                    "SELECT pg_create_physical_replication_slot('{}')",
                    slot_name_for("node2")
                ))
                .await
                .expect("slot");
            let upstream = Upstream {
                host: "127.0.0.1".into(),
                port: node1.port,
            };
            basebackup(&node2, &upstream, &[])
                .await
                .expect("basebackup");
            let standby = StandbyConfig {
                upstream: Some(upstream),
                slot_name: Some(slot_name_for("node2")),
                apply_delay: None,
            };
            write_config(&node2, &parameters(), &hba(), Some(&standby)).expect("config");
            let pm2 = start(&node2).await;
            eventually("node2 to stream", Duration::from_secs(30), || async {
                let status = query_status(&node2, T).await.ok()?;
                let streaming = status.wal_receiver.as_ref()?.status == "streaming";
                (status.in_recovery && streaming).then_some(())
            })
            .await;
            Some(Member {
                name: "node2".into(),
                spec: node2,
                postmaster: pm2,
                dcs: handle(&etcd, "node2"),
            })
        } else {
            None
        };
        let cluster = Cluster {
            primary,
            replica,
            etcd,
            reaper,
            _dir: dir,
        };
        cluster
            .primary
            .dcs
            .claim_initialize("7000000000000000001")
            .await
            .expect("initialize");
        cluster.primary.publish("master", POSITION).await;
        cluster.primary.take_leader().await;
        if let Some(replica) = &cluster.replica {
            replica.publish("replica", POSITION).await;
        }
        cluster
    }

    pub fn replica(&self) -> &Member {
        self.replica.as_ref().expect("this cluster has a replica")
    }

    pub fn router_config(&self) -> RouterConfig {
        let mut cfg = RouterConfig::new(vec![self.etcd.endpoint()], "/service/", SCOPE);
        cfg.write_listen = "127.0.0.1:0".into();
        cfg.read_listen = "127.0.0.1:0".into();
        cfg.api_listen = Some("127.0.0.1:0".into());
        cfg.startup_timeout = Duration::from_secs(2);
        cfg
    }
}

/// A router running in the test's runtime; stopped on drop.
pub struct RunningRouter {
    pub write: SocketAddr,
    pub read: SocketAddr,
    /// The auto (read-your-writes) listener, when configured.
    pub auto: Option<SocketAddr>,
    pub api: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningRouter {
    pub async fn start(cfg: RouterConfig) -> RunningRouter {
        let router = Router::bind(cfg).await.expect("bind router");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = RunningRouter {
            write: router.write_addr(),
            read: router.read_addr(),
            auto: router.auto_addr(),
            api: router.api_addr().expect("api"),
            stop: Some(tx),
        };
        tokio::spawn(async move {
            router
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .expect("router serve");
        });
        running
    }

    pub async fn http_get(&self, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.api)
            .await
            .expect("connect api");
        let request = format!("GET {path} HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.http_get("/status").await).expect("status JSON")
    }

    /// Waits until `/status` satisfies `check`.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        eventually(what, T, || async {
            let status = self.status().await;
            check(&status).then_some(())
        })
        .await;
    }

    /// The names of the readable replicas in `/status`.
    pub async fn readable(&self) -> Vec<String> {
        readable_names(&self.status().await)
    }
}

pub fn readable_names(status: &serde_json::Value) -> Vec<String> {
    status["replicas"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn leader_name(status: &serde_json::Value) -> Option<String> {
    status["leader"]["name"].as_str().map(str::to_string)
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A client config for `app` (trust) through `addr`.
pub fn app_config(addr: SocketAddr, options: Option<&str>) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .dbname("postgres")
        .connect_timeout(T);
    if let Some(options) = options {
        config.options(options);
    }
    config
}

pub async fn connect_config(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub async fn connect(addr: SocketAddr, options: Option<&str>) -> tokio_postgres::Client {
    connect_config(&app_config(addr, options))
        .await
        .expect("connect through the router")
}

/// (in recovery, server port) of the server behind `client`.
pub async fn server_of(client: &tokio_postgres::Client) -> (bool, u16) {
    let row = client
        .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
        .await
        .expect("query");
    let port: i32 = row.get(1);
    (row.get(0), u16::try_from(port).expect("port"))
}

/// psql (from PostgreSQL 15) with `conninfo`, running each of `commands` (`-X -tA`,
/// `ON_ERROR_STOP`), with the superuser's password in the environment.
pub async fn psql(conninfo: &str, commands: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(format!("{BIN_DIR}/psql"));
    command.args(["-X", "-tA", "-v", "ON_ERROR_STOP=1"]);
    for c in commands {
        command.args(["-c", c]);
    }
    let run = command
        .arg(conninfo)
        .env("PGPASSWORD", "super secret")
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(T * 2, run)
        .await
        .expect("psql finished in time")
        .expect("run psql: install it with `apt-get install -y postgresql-15`")
}

/// psql's standard output, trimmed; panics with its standard error when it failed.
pub fn psql_ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A libpq connection string to `addr` as `user`.
pub fn conninfo(addr: SocketAddr, user: &str, dbname: &str, extra: &str) -> String {
    format!(
        "host={} port={} user={user} dbname={dbname} connect_timeout=10 {extra}",
        addr.ip(),
        addr.port()
    )
}
