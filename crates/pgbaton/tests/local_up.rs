//! `pgbaton local up`: starts etcd and N supervised agents, prints the member table once the
//! cluster is up, and on SIGTERM stops everything it started and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::{require_binaries, temp_dir, PGBATON};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Kills `local up` and everything naming its directory if the test fails half-way.
struct Guard {
    child: Child,
    dir: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, _) in common::procs::pids_mentioning(&self.dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn local_up_starts_a_cluster_and_sigterm_stops_everything() {
    require_binaries();
    let tmp = temp_dir("pgbaton-it-local-");
    let dir = tmp.path().join("cluster");
    let dir_text = dir.display().to_string();
    let ports = common::ports::reserve();
    let child = Command::new(PGBATON)
        .args(["local", "up", "--members", "2", "--base-port"])
        .arg(ports.base.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning pgbaton local up");
    let mut guard = Guard {
        child,
        dir: dir_text.clone(),
    };

    // Read stdout on a thread; wait (with a deadline) for the member table and the last line.
    let stdout = guard.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Ctrl-C stops the cluster");
                printed.push(line);
                if done {
                    break;
                }
            }
            Err(e) => panic!(
                "local up did not print its member table ({e}); printed so far:\n{}",
                printed.join("\n")
            ),
        }
    }
    let table = printed.join("\n");
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
