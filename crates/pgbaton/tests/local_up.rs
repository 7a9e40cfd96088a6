//! `pgbaton local up`: starts etcd and N supervised agents, prints the member table once the
//! cluster is up, and on SIGTERM stops everything it started and exits 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{require_binaries, temp_dir, PGBATON};
use common::local_up::LocalUp;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn local_up(extra: &[&str], dir: &std::path::Path, base: u16) -> (LocalUp, String) {
    common::local_up::start(extra, dir, base, Duration::from_secs(120))
}

#[test]
fn local_up_starts_a_cluster_and_sigterm_stops_everything() {
    require_binaries();
    let tmp = temp_dir("pgbaton-it-local-");
    let dir = tmp.path().join("cluster");
    let dir_text = dir.display().to_string();
    let ports = common::ports::reserve();
    let (mut guard, table) = local_up(&["--members", "2"], &dir, ports.base);
    assert!(table.contains("| Member"), "member table:\n{table}");
    assert!(
        table.contains("Leader") && table.contains("Replica"),
        "roles:\n{table}"
    );
    assert!(
        table.contains("node1") && table.contains("node2"),
        "members:\n{table}"
    );
    for f in ["agent.pid", "pgbaton.yml", "agent.log"] {
        assert!(dir.join("node1").join(f).exists(), "{f} missing in node1");
    }
    let postmasters: Vec<i32> = ["node1", "node2"]
        .iter()
        .filter_map(|n| common::procs::postmaster_pid(&dir.join(n).join("data")))
        .collect();
    assert_eq!(postmasters.len(), 2, "both members run PostgreSQL");

    // `ctl router-status` reads the router's /status (base port + 4) and names the leader.
    let router_api = format!("127.0.0.1:{}", ports.base + 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = Command::new(PGBATON)
            .args(["ctl", "router-status", "--router", &router_api])
            .output()
            .expect("running ctl router-status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("Leader: node") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "ctl router-status never named a leader: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        status.contains("Cluster: local"),
        "router-status:\n{status}"
    );

    // Every metric the Grafana dashboard queries exists in the agents' and the router's
    // /metrics (counters and families are named by their `# TYPE` lines, so a metric with no
    // sample yet still counts).
    // One session through the router's write address first: its per-connection families
    // have samples only once a connection was routed.
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p"])
        .arg((ports.base + 2).to_string())
        .args(["-U", "postgres", "-d", "postgres", "-Atc", "SELECT 1"])
        .env("PGPASSWORD", "postgres")
        .output()
        .expect("psql (postgresql-client-15) must be installed");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1",
        "a session through the router: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana/pgbaton-dashboard.json"
        ))
        .expect("reading docs/grafana/pgbaton-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let queried = dashboard_metrics(&dashboard);
    assert!(queried.len() > 15, "{queried:?}");
    // Asked again for a while: the leader's slot series appear once it has made the
    // replicas' slots (a loop or two after the cluster is up).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut exposed = std::collections::BTreeSet::new();
        for port in [ports.base + 4, ports.base + 21, ports.base + 22] {
            let text = http_get(port, "/metrics");
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    if let Some(name) = rest.split_whitespace().next() {
                        exposed.insert(name.to_string());
                    }
                }
            }
        }
        let missing: Vec<&String> = queried.iter().filter(|m| !exposed.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries metrics nobody exposes: {missing:?}\nexposed: {exposed:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // SIGTERM: within 60 s it exits 0 and leaves nothing behind.
    let pid = Pid::from_raw(guard.child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("sending SIGTERM to local up");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = guard.child.try_wait().expect("waiting for local up") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "local up still runs 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "local up exited with {status}");
    let left: Vec<(i32, String)> = common::procs::pids_mentioning(&dir_text);
    assert!(
        left.is_empty(),
        "processes left after local up stopped: {left:?}"
    );
    for pm in postmasters {
        assert!(!common::procs::alive(pm), "postmaster {pm} still runs");
    }
}

/// `local up --archive`: a pgBackRest repository in DIR/pgbackrest; the leader checks it,
/// `ctl backup` takes a full backup from a standby, `ctl list -e` shows it.
#[test]
fn local_up_archive_gives_a_repository_that_ctl_backup_uses() {
    require_binaries();
    let tmp = temp_dir("pgbaton-it-local-archive-");
    let dir = tmp.path().join("cluster");
    let ports = common::ports::reserve();
    let (_guard, printed) = local_up(&["--members", "2", "--archive"], &dir, ports.base);
    assert!(
        printed.contains("archive: pgBackRest stanza local in ")
            && printed.contains("backup --type full"),
        "local up does not say where the archive is:\n{printed}"
    );
    let yaml = std::fs::read_to_string(dir.join("node1/pgbaton.yml")).expect("node1's config");
    assert!(
        yaml.contains("archive-push %p")
            && yaml.contains("create_replica_methods: [pgbackrest, basebackup]"),
        "{yaml}"
    );
    let ctl = |args: &[&str]| {
        let out = Command::new(PGBATON)
            .args([
                "ctl",
                "--dcs",
                &format!("127.0.0.1:{}", ports.base),
                "--scope",
                "local",
            ])
            .args(args)
            .output()
            .expect("running pgbaton ctl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // The leader's stanza check runs in the background after it starts leading.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, listed) = ctl(&["list", "-e"]);
        if listed.contains("pgBackRest stanza local: check ok") {
            break;
        }
        assert!(
            Instant::now() < deadline && !listed.contains("check failed"),
            "the leader's pgbackrest check did not pass:\n{listed}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = ctl(&["backup", "--type", "full"]);
    assert!(ok, "ctl backup failed:\n{out}");
    assert!(
        out.contains("from a standby") && out.contains("Success: backup finished"),
        "{out}"
    );
    let (_, listed) = ctl(&["list", "-e"]);
    assert!(
        listed.contains("Last backup: ") && listed.contains("(full, finished "),
        "{listed}"
    );
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "GET {path} on {port}: {text}"
    );
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The metric names in a Grafana dashboard's `expr`s (`_total`, `_bucket`, `_sum` and
/// `_count` suffixes taken off, as `# TYPE` lines name them).
fn dashboard_metrics(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for panel in panels {
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            let expr = target["expr"].as_str().unwrap_or("");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("patroni_") || word.starts_with("pgbaton_") {
                    let base = ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    names.insert(base.to_string());
                }
            }
        }
    }
    names
}
