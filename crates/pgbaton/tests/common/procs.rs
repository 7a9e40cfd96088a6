//! Processes seen through /proc and signals: postmaster pids from `postmaster.pid`,
//! liveness that treats zombies as dead, and finding processes whose command line names a path.

use std::path::Path;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The postmaster pid recorded in `DATA/postmaster.pid`, if the file exists.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// SIGKILL the postmaster alone (its backends notice and exit on their own).
pub fn kill_postmaster_only(data_dir: &Path) -> Option<i32> {
    let pid = postmaster_pid(data_dir).filter(|p| alive(*p))?;
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    Some(pid)
}

/// SIGKILL the postmaster's whole process group (postmaster and every backend).
pub fn kill_postmaster_group(data_dir: &Path) -> Option<i32> {
    let pid = postmaster_pid(data_dir).filter(|p| alive(*p))?;
    if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    Some(pid)
}

/// Live processes whose command line contains `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// The last `n` lines of a text file ("" when missing).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
