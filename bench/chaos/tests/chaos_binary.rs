//! The `chaos` binary end to end on real hosts (namespaces, etcd, pgbaton agents, PostgreSQL
//! 15): a short seeded run ends with the exact summary line and removes everything it created;
//! a SIGTERM in the middle of a run removes everything too and exits 130. These check the
//! harness, not pgbaton: the run may find pgbaton faults (exit 1), but must not fail itself.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHAOS: &str = env!("CARGO_BIN_EXE_chaos");

/// Kills the run (SIGKILL) if the test ends early; the next run's sweep removes the rest.
struct RunGuard(Child);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pgbaton() -> PathBuf {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the chaos tests create network namespaces: run them as root"
    );
    for (bin, install) in [
        ("/usr/bin/etcd", "apt-get install -y etcd-server"),
        (
            "/usr/lib/postgresql/15/bin/postgres",
            "apt-get install -y postgresql-15",
        ),
        ("/usr/sbin/nft", "apt-get install -y nftables"),
    ] {
        assert!(
            PathBuf::from(bin).exists(),
            "{bin} is missing: install it with `{install}`"
        );
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/pgbaton");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p pgbaton`",
        path.display()
    );
    path
}

fn leftovers(run: u32) -> Vec<String> {
    let mut out: Vec<String> = pgbaton_chaos::shell::ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("pgbc{run}-")))
        .map(str::to_string)
        .collect();
    let dir = format!("/tmp/pgbaton-chaos-{run}");
    if std::path::Path::new(&dir).exists() {
        out.push(dir);
    }
    out
}

#[test]
fn a_short_run_prints_the_summary_line_last_and_cleans_up() {
    let bin = pgbaton();
    let child = Command::new(CHAOS)
        .args(["--duration", "25", "--seed", "2", "--mode", "async"])
        .args(["--faults", "kill-postgres,partition,pause"])
        .arg("--pgbaton")
        .arg(&bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning chaos");
    let run = child.id();
    let mut guard = RunGuard(child);
    let stdout = guard.0.stdout.take().expect("chaos stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = guard.0.wait().expect("waiting for chaos");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        matches!(status.code(), Some(0) | Some(1)),
        "chaos failed as a harness ({status}); output:\n{}",
        lines.join("\n")
    );
    let fields: Vec<(&str, &str)> = last
        .strip_prefix("chaos: ")
        .unwrap_or_else(|| panic!("last line {last:?}"))
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "faults",
            "acked",
            "lost",
            "dual_primary",
            "unrecovered",
            "max_gap_s",
            "leaderless_s"
        ],
        "{last}"
    );
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    assert!(get("faults").parse::<u32>().unwrap() >= 1, "{last}");
    assert!(get("acked").parse::<u32>().unwrap() > 0, "{last}");
    assert!(get("max_gap_s").parse::<f64>().is_ok(), "{last}");
    assert!(get("leaderless_s").parse::<f64>().is_ok(), "{last}");
    // The readers ran: the reads line and (async mode) the loss line come just before.
    let n = lines.len();
    let reads = lines.iter().find(|l| l.starts_with("reads: ")).cloned();
    let reads = reads.unwrap_or_else(|| panic!("no reads line in:\n{}", lines.join("\n")));
    let leader: u32 = reads
        .split(' ')
        .find_map(|kv| kv.strip_prefix("leader="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reads}"));
    assert!(leader > 0, "{reads}");
    assert!(
        n >= 3 && lines[n - 2].starts_with("async loss: ") && lines[n - 3] == reads,
        "{}",
        lines.join("\n")
    );
    assert!(
        leftovers(run).is_empty(),
        "left behind: {:?}",
        leftovers(run)
    );
}

#[test]
fn sigterm_during_a_run_removes_everything_and_exits_130() {
    let bin = pgbaton();
    let child = Command::new(CHAOS)
        .args(["--duration", "300", "--seed", "3", "--faults", "kill-agent"])
        .arg("--pgbaton")
        .arg(&bin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning chaos");
    let run = child.id();
    let mut guard = RunGuard(child);
    let stderr = guard.0.stderr.take().expect("chaos stderr");
    // Read stderr on a thread; report when the workload started.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("workload started") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(150))
        .expect("the workload did not start within 150 s");
    assert!(!leftovers(run).is_empty(), "the run created no namespace?");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("sending SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("polling chaos") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "chaos did not exit within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(
        leftovers(run).is_empty(),
        "left behind: {:?}",
        leftovers(run)
    );
}
