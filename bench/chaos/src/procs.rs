//! Processes on a host: starting a program inside a namespace (`ip netns exec`, which execs
//! it, so the child's pid is the program's), its output appended to a log file, in its own
//! process group (a Ctrl-C on the terminal reaches only the harness); and signalling the
//! postmaster a data directory's `postmaster.pid` names.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::error::{ChaosError, Result};

/// Start `program args...` inside `ns`, stdout and stderr appended to `log`.
pub fn spawn_in(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> Result<Child> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ChaosError::io(log, e))?;
    let file_err = file.try_clone().map_err(|e| ChaosError::io(log, e))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().map_err(|source| ChaosError::Spawn {
        command: format!("ip netns exec {ns} {}", program.display()),
        source,
    })
}

/// SIGKILL a child and reap it.
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The postmaster pid recorded in `data_dir/postmaster.pid`, if it names a live process.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Signal the process group led by `pid` (a postmaster and its backends), or `pid` alone
/// when it leads no group.
pub fn signal_group(pid: i32, signal: Signal) {
    if killpg(Pid::from_raw(pid), signal).is_err() {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Signal one process.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_pid_needs_a_live_process() {
        let dir = tempfile_dir();
        assert_eq!(postmaster_pid(&dir), None);
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{}\n/x\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(postmaster_pid(&dir), Some(std::process::id() as i32));
        std::fs::write(dir.join("postmaster.pid"), "99999999\n").unwrap();
        assert_eq!(postmaster_pid(&dir), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgbc-procs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
