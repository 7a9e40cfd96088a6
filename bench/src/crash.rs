//! What the bench does to the leader: crash the whole node, crash the postmaster alone, or
//! hand the leader role over in a planned switchover.

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpgid, Pid};
use serde::Serialize;

use crate::scenario::RunError;
use crate::target::Target;

/// What happens to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Crash {
    /// The whole node: SIGKILL to the agent and to the postmaster's process group (the
    /// postmaster and every backend), as when the machine dies.
    Node,
    /// The postmaster alone (SIGKILL to its pid); the agent stays and restarts it in place.
    Postmaster,
    /// No crash: a planned switchover to a replica with the tool's CLI.
    Switchover,
}

impl Crash {
    pub fn name(self) -> &'static str {
        match self {
            Crash::Node => "node",
            Crash::Postmaster => "postmaster",
            Crash::Switchover => "switchover",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error("sending SIGKILL to {what} (pid {pid}) of {member}: {source}")]
    Kill {
        what: &'static str,
        pid: i32,
        member: String,
        source: nix::Error,
    },
    #[error("a switchover is not a crash: use the switchover scenario")]
    NotACrash,
}

/// Crash `member`: every kill signal is sent back to back, the pids read beforehand.
pub async fn inflict<T: Target>(target: &T, member: &str, crash: Crash) -> Result<(), RunError> {
    let postmaster = target.postmaster_pid(member)?;
    let signal = |what: &'static str, pid: i32| {
        kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|source| CrashError::Kill {
            what,
            pid,
            member: member.to_string(),
            source,
        })
    };
    match crash {
        Crash::Node => {
            let agent = target.agent_pid(member)?;
            // pgbaton starts the postmaster as leader of its own process group; Patroni
            // starts it in the session of a short-lived launcher: kill that group either way.
            let ours = getpgid(None).map(|g| g.as_raw()).ok();
            let group = getpgid(Some(Pid::from_raw(postmaster)))
                .map(|g| g.as_raw())
                .ok()
                .filter(|g| Some(*g) != ours && *g > 1)
                .unwrap_or(postmaster);
            signal("the agent", agent)?;
            signal("the postmaster's process group", -group)?;
        }
        Crash::Postmaster => signal("the postmaster", postmaster)?,
        Crash::Switchover => return Err(CrashError::NotACrash.into()),
    }
    Ok(())
}
