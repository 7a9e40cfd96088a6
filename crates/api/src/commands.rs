//! What the write side of the REST API asks of the agent: DCS reads and compare-and-swap
//! writes through the agent's own DCS handle, and local operations on this member's
//! PostgreSQL (restart, reload, reinitialize) carried out by the agent loop between cycles.
//!
//! [`Commands`] is object safe so that the agent passes `Arc<dyn Commands>` and tests pass a
//! fake that records what would have been written.

use std::future::Future;
use std::pin::Pin;

use pgbaton_dcs::{ClusterState, DcsError, FailoverDoc};
use serde_json::Value;

/// A boxed, sendable future (what every [`Commands`] method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An operation on this member's PostgreSQL, carried out by the agent loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCommand {
    /// Stop PostgreSQL with a fast shutdown; the HA core starts it again in the same role.
    Restart,
    /// Re-read the DCS configuration, rewrite postgresql.conf and reload PostgreSQL.
    Reload,
    /// Stop PostgreSQL and move the data directory aside; the core clones it again.
    /// `force` aborts a running background operation first.
    Reinitialize { force: bool },
    /// Restart PostgreSQL at a given time, if the conditions still hold then.
    ScheduleRestart(ScheduledRestart),
    /// Forget the scheduled restart (`DELETE /restart`).
    CancelScheduledRestart,
    /// Start a pgBackRest backup (`POST /backup`, leader only); `from: None` lets the agent
    /// choose (a standby when the repository's configuration lists standbys).
    Backup {
        kind: BackupKind,
        from: Option<BackupFrom>,
    },
}

/// pgBackRest's backup types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

/// Where a backup's files are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupFrom {
    Standby,
    Leader,
}

/// A restart to carry out later (`POST /restart` with `schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRestart {
    /// When, RFC 3339 (what `/patroni` and the member document show).
    pub schedule: String,
    /// The same instant in Unix milliseconds.
    pub at_unix_ms: i64,
    /// Only if a restart is pending then.
    pub restart_pending: bool,
    /// Only if the member has this role then.
    pub role: Option<crate::status::PgRole>,
}

/// How the agent answered a [`LocalCommand`]: the HTTP status and the text to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub status: u16,
    pub message: String,
}

impl CommandOutcome {
    pub fn ok(message: impl Into<String>) -> Self {
        CommandOutcome {
            status: 200,
            message: message.into(),
        }
    }

    pub fn refused(status: u16, message: impl Into<String>) -> Self {
        CommandOutcome {
            status,
            message: message.into(),
        }
    }
}

/// The agent side of the write endpoints.
pub trait Commands: Send + Sync + 'static {
    /// One consistent read of the cluster from the DCS.
    fn load(&self) -> BoxFuture<'_, Result<ClusterState, DcsError>>;
    /// Write the `failover` key: `None` = create iff absent, `Some(rev)` = compare
    /// mod_revision. `Ok(true)` iff written.
    fn set_failover(
        &self,
        doc: FailoverDoc,
        expected_revision: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>>;
    /// Delete the `failover` key (cancel a pending switchover).
    fn delete_failover(&self) -> BoxFuture<'_, Result<(), DcsError>>;
    /// Write the `config` key with the same compare-and-swap rule as `set_failover`.
    fn set_config(
        &self,
        value: Value,
        expected_revision: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>>;
    /// Hand a local operation to the agent loop and wait for its answer.
    fn local(&self, command: LocalCommand) -> BoxFuture<'_, CommandOutcome>;
    /// `POST /failsafe` from `leader`, a leader without the DCS in failsafe mode: promise
    /// not to race for the leader key nor promote for ttl (200), or refuse (409) when this
    /// member runs a primary or claims the leader key. Answered at once, never by waiting for
    /// the agent loop. The default refuses (an API without an agent behind it).
    fn failsafe(&self, leader: &str) -> CommandOutcome {
        let _ = leader;
        CommandOutcome::refused(503, "failsafe mode is not served here")
    }
}
