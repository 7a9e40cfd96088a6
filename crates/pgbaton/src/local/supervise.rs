//! Supervising agents (and the router) like systemd would: restart one that exits, after a
//! delay (1 s by default).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

/// Run `pgbaton agent` for the member in `member_dir` until `stop` turns true.
pub async fn agent(
    exe: PathBuf,
    member_dir: PathBuf,
    restart_delay: Duration,
    stop: watch::Receiver<bool>,
) {
    let config = member_dir.join("pgbaton.yml");
    let args = vec!["agent".into(), "--config".into(), config.into_os_string()];
    process(
        exe,
        args,
        member_dir.join("agent.log"),
        member_dir.join("agent.pid"),
        restart_delay,
        stop,
    )
    .await
}

/// Run `exe args` until `stop` turns true, restarting it after `restart_delay` when it exits;
/// output appended to `log`, pid written to `pid_file`.
pub async fn process(
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    log_path: PathBuf,
    pid_file: PathBuf,
    restart_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // "node1/agent", "router": what the messages call it.
    let stem = log_path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("process");
    let parent = log_path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    let name = match parent {
        Some(dir) if stem == "agent" => format!("{dir}/{stem}"),
        _ => stem.to_string(),
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{name}: cannot open {}: {e}", log_path.display());
                return;
            }
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{name}: cannot open {}: {e}", log_path.display());
                return;
            }
        };
        let mut child = match Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: cannot start: {e}");
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        match exited {
            Some(status) => {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                eprintln!(
                    "{name} (pid {pid}) exited ({status}); restarting in {:.1} s",
                    restart_delay.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(restart_delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            None => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(40), child.wait())
                    .await
                    .is_err()
                {
                    eprintln!("{name} did not stop in 40 s; killing it");
                    let _ = child.kill().await;
                }
                let _ = std::fs::remove_file(&pid_file);
                return;
            }
        }
    }
}

/// A postmaster left behind by an agent that was killed: stop it (immediate, then kill).
pub fn kill_leftover_postmaster(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = Pid::from_raw(pid);
    if kill(pid, None).is_err() {
        return;
    }
    let _ = kill(pid, Signal::SIGQUIT);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if kill(pid, None).is_err() {
            return;
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
}
