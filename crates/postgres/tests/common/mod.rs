//! Test harness: a temp directory PostgreSQL (run as the `postgres` OS user) can use, free
//! ports, specs for members, a guard that SIGKILLs every postmaster of the sandbox on drop
//! (even when the test panics), and polling with a deadline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use pgbaton_postgres::{query_status, Credentials, PgSpec, PgStatus, Postmaster, Upstream};

pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
pub const OS_USER: &str = "postgres";

/// Panics (never skips) when PostgreSQL 15 is not installed.
pub fn require_postgres() {
    for binary in [
        "initdb",
        "postgres",
        "pg_controldata",
        "pg_basebackup",
        "pg_rewind",
    ] {
        let path = Path::new(BIN_DIR).join(binary);
        assert!(
            path.is_file(),
            "{} is missing: install PostgreSQL 15 with `apt-get install -y postgresql-15`",
            path.display()
        );
    }
    assert!(
        User::from_name(OS_USER).ok().flatten().is_some(),
        "OS user {OS_USER} is missing: `apt-get install -y postgresql-15` creates it"
    );
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A temp directory for a few members; kills their postmasters on drop.
pub struct Sandbox {
    /// Data dirs whose postmaster.pid is checked on drop.
    data_dirs: Mutex<Vec<PathBuf>>,
    /// Dropped last: removes the files after the processes are gone.
    root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        require_postgres();
        let root = tempfile::Builder::new()
            .prefix("pgbaton-pg-test-")
            .tempdir_in("/tmp")
            .expect("create temp dir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let user = User::from_name(OS_USER)
            .ok()
            .flatten()
            .expect("postgres user");
        nix::unistd::chown(root.path(), Some(user.uid), Some(user.gid)).expect("chown");
        Sandbox {
            data_dirs: Mutex::new(Vec::new()),
            root,
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The spec of member `name`, on a fresh port, with its own socket dir and log.
    pub fn member(&self, name: &str) -> PgSpec {
        let dir = self.root.path().join(name);
        let data_dir = dir.join("data");
        self.data_dirs.lock().expect("lock").push(data_dir.clone());
        PgSpec {
            bin_dir: BIN_DIR.into(),
            data_dir,
            listen_host: "127.0.0.1".into(),
            port: free_port(),
            socket_dir: dir.join("socket"),
            run_as: Some(OS_USER.into()),
            superuser: Credentials {
                username: "postgres".into(),
                password: Some("super secret".into()),
            },
            // Quotes, backslashes and ':' exercise conninfo, conf and pgpass escaping.
            replication: Credentials {
                username: "replicator".into(),
                password: Some(r"re'pl:se\cret".into()),
            },
            rewind: Some(Credentials {
                username: "rewinder".into(),
                password: Some("rewind-pw".into()),
            }),
            log_file: dir.join("postgres.log"),
            application_name: name.into(),
            replication_tls: Vec::new(),
            rewind_tls: Vec::new(),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let dirs = self.data_dirs.lock().map(|d| d.clone()).unwrap_or_default();
        for dir in dirs {
            let Ok(text) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
                continue;
            };
            let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("postgres") {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Every data directory of the sandbox, registered or not (copies, moved-aside ones).
        pgbaton_testkit::release_shared_memory_under(self.root.path());
    }
}

/// Parameters small and fast enough for tests.
pub fn test_parameters() -> BTreeMap<String, String> {
    [
        ("shared_buffers", "16MB"),
        ("max_connections", "20"),
        ("max_wal_senders", "5"),
        ("max_replication_slots", "5"),
        ("wal_keep_size", "64MB"),
        ("hot_standby", "on"),
        ("fsync", "off"),
        ("wal_receiver_status_interval", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Polls `check` every 50 ms until it yields Some, panicking after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs SQL on the member as its superuser.
pub async fn sql(spec: &PgSpec, statements: &str) {
    let client = pgbaton_postgres::connect(spec, Duration::from_secs(5))
        .await
        .expect("connect");
    client.batch_execute(statements).await.expect("execute SQL");
}

/// Per-call timeout of the shared helpers below.
const CALL: Duration = Duration::from_secs(10);

/// Where to reach `spec`'s server over TCP.
pub fn upstream(spec: &PgSpec) -> Upstream {
    Upstream {
        host: "127.0.0.1".into(),
        port: spec.port,
    }
}

/// pg_hba lines for streaming from 127.0.0.1.
pub fn hba() -> Vec<String> {
    vec!["host replication replicator 127.0.0.1/32 scram-sha-256".into()]
}

/// Spawn the postmaster and wait until it accepts connections.
pub async fn start(spec: &PgSpec) -> Postmaster {
    let mut postmaster = Postmaster::spawn(spec).expect("spawn postgres");
    postmaster
        .wait_ready(spec, Duration::from_secs(30))
        .await
        .expect("postgres ready");
    postmaster
}

/// Waits until `spec` streams from its upstream, returning its status.
pub async fn streaming(spec: &PgSpec) -> PgStatus {
    eventually("the replica to stream", Duration::from_secs(30), || async {
        let status = query_status(spec, CALL).await.ok()?;
        let receiving = status.wal_receiver.as_ref()?.status == "streaming";
        (status.in_recovery && receiving).then_some(status)
    })
    .await
}

/// The primary's current WAL position.
pub async fn wal_lsn(spec: &PgSpec) -> u64 {
    query_status(spec, CALL)
        .await
        .expect("status")
        .wal_lsn
        .expect("a primary has a wal_lsn")
}
