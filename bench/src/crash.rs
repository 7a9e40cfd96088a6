//! What the bench does to the leader: crash the whole node, crash the postmaster alone, or
//! hand the leader role over in a planned switchover.

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpgid, Pid};
use serde::Serialize;

use crate::scenario::RunError;
use crate::target::Target;

/// What happens to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Crash {
    /// The whole node: SIGKILL to the agent and to the postmaster's process group (the
    /// postmaster and every backend), as when the machine dies.
    Node,
    /// The postmaster alone (SIGKILL to its pid); the agent stays and restarts it in place.
    Postmaster,
    /// No crash: a planned switchover to a replica with the tool's CLI.
    Switchover,
    /// A planned switchover without a named candidate (the tool picks one).
    SwitchoverNocandidate,
    /// A planned switchover to a named candidate, then, 3 s after the new leader took its
    /// first write, a node crash of that new leader: the window of the crash.
    SwitchoverThenNode,
    /// A node crash, then, 10 s after the new leader took its first write, a node crash of
    /// that one too: the window of the second crash.
    NodeTwice,
}

impl Crash {
    pub fn name(self) -> &'static str {
        match self {
            Crash::Node => "node",
            Crash::Postmaster => "postmaster",
            Crash::Switchover => "switchover",
            Crash::SwitchoverNocandidate => "switchover-nocandidate",
            Crash::SwitchoverThenNode => "switchover-then-node",
            Crash::NodeTwice => "node-twice",
        }
    }

    /// The event measured is a planned switchover.
    pub fn is_switchover(self) -> bool {
        matches!(self, Crash::Switchover | Crash::SwitchoverNocandidate)
    }

    /// The event measured is a node crash (the crashed member must come back afterwards).
    pub fn is_node_crash(self) -> bool {
        matches!(
            self,
            Crash::Node | Crash::SwitchoverThenNode | Crash::NodeTwice
        )
    }

    /// The measured crash follows an earlier leader change within seconds.
    pub fn is_succession(self) -> bool {
        matches!(self, Crash::SwitchoverThenNode | Crash::NodeTwice)
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
    #[error("only a node or postmaster crash can be inflicted at once")]
    NotACrash,
}

/// Crash `member`: every kill signal is sent back to back, the pids read beforehand.
/// Returns when the first signal was sent: the event the window is measured from.
pub async fn inflict<T: Target>(
    target: &T,
    member: &str,
    crash: Crash,
) -> Result<std::time::Instant, RunError> {
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
            let at = std::time::Instant::now();
            signal("the agent", agent)?;
            signal("the postmaster's process group", -group)?;
            Ok(at)
        }
        Crash::Postmaster => {
            let at = std::time::Instant::now();
            signal("the postmaster", postmaster)?;
            Ok(at)
        }
        Crash::Switchover
        | Crash::SwitchoverNocandidate
        | Crash::SwitchoverThenNode
        | Crash::NodeTwice => Err(CrashError::NotACrash.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_are_the_command_line_values() {
        for c in Crash::value_variants() {
            let parsed = Crash::from_str(c.name(), false).expect("parses");
            assert_eq!(parsed, *c);
            assert_eq!(
                serde_json::to_string(c).expect("json"),
                format!("\"{}\"", c.name())
            );
        }
    }

    #[test]
    fn kinds() {
        assert!(Crash::SwitchoverNocandidate.is_switchover());
        assert!(!Crash::SwitchoverThenNode.is_switchover());
        assert!(Crash::NodeTwice.is_node_crash() && Crash::NodeTwice.is_succession());
        assert!(!Crash::Postmaster.is_node_crash());
    }
}
