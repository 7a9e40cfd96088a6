//! A real-PostgreSQL test of the write client and the gap computation: write to one
//! PostgreSQL, SIGKILL it (process group), keep it down for a known time, start it again,
//! and check the measured window covers the outage and no acknowledged write was lost.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

use crate::gap;
use crate::writer::{self, Endpoint, Writer};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A postmaster in its own process group; dropping it kills the whole group.
struct Postgres {
    child: Child,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn postgres_user() -> User {
    User::from_name("postgres")
        .expect("reading /etc/passwd")
        .expect("no postgres user: apt-get install -y postgresql-15")
}

fn as_postgres(program: &str, user: &User, cwd: &Path) -> Command {
    let mut cmd = Command::new(Path::new(PG_BIN).join(program));
    cmd.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .env("HOME", cwd)
        .env("USER", "postgres")
        .env("LOGNAME", "postgres")
        .current_dir(cwd);
    cmd
}

fn start(user: &User, root: &Path, port: u16) -> Postgres {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("postgres.log"))
        .expect("opening postgres.log");
    let child = as_postgres("postgres", user, root)
        .arg("-D")
        .arg(root.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("spawning postgres");
    Postgres { child }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

async fn wait_writable(endpoint: &Endpoint, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match writer::create_table(std::slice::from_ref(endpoint)).await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("postgres never became writable: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_covers_a_postgres_outage_and_no_ack_is_lost() {
    assert!(
        Path::new(PG_BIN).join("postgres").exists(),
        "{PG_BIN}/postgres not found: apt-get install -y postgresql-15"
    );
    let user = postgres_user();
    let tmp = tempfile::Builder::new()
        .prefix("pgbaton-bench-test-")
        .tempdir_in("/tmp")
        .expect("creating a temp dir");
    let root: PathBuf = tmp.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&root, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .expect("chown");
    let status = as_postgres("initdb", &user, &root)
        .arg("-D")
        .arg(root.join("data"))
        .args(["-U", "postgres", "--auth=trust", "--no-sync"])
        .stdout(Stdio::null())
        .status()
        .expect("running initdb");
    assert!(status.success(), "initdb failed: {status}");

    let port = free_port();
    let endpoint = Endpoint {
        member: "pg".into(),
        port,
    };
    let first = start(&user, &root, port);
    wait_writable(&endpoint, Duration::from_secs(30)).await;

    let writer = Writer::start(vec![endpoint.clone()], 1, Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gap::steady_on(&writer.acks(), "pg", 10, Duration::from_millis(300)) {
        assert!(Instant::now() < deadline, "the writer never wrote steadily");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The writer runs on another thread: it may see the kill before drop() returns.
    let kill_at = Instant::now();
    drop(first); // SIGKILL to the whole process group, like a node crash
    let crashed_at = Instant::now();
    let outage = Duration::from_millis(1500);
    tokio::time::sleep(outage).await; // the outage we inflict, not a wait for a condition
    assert!(
        gap::measure(&writer.acks(), crashed_at).is_none(),
        "a write succeeded while postgres was down"
    );
    let _second = start(&user, &root, port);

    let deadline = Instant::now() + Duration::from_secs(30);
    let measured = loop {
        if let Some(g) = gap::measure(&writer.acks(), crashed_at) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "no write after postgres restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (_, failures) = writer.stop_with_failures().await;

    assert!(measured.crash_to_write >= outage, "{measured:?}");
    assert!(measured.gap >= measured.crash_to_write, "{measured:?}");
    // Start and crash recovery take a few seconds at most, even on the busy shared machine
    // (5 s was exceeded once at load 11); the client adds ≤ 50 ms.
    assert!(
        measured.gap < outage + Duration::from_secs(10),
        "{measured:?}"
    );
    assert_eq!(measured.member_after, "pg");
    // The client saw its writes fail during the outage (a tick whose reconnect also failed
    // is a failed operation), and none before the kill.
    assert!(
        !failures.is_empty(),
        "no failed write recorded during the outage"
    );
    assert!(failures.iter().any(|f| f.op_failed), "{failures:?}");
    assert!(failures.iter().all(|f| f.at >= kill_at), "{failures:?}");
    let stored = writer::stored_seqs(&endpoint, 1)
        .await
        .expect("reading back");
    assert!(measured.acked_before.len() >= 10);
    assert_eq!(
        gap::lost(&measured.acked_before, &stored),
        Vec::<i64>::new()
    );
}
