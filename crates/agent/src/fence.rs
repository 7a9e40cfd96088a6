//! `pgbaton lease-guard`: the out-of-process half of the lease guard, a small watchdog.
//!
//! The agent's in-process guard (guard.rs) stops PostgreSQL at the leader's deadline
//! when the HA loop is slow, but it lives in the agent's process: if the agent is frozen
//! (SIGSTOP, a debugger, a long pause of that process), nothing would stop a primary whose
//! lease has expired while another member is promoted — two primaries. The chaos suite found
//! exactly that. So the agent also starts this process, which only reads a file the agent
//! rewrites after every change — `<deadline on CLOCK_MONOTONIC, ms> <postmaster pid> <agent
//! pid>` (deadline 0: none) — and sends the postmaster an immediate shutdown (SIGQUIT) when
//! the deadline passes. CLOCK_MONOTONIC is the same for every process of the host.
//!
//! It exits when its agent is gone and nothing is left to guard: no deadline armed, the
//! deadline enforced, the postmaster gone, or a newer agent writing the file.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{getppid, Pid};

/// Milliseconds on CLOCK_MONOTONIC (shared by every process of the host).
pub fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// What the agent wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub deadline_ms: u64,
    pub postmaster: u32,
    pub agent: u32,
}

impl Fence {
    pub fn parse(text: &str) -> Option<Fence> {
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        let deadline_ms = it.next()?.ok()?;
        let postmaster = it.next()?.ok()? as u32;
        let agent = it.next()?.ok()? as u32;
        Some(Fence {
            deadline_ms,
            postmaster,
            agent,
        })
    }

    pub fn to_line(self) -> String {
        format!("{} {} {}\n", self.deadline_ms, self.postmaster, self.agent)
    }

    /// Write atomically (temp file + rename), so a reader never sees half a line.
    pub fn write(self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_line())?;
        std::fs::rename(&tmp, path)
    }
}

fn alive(pid: u32) -> bool {
    pid != 0 && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// A postgres process (not a pid reused by something else).
fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("postgres"))
}

/// The watchdog loop; returns when there is nothing left to guard.
pub fn run(file: &Path, agent: u32) {
    let mut enforced = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let fence = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| Fence::parse(&t));
        let agent_alive = getppid().as_raw() as u32 == agent;
        let Some(f) = fence else {
            if !agent_alive {
                return;
            }
            continue;
        };
        if f.deadline_ms != 0 && f.deadline_ms != enforced && monotonic_ms() >= f.deadline_ms {
            enforced = f.deadline_ms;
            if alive(f.postmaster) && is_postgres(f.postmaster) {
                eprintln!(
                    "pgbaton lease-guard: the leader's deadline passed and its agent (pid {}) did not demote PostgreSQL; stopping postmaster {} now",
                    f.agent, f.postmaster
                );
                let _ = kill(Pid::from_raw(f.postmaster as i32), Signal::SIGQUIT);
            }
        }
        if !agent_alive {
            let newer_agent = f.agent != agent && alive(f.agent);
            if f.deadline_ms == 0
                || enforced == f.deadline_ms
                || !alive(f.postmaster)
                || newer_agent
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_line_round_trips_and_garbage_is_none() {
        let f = Fence {
            deadline_ms: 123_456,
            postmaster: 42,
            agent: 7,
        };
        assert_eq!(Fence::parse(&f.to_line()), Some(f));
        assert_eq!(Fence::parse(""), None);
        assert_eq!(Fence::parse("12 x 3"), None);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(monotonic_ms() > a);
    }
}
