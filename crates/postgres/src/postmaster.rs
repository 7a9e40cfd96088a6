//! The postmaster this agent supervises: spawned directly as `postgres -D <data_dir>` (never
//! daemonised, in its own process group, output appended to the log file), or adopted from
//! `postmaster.pid` when the agent restarted while PostgreSQL kept running.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};
use tokio::time::{sleep, timeout as within, Instant};

use crate::client::{probe, Probe};
use crate::error::PgError;
use crate::run::{absolute, chown, ensure_dir, pg_command, run_as, tail_file};
use crate::spec::PgSpec;

/// How to shut PostgreSQL down (the signals `pg_ctl stop -m` sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: disconnect clients, shutdown checkpoint.
    Fast,
    /// SIGQUIT: exit at once; crash recovery on next start.
    Immediate,
}

impl StopMode {
    fn signal(self) -> Signal {
        match self {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// A running (or exited) postmaster we supervise.
#[derive(Debug)]
pub struct Postmaster {
    pid: u32,
    /// Our child when we spawned it (so exits are reaped and observed at once); None when
    /// adopted, then liveness is checked through /proc.
    child: Option<tokio::process::Child>,
    /// For messages.
    data_dir: PathBuf,
}

impl Postmaster {
    /// Spawn postgres; does not wait for readiness. Refuses when postmaster.pid names a live
    /// postgres process (AlreadyRunning). Must be called inside a tokio runtime.
    pub fn spawn(spec: &PgSpec) -> Result<Postmaster, PgError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PgError::NoRuntime {
                what: "Postmaster::spawn",
            });
        }
        let data_dir = absolute(&spec.data_dir)?;
        if let Some(pid) = running_pid(&data_dir)? {
            return Err(PgError::AlreadyRunning { pid, data_dir });
        }
        let user = run_as(spec)?;
        let socket_dir = absolute(&spec.socket_dir)?;
        if !socket_dir.exists() {
            ensure_dir(&socket_dir, 0o755, user.as_ref())?;
        }
        let log_file = absolute(&spec.log_file)?;
        let log = open_log(&log_file, user.as_ref())?;
        let log_err = log.try_clone().map_err(|e| PgError::io(&log_file, e))?;

        let mut cmd = pg_command(spec, "postgres")?;
        cmd.arg("-D")
            .arg(&data_dir)
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|source| PgError::Spawn {
                what: format!("postgres -D {}", data_dir.display()),
                source,
            })?;
        let pid = child.id().ok_or_else(|| PgError::UnexpectedResult {
            what: "spawning postgres".into(),
            detail: "the child exited before its pid could be read".into(),
        })?;
        tracing::info!(pid, data_dir = %data_dir.display(), "postmaster spawned");
        Ok(Postmaster {
            pid,
            child: Some(child),
            data_dir,
        })
    }

    /// A postmaster that runs already (postmaster.pid names a live postgres process): adopt
    /// it. None when not running; stale postmaster.pid files are left for postgres to handle.
    pub fn adopt(spec: &PgSpec) -> Result<Option<Postmaster>, PgError> {
        let data_dir = absolute(&spec.data_dir)?;
        Ok(running_pid(&data_dir)?.map(|pid| {
            tracing::info!(pid, data_dir = %data_dir.display(), "adopted a running postmaster");
            Postmaster {
                pid,
                child: None,
                data_dir,
            }
        }))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Non-blocking: has it exited?
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::debug!(pid = self.pid, %status, "postmaster exited");
                    true
                }
                Ok(None) => false,
                Err(_) => !is_live_postgres(self.pid),
            },
            None => !is_live_postgres(self.pid),
        }
    }

    /// Resolves when the postmaster exits. An adopted process is polled every 100 ms.
    pub async fn wait_exit(&mut self) {
        if let Some(child) = &mut self.child {
            if child.wait().await.is_ok() {
                return;
            }
        }
        while !self.has_exited() {
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until it accepts connections (polled every 50 ms), exits, or `timeout` passes:
    /// StartFailed with the last 20 lines of the log file on failure.
    pub async fn wait_ready(&mut self, spec: &PgSpec, timeout: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_exited() {
                return Err(self.start_failed(spec, "postgres exited during startup".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let reason = format!("not accepting connections after {timeout:?}");
                return Err(self.start_failed(spec, reason));
            }
            if probe(spec, left.min(Duration::from_secs(2))).await == Probe::Accepting {
                tracing::info!(pid = self.pid, "postgres accepts connections");
                return Ok(());
            }
            sleep(Duration::from_millis(50).min(left)).await;
        }
    }

    fn start_failed(&self, spec: &PgSpec, reason: String) -> PgError {
        PgError::StartFailed {
            reason,
            log_file: spec.log_file.clone(),
            log_tail: tail_file(&spec.log_file, 20),
        }
    }

    /// Sends the mode's signal, waits for exit up to `timeout`, then SIGKILLs the process
    /// group (and waits up to 5 s more for the exit).
    pub async fn stop(&mut self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        if self.has_exited() {
            return Ok(());
        }
        tracing::info!(pid = self.pid, ?mode, data_dir = %self.data_dir.display(), "stopping postgres");
        self.signal(mode.signal())?;
        if within(timeout, self.wait_exit()).await.is_ok() {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            ?mode,
            ?timeout,
            "postgres did not stop in time: killing its process group"
        );
        self.kill_group();
        let grace = Duration::from_secs(5);
        within(grace, self.wait_exit())
            .await
            .map_err(|_| PgError::Timeout {
                what: format!("stopping postgres (pid {}) even with SIGKILL", self.pid),
                after: timeout + grace,
            })
    }

    /// SIGHUP: re-read the configuration files.
    pub fn reload(&self) -> Result<(), PgError> {
        self.signal(Signal::SIGHUP)
    }

    fn signal(&self, signal: Signal) -> Result<(), PgError> {
        match kill(to_pid(self.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(PgError::Signal {
                pid: self.pid,
                source,
            }),
        }
    }

    /// SIGKILL to the postmaster's process group when it leads one (it does when we spawned
    /// it), else to the postmaster alone.
    fn kill_group(&self) {
        let pid = to_pid(self.pid);
        let result = match getpgid(Some(pid)) {
            Ok(group) if group == pid => killpg(pid, Signal::SIGKILL),
            _ => kill(pid, Signal::SIGKILL),
        };
        if let Err(e) = result {
            tracing::warn!(pid = self.pid, error = %e, "SIGKILL failed");
        }
    }
}

fn to_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// Opens the log for appending (created owned by run_as when missing).
fn open_log(path: &Path, user: Option<&crate::run::RunAs>) -> Result<fs::File, PgError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| PgError::io(parent, e))?;
    }
    let existed = path.exists();
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| PgError::io(path, e))?;
    if !existed {
        chown(path, user)?;
    }
    Ok(file)
}

/// The pid in `postmaster.pid` when it names a live postgres process.
pub(crate) fn running_pid(data_dir: &Path) -> Result<Option<u32>, PgError> {
    let pid_file = data_dir.join("postmaster.pid");
    let text = match fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PgError::io(&pid_file, e)),
    };
    let pid = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<u32>().ok());
    Ok(pid.filter(|&pid| is_live_postgres(pid)))
}

/// true when `pid` runs (not a zombie) and its command is postgres/postmaster.
fn is_live_postgres(pid: u32) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let program = String::from_utf8_lossy(program);
    let name = program.rsplit('/').next().unwrap_or_default();
    name.starts_with("postgres") || name.starts_with("postmaster")
}
