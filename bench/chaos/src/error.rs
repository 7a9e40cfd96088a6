//! The errors of the chaos harness, sorted by what went wrong: a command the harness ran
//! (`ip`, `nft`, a process spawn), the command line, or the cluster never becoming usable.

use std::path::PathBuf;

/// What can stop a chaos run before it produces a report.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("`{command}` failed ({status}): {stderr}; check that iproute2 and nftables are installed (`apt-get install -y iproute2 nftables`) and that you are root")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}; is it installed (`apt-get install -y iproute2 nftables`)?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is missing: {1}")]
    MissingBinary(PathBuf, &'static str),
    #[error("invalid command line: {0}")]
    Usage(String),
    #[error("entering network namespace {ns}: {source}")]
    Setns {
        ns: String,
        #[source]
        source: nix::Error,
    },
    #[error("the cluster did not come up: {0}; the agent logs are in the run directory (use --keep-logs DIR to keep them)")]
    NotReady(String),
    #[error("interrupted by a signal; everything was removed")]
    Interrupted,
}

impl ChaosError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ChaosError {
        ChaosError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ChaosError> = std::result::Result<T, E>;
