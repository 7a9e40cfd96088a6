//! `pgbaton local up` as a user runs it: started with its flags, waited for until it prints
//! its member table, and stopped with SIGTERM when the test ends, even when it failed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cluster::PGBATON;

/// A running `local up`. Dropped, it is stopped as a user does (SIGTERM: it stops its agents,
/// which stop PostgreSQL); whatever still names its directory afterwards (a test that failed
/// half-way) is killed, and the shared memory of PostgreSQL servers killed is released.
pub struct LocalUp {
    pub child: Child,
    pub dir: String,
}

impl Drop for LocalUp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, _) in super::procs::pids_mentioning(&self.dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pgbaton_testkit::release_shared_memory_under(Path::new(&self.dir));
    }
}

/// Starts `pgbaton local up <extra> --base-port <base> --dir <dir>` and waits (`wait` at
/// most) for its last line ("Ctrl-C stops the cluster"); what it printed.
pub fn start(extra: &[&str], dir: &Path, base: u16, wait: Duration) -> (LocalUp, String) {
    let child = Command::new(PGBATON)
        .args(["local", "up"])
        .args(extra)
        .arg("--base-port")
        .arg(base.to_string())
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning pgbaton local up");
    let mut running = LocalUp {
        child,
        dir: dir.display().to_string(),
    };
    // Read stdout on a thread; wait (with a deadline) for the member table and the last line.
    let stdout = running.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + wait;
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
    (running, printed.join("\n"))
}
