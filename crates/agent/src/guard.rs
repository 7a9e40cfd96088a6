//! The lease guard: stops PostgreSQL at the leader's demotion deadline even when the HA loop
//! is busy (a DCS request that hangs, a slow cycle).
//!
//! The core decides the demotion (rule S1) and the loop wakes in time for it, but a cycle
//! can be stuck in a request for up to `retry_timeout`. The guard is a small task that only
//! knows one number — the instant by which PostgreSQL must have stopped accepting writes
//! unless the lease was renewed, set by the loop after every cycle and every renewal — and
//! sends an immediate shutdown (SIGQUIT) to the postmaster when that instant passes.
//! The loop then observes PostgreSQL stopped and the core takes it from there.
//!
//! The same task also writes the deadline to a file read by `pgbaton lease-guard`, a
//! separate process (fence.rs) that enforces it when this process cannot run at all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::host::Host;
use crate::ports::Postgres;

/// Shared with the loop: the deadline in milliseconds since `origin` (0: no deadline).
#[derive(Clone)]
pub struct LeaseGuard {
    deadline_ms: Arc<AtomicU64>,
    origin: Instant,
    /// CLOCK_MONOTONIC (ms) at `origin`: core time + this = the watchdog's clock.
    monotonic_origin: u64,
    /// The file `pgbaton lease-guard` watches.
    file: Option<PathBuf>,
}

impl LeaseGuard {
    pub fn new(origin: Instant, monotonic_now: u64, file: Option<PathBuf>) -> Self {
        let monotonic_origin = monotonic_now.saturating_sub(origin.elapsed().as_millis() as u64);
        LeaseGuard {
            deadline_ms: Arc::new(AtomicU64::new(0)),
            origin,
            monotonic_origin,
            file,
        }
    }

    /// Tell the watchdog process: no deadline (the agent is stopping).
    pub fn write_disarmed(&self, host: &impl Host) {
        self.disarm();
        if let Some(file) = &self.file {
            let fence = crate::fence::Fence {
                deadline_ms: 0,
                postmaster: 0,
                agent: std::process::id(),
            };
            let _ = host.write_fence(file, fence);
        }
    }

    /// The deadline a previous start of this agent left armed for the postmaster that runs
    /// now (`postmaster`), in this guard's time: a new start enforces it until it has a
    /// lease of its own. Without it, an agent restarted while its DCS is out of reach would
    /// silence the old deadline (the lease-guard process stops at a newer agent's file) and
    /// leave a primary running past its lease while another member is promoted.
    pub fn inherited(&self, host: &impl Host, postmaster: u32) -> Option<u64> {
        let file = self.file.as_ref()?;
        let fence = host.read_fence(file)?;
        if fence.deadline_ms == 0 || fence.postmaster != postmaster {
            return None;
        }
        Some(
            fence
                .deadline_ms
                .saturating_sub(self.monotonic_origin)
                .max(1),
        )
    }

    /// PostgreSQL must not accept writes after `deadline_ms` (core time) unless renewed.
    pub fn arm(&self, deadline_ms: u64) {
        self.deadline_ms.store(deadline_ms.max(1), Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::SeqCst);
    }

    /// Watch the deadline until the agent stops.
    pub async fn run(self, pg: impl Postgres, host: impl Host) {
        let mut written: Option<crate::fence::Fence> = None;
        let mut pg_pid = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let deadline = self.deadline_ms.load(Ordering::SeqCst);
            if let Ok(pid) = pg.try_postmaster_pid() {
                pg_pid = pid.unwrap_or(0);
            }
            if let Some(file) = &self.file {
                let fence = crate::fence::Fence {
                    deadline_ms: if deadline == 0 {
                        0
                    } else {
                        self.monotonic_origin + deadline
                    },
                    postmaster: pg_pid,
                    agent: std::process::id(),
                };
                if written != Some(fence) {
                    match host.write_fence(file, fence) {
                        Ok(()) => written = Some(fence),
                        Err(e) => {
                            tracing::warn!(file = %file.display(), error = %e, "cannot write the lease deadline for the watchdog")
                        }
                    }
                }
            }
            if deadline == 0 || (self.origin.elapsed().as_millis() as u64) < deadline {
                continue;
            }
            // Passed: stop PostgreSQL at once, without waiting for the loop.
            let pid = match pg.try_postmaster_pid() {
                Ok(pid) => pid,
                // A job holds the handle for a moment: try again at the next tick.
                Err(_) => continue,
            };
            match pid {
                Some(pid) => {
                    tracing::error!(
                        pid,
                        "lease guard: the lease could expire and the HA loop did not demote in time; stopping PostgreSQL now"
                    );
                    pg.quit_immediately(pid);
                }
                None => tracing::debug!("lease guard: deadline passed, no postmaster to stop"),
            }
            self.disarm();
        }
    }
}
