//! The one error type of this crate. Each variant names what failed and carries what an
//! operator needs to fix it (the path, the command's stderr, the log tail).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong when pgbaton drives PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL binary {path} is missing: install it with `{hint}`")]
    BinaryMissing { path: PathBuf, hint: &'static str },

    #[error("OS user {name:?} (run_as) does not exist: create it or change postgresql.run_as")]
    UnknownUser { name: String },

    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed ({status}); its output ends with:\n{stderr_tail}")]
    CommandFailed {
        what: String,
        status: ExitStatus,
        stderr_tail: String,
    },

    #[error("pg_rewind could not connect to its source {source_server} and changed nothing; its output ends with:\n{output_tail}")]
    RewindSourceUnreachable {
        source_server: String,
        output_tail: String,
    },

    #[error("PostgreSQL did not start ({reason}); the log {log_file} ends with:\n{log_tail}")]
    StartFailed {
        reason: String,
        log_file: PathBuf,
        log_tail: String,
    },

    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },

    #[error("{what} failed: {}", describe(source))]
    Query {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{what} returned something unexpected: {detail}")]
    UnexpectedResult { what: String, detail: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not change owner of {path} to {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        #[source]
        source: nix::Error,
    },

    #[error("could not signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },

    #[error("{path} is not a PostgreSQL 15 data directory ({detail}); move it aside or point data_dir elsewhere")]
    Foreign { path: PathBuf, detail: String },

    #[error("{path} is not empty: refusing to write a new cluster over existing files (move it aside first)")]
    NotEmpty { path: PathBuf },

    #[error("a postmaster (pid {pid}) is already running on {data_dir}: stop it or adopt it")]
    AlreadyRunning { pid: u32, data_dir: PathBuf },

    #[error("could not parse pg_controldata output: {detail}")]
    ControlData { detail: String },

    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("{what} needs a tokio runtime: call it from inside the agent's runtime")]
    NoRuntime { what: &'static str },

    #[error("wal_level is {found:?}, but logical replication slots need wal_level = logical: set postgresql.parameters.wal_level to logical and restart PostgreSQL")]
    WalLevelNotLogical { found: String },

    #[error("{what} must run on the primary, but this PostgreSQL is in recovery (a replica gets copies of the primary's logical slots instead)")]
    InRecovery { what: String },

    #[error("replication slot {slot:?} exists as {found}, but the configuration wants {expected}: pgbaton never drops it; drop it by hand (pg_drop_replication_slot) or rename the slot in `slots`")]
    SlotMismatch {
        slot: String,
        expected: String,
        found: String,
    },

    #[error("database {database:?} of logical replication slot {slot:?} does not exist: create it, or fix slots.{slot}.database")]
    SlotDatabaseMissing { slot: String, database: String },

    #[error("replication slot {slot:?} does not exist on {location}: {remedy}")]
    SlotMissing {
        slot: String,
        location: String,
        remedy: &'static str,
    },

    #[error("the state file of replication slot {slot:?} is unusable ({detail}): read it again from the primary")]
    SlotState { slot: String, detail: String },

    #[error("this server lacks the WAL that replication slot {slot:?} needs ({detail}): copy the slot again from the primary once its restart_lsn there has moved past this server's oldest WAL (it moves when the consumer confirms changes)")]
    SlotWalMissing { slot: String, detail: String },
}

/// The install command named in `BinaryMissing` errors.
pub const INSTALL_HINT: &str = "apt-get install -y postgresql-15";

impl PgError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PgError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn query(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PgError::Query {
            what: what.into(),
            source,
        }
    }
}

/// A tokio-postgres error with what the server said (its `Display` says only "db error"):
/// the message, and the detail and hint when there are some.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            // tokio-postgres keeps the cause (connection refused, timeout) as the source.
            let text = e.to_string();
            match std::error::Error::source(e).map(|c| c.to_string()) {
                Some(cause) if !text.contains(&cause) => format!("{text}: {cause}"),
                _ => text,
            }
        }
    }
}
