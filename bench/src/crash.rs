//! The two crashes the bench inflicts on the leader.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cluster::{ClusterError, LocalCluster};

/// What dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Crash {
    /// The whole node: SIGKILL to the agent and to the postmaster's process group (the
    /// postmaster and every backend), as when the machine dies.
    Node,
    /// The postmaster alone (SIGKILL to its pid); the agent stays and restarts it in place.
    Postmaster,
}

impl Crash {
    pub fn name(self) -> &'static str {
        match self {
            Crash::Node => "node",
            Crash::Postmaster => "postmaster",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    #[error(transparent)]
    Pid(#[from] ClusterError),
    #[error("sending SIGKILL to {what} (pid {pid}) of {member}: {source}")]
    Kill {
        what: &'static str,
        pid: i32,
        member: String,
        source: nix::Error,
    },
}

/// Crash `member`: every kill signal is sent back to back, the pids read beforehand.
pub fn inflict(cluster: &LocalCluster, member: &str, crash: Crash) -> Result<(), CrashError> {
    let postmaster = cluster.postmaster_pid(member)?;
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
            let agent = cluster.agent_pid(member)?;
            signal("the agent", agent)?;
            // The agent starts the postmaster as leader of its own process group.
            signal("the postmaster's process group", -postmaster)?;
        }
        Crash::Postmaster => signal("the postmaster", postmaster)?,
    }
    Ok(())
}
