//! The host port: what the runtime takes from the machine besides PostgreSQL, the DCS and the
//! peers — the wall clock, and the out-of-process lease guard (`pgbaton lease-guard`, its file).
//!
//! Monotonic time and timers are not in this port: the runtime uses `tokio::time` (`Instant`,
//! `sleep_until`, `timeout`), which the simulator runs on a paused, current-thread tokio
//! runtime, where time only moves when every task waits and then jumps to the next timer.
//! That makes one seed one schedule without a second timer abstraction. Only wall-clock
//! readings (Unix time for scheduled switchovers and restarts, timestamps written to the DCS
//! and the status page) come from here.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fence::Fence;

/// A stop handle for the lease-guard process: kill it and reap it.
pub type GuardProcess = Box<dyn FnOnce() + Send>;

pub trait Host: Clone + Send + Sync + 'static {
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn unix_now_ms(&self) -> u64;
    /// Whether the lease deadline is also enforced out of process: the in-process guard then
    /// writes the deadline to `file` and [`Host::spawn_lease_guard`] starts the process.
    fn fences_out_of_process(&self) -> bool;
    /// Start `pgbaton lease-guard` watching `file` (None: not started, logged).
    fn spawn_lease_guard(&self, file: &Path) -> Option<GuardProcess>;
    /// Milliseconds on the clock the lease-guard process reads (CLOCK_MONOTONIC, shared by
    /// every process of the host).
    fn monotonic_ms(&self) -> u64;
    /// Replace the lease guard's file (atomically: a reader never sees half a line).
    fn write_fence(&self, file: &Path, fence: Fence) -> std::io::Result<()>;
    /// What the lease guard's file says (None: no file, or not readable).
    fn read_fence(&self, file: &Path) -> Option<Fence>;
}

/// The production adapter: the system clock, and `pgbaton lease-guard` started from this
/// process's executable.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsHost;

impl Host for OsHost {
    fn unix_now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn fences_out_of_process(&self) -> bool {
        true
    }

    fn monotonic_ms(&self) -> u64 {
        crate::fence::monotonic_ms()
    }

    fn write_fence(&self, file: &Path, fence: Fence) -> std::io::Result<()> {
        fence.write(file)
    }

    fn read_fence(&self, file: &Path) -> Option<Fence> {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| Fence::parse(&t))
    }

    fn spawn_lease_guard(&self, file: &Path) -> Option<GuardProcess> {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the pgbaton binary to start the lease watchdog");
                return None;
            }
        };
        match std::process::Command::new(exe)
            .arg("lease-guard")
            .arg("--file")
            .arg(file)
            .arg("--agent-pid")
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                tracing::info!(pid = child.id(), file = %file.display(), "lease watchdog started");
                Some(Box::new(move || {
                    let _ = child.kill();
                    let _ = child.wait();
                }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the lease watchdog process");
                None
            }
        }
    }
}
