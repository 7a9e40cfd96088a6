//! The description of one local PostgreSQL instance (where it lives, how to reach it, who
//! runs it) and of the upstream it may follow. Every operation in this crate takes a `PgSpec`.

use std::path::PathBuf;

/// A role name and its password (`None` when the role has none).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
}

/// Everything this crate needs to know about the local PostgreSQL instance.
#[derive(Debug, Clone)]
pub struct PgSpec {
    /// Directory holding initdb, postgres, pg_basebackup, pg_rewind, pg_controldata.
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The `listen_addresses` value.
    pub listen_host: String,
    pub port: u16,
    /// `unix_socket_directories`; created (owned by run_as) if missing. Our own
    /// connections go through this socket.
    pub socket_dir: PathBuf,
    /// OS user to run binaries as; None = current user. Only honoured when we are root.
    pub run_as: Option<String>,
    pub superuser: Credentials,
    pub replication: Credentials,
    /// The role pg_rewind connects as; the superuser when None.
    pub rewind: Option<Credentials>,
    /// libpq TLS keywords and values (sslmode, sslrootcert, ...) for replication
    /// connections: `primary_conninfo` and pg_basebackup.
    pub replication_tls: Vec<(String, String)>,
    /// The same for pg_rewind's connection to its source.
    pub rewind_tls: Vec<(String, String)>,
    /// The postmaster's stdout/stderr are appended here.
    pub log_file: PathBuf,
    /// The member name, used as application_name in primary_conninfo.
    pub application_name: String,
}

impl PgSpec {
    /// `keyword=value` pairs of `settings`, quoted for a libpq connection string, each with a
    /// leading space (empty without settings).
    pub fn conninfo_tls(settings: &[(String, String)]) -> String {
        settings
            .iter()
            .map(|(k, v)| format!(" {k}={}", quote_conninfo(v)))
            .collect()
    }

    /// The credentials pg_rewind uses: `rewind` when set, else the superuser.
    pub fn rewind_credentials(&self) -> &Credentials {
        self.rewind.as_ref().unwrap_or(&self.superuser)
    }
}

/// Where to clone/rewind/stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

/// Present when the instance must run as a standby of `upstream`.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyConfig {
    /// `None`: a standby with no upstream yet (the cluster has no leader); it replays its own WAL.
    pub upstream: Option<Upstream>,
    /// `primary_slot_name`, when the upstream keeps a slot for us.
    pub slot_name: Option<String>,
    /// `recovery_min_apply_delay` (a PostgreSQL interval), for the leader of a standby
    /// cluster that replays its remote primary late on purpose.
    pub apply_delay: Option<String>,
}

/// A libpq connection-string value: single-quoted with `\` and `'` backslash-escaped.
pub(crate) fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
