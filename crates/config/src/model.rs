//! The validated configuration of one pgbaton member, with every default applied.
//!
//! These types hold no raw YAML: everything here has been checked by the parser, so the agent
//! can use the values as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::dynamic::DynamicConfig;

/// The whole local configuration of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cluster name, shared by all members (the DCS key prefix `/<namespace>/<scope>/`).
    pub scope: String,
    /// DCS namespace, normalised to `/name/` (default `/service/`).
    pub namespace: String,
    /// This member's unique name in the cluster.
    pub name: String,
    pub restapi: RestApiConfig,
    pub dcs: DcsConfig,
    pub bootstrap: BootstrapConfig,
    pub postgresql: PostgresqlConfig,
    pub tags: Tags,
    pub pgbaton: PgbatonConfig,
    /// The host's watchdog device (`watchdog:`).
    pub watchdog: WatchdogConfig,
    /// How this member (and `pgbaton ctl`) call REST APIs served over https (`ctl:`).
    pub ctl: CtlConfig,
    /// The pgBackRest repository the cluster archives into (`pgbackrest:`).
    pub pgbackrest: Option<PgBackRestConfig>,
    /// Where the configuration came from: a file path or "<string>", for messages.
    pub source: String,
}

/// The REST API server (`restapi:`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestApiConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// `host:port` other members and tools use to reach this API (published as `api_url`).
    pub connect_address: String,
    /// Basic authentication required for the write endpoints.
    pub authentication: Option<Credentials>,
    /// Serve https with this certificate (PEM; may also hold the key) and key.
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    /// CA bundle that signed the members' REST API certificates (trusted by this member).
    pub cafile: Option<String>,
}

/// `ctl:` — TLS settings for calling REST APIs over https (Patroni's patronictl keys).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtlConfig {
    /// Accept any certificate (still encrypted; no authentication of the server).
    pub insecure: bool,
    /// CA bundle to verify the REST API certificates with.
    pub cacert: Option<String>,
}

/// A user name with an optional password.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
}

/// How to reach etcd (`etcd3:` or `etcd:`).
#[derive(Debug, Clone, PartialEq)]
pub struct DcsConfig {
    /// Endpoints as `host:port`.
    pub hosts: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `protocol: https` (or https:// endpoints): TLS to etcd.
    pub https: bool,
    /// The CA that signed etcd's certificates (the system's roots when unset).
    pub cacert: Option<String>,
    /// The client certificate and its key, for etcd's `--client-cert-auth`.
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// What a new cluster is created with (`bootstrap:`); used once, by the member that
/// initializes the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    /// Initial dynamic configuration written to the DCS `config` key.
    pub dcs: DynamicConfig,
    pub initdb: Vec<InitdbOption>,
    /// pg_hba.conf lines.
    pub pg_hba: Vec<String>,
    /// Roles created after initdb.
    pub users: BTreeMap<String, UserSpec>,
    /// `bootstrap.method` other than initdb: the new cluster is created by this command.
    pub method: Option<BootstrapMethod>,
}

/// A custom bootstrap method (`bootstrap.method: <name>` with `bootstrap.<name>: {command,
/// keep_existing_recovery_conf, no_params, recovery_conf, ...}`), e.g. a restore from a backup
/// recovered to a point in time, then promoted.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapMethod {
    pub name: String,
    /// The command line (split as a shell would, without a shell).
    pub command: String,
    /// Leave the recovery settings and signal files the command wrote as they are.
    pub keep_existing_recovery_conf: bool,
    /// Do not add `--scope=<scope> --datadir=<data_dir>`.
    pub no_params: bool,
    /// Recovery parameters (restore_command, recovery_target_time, recovery_target_action,
    /// ...) written with `recovery.signal`; `recovery_target_action` defaults to `promote`.
    pub recovery_conf: BTreeMap<String, String>,
    /// The section's other keys, passed as `--key=value` (sorted by key).
    pub params: Vec<(String, String)>,
}

/// One option of an option list (`initdb:`, `postgresql.basebackup:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitdbOption {
    /// A flag such as `data-checksums`.
    Flag(String),
    /// An option with a value such as `encoding: UTF8`.
    KeyValue(String, String),
}

impl InitdbOption {
    /// The command-line argument: `--data-checksums`, `--encoding=UTF8`.
    pub fn to_arg(&self) -> String {
        match self {
            InitdbOption::Flag(f) if f.starts_with('-') => f.clone(),
            InitdbOption::Flag(f) => format!("--{f}"),
            InitdbOption::KeyValue(k, v) => format!("--{}={v}", k.trim_start_matches('-')),
        }
    }
}

/// A role created at bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    pub password: Option<String>,
    /// Role options such as `createdb`, `replication`.
    pub options: Vec<String>,
}

/// The PostgreSQL server this member manages (`postgresql:`).
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresqlConfig {
    /// `listen_addresses` (may be a comma list).
    pub listen_host: String,
    pub port: u16,
    /// Host other members use to connect (published in `conn_url`).
    pub connect_host: String,
    pub connect_port: u16,
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub pgpass: Option<PathBuf>,
    pub superuser: Credentials,
    pub replication: Credentials,
    /// Role pg_rewind connects as (the superuser when absent).
    pub rewind: Option<Credentials>,
    /// libpq TLS settings of `authentication.replication` (sslmode, sslrootcert, sslcert,
    /// sslkey, sslcrl, sslcrldir, gssencmode, channel_binding), keyword → value, for
    /// `primary_conninfo` and pg_basebackup.
    pub replication_tls: Vec<(String, String)>,
    /// The same for pg_rewind's connection to its source: `authentication.rewind`'s, or the
    /// superuser's when pg_rewind connects as the superuser.
    pub rewind_tls: Vec<(String, String)>,
    /// Local parameters (normalised to strings); they win over the dynamic ones.
    pub parameters: BTreeMap<String, String>,
    /// pg_hba.conf lines for this member (replace bootstrap.pg_hba when set).
    pub pg_hba: Vec<String>,
    /// Extra pg_basebackup arguments, e.g. `--max-rate=100M`.
    pub basebackup: Vec<String>,
    /// Connect to the local PostgreSQL through its Unix socket instead of TCP.
    pub use_unix_socket: bool,
    /// `create_replica_methods`: how a replica's data directory is created, tried in order
    /// (the next on failure). Empty: pg_basebackup alone.
    pub create_replica_methods: Vec<ReplicaMethod>,
}

/// One way of creating a replica (`postgresql.create_replica_methods`).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaMethod {
    /// `basebackup`: the built-in pg_basebackup from the leader, with `postgresql.basebackup`'s
    /// options.
    Basebackup,
    /// Any other name: the command of its section `postgresql.<name>`.
    Command(CommandMethod),
}

impl ReplicaMethod {
    /// The name the configuration gives the method.
    pub fn name(&self) -> &str {
        match self {
            ReplicaMethod::Basebackup => "basebackup",
            ReplicaMethod::Command(c) => &c.name,
        }
    }
}

/// A replica method run as a command (`postgresql.<name>: {command, keep_data, no_params, ...}`),
/// e.g. `pgbackrest --stanza=main --delta restore`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandMethod {
    pub name: String,
    /// The command line (split as a POSIX shell would, without running a shell).
    pub command: String,
    /// Run on the data directory as it is (e.g. `pgbackrest --delta restore`); without it a
    /// non-empty data directory is moved aside first.
    pub keep_data: bool,
    /// Do not add `--scope= --datadir= --role=replica --connstring=`.
    pub no_params: bool,
    /// The section's other keys, passed as `--key=value` (sorted by key).
    pub params: Vec<(String, String)>,
}

/// Member tags (`tags:`), published in the member's DCS document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags {
    /// Never promote this member.
    pub nofailover: bool,
    /// Keep this member out of read load balancing (`/replica` answers 503).
    pub noloadbalance: bool,
    /// Other members may clone from this one.
    pub clonefrom: bool,
    /// Never choose this member as a synchronous standby.
    pub nosync: bool,
    /// Stream from this member instead of the leader (cascading replication).
    pub replicatefrom: Option<String>,
    /// Higher is preferred at failover; 0 means never.
    pub failover_priority: Option<i64>,
    /// Any other tag (user tags, `nostream`), verbatim.
    pub other: BTreeMap<String, Value>,
}

impl Tags {
    /// The tags as Patroni publishes them: boolean tags only when true, the others when set.
    pub fn to_json_map(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (name, set) in [
            ("nofailover", self.nofailover),
            ("noloadbalance", self.noloadbalance),
            ("clonefrom", self.clonefrom),
            ("nosync", self.nosync),
        ] {
            if set {
                out.insert(name.to_string(), Value::Bool(true));
            }
        }
        if let Some(r) = &self.replicatefrom {
            out.insert("replicatefrom".to_string(), Value::String(r.clone()));
        }
        if let Some(p) = self.failover_priority {
            out.insert("failover_priority".to_string(), Value::from(p));
        }
        for (k, v) in &self.other {
            if k == "nostream" && *v == Value::Bool(false) {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

/// `pgbackrest:` — the repository this member's cluster archives into: the leader creates
/// the stanza when it is missing and runs `pgbackrest check` at start and after becoming
/// leader; `ctl backup` runs `pgbackrest backup` with it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgBackRestConfig {
    pub stanza: String,
    /// pgBackRest's configuration file (`--config`; its default /etc/pgbackrest.conf when unset).
    pub config: Option<PathBuf>,
    /// The pgbackrest executable (default `pgbackrest`, looked up in PATH).
    pub command: String,
}

/// pgbaton's own settings (`pgbaton:`).
#[derive(Debug, Clone, PartialEq)]
pub struct PgbatonConfig {
    /// Seconds of safety margin: a leader demotes itself this long before its lease could
    /// expire when it cannot renew it.
    pub demote_margin: f64,
    /// Seconds a leader whose PostgreSQL died tries to restart it in place before giving up
    /// the leader key.
    pub primary_restart_timeout: f64,
    /// OS user that runs postgres when the agent runs as root.
    pub run_as: String,
    /// Directory for PostgreSQL's and the agent's log files.
    pub log_dir: Option<PathBuf>,
    /// Warn (log, `list -e`) when a replication slot keeps more WAL than this many MB.
    pub slot_retained_wal_warning_mb: u64,
    /// Re-clone a replica automatically when the WAL it needs is gone from its upstream.
    pub auto_reclone: bool,
    /// Seconds: at most one automatic re-clone of this member per interval.
    pub reclone_interval: f64,
}

impl Default for PgbatonConfig {
    fn default() -> Self {
        PgbatonConfig {
            demote_margin: 0.5,
            primary_restart_timeout: 10.0,
            run_as: "postgres".to_string(),
            log_dir: None,
            slot_retained_wal_warning_mb: 1024,
            auto_reclone: true,
            reclone_interval: 600.0,
        }
    }
}

/// `watchdog:` — a watchdog device that resets the host when the agent stops feeding it
/// (Patroni's keys and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    /// The Linux watchdog device (default `/dev/watchdog`).
    pub device: PathBuf,
    /// Seconds between the watchdog firing and the leader lease expiring (default 5);
    /// -1: the watchdog fires after half of ttl.
    pub safety_margin: i64,
    /// The file has a `watchdog` section (without one the mode is `automatic` as in Patroni,
    /// but the device is only used when the `run_as` user may write it, see the agent).
    pub explicit: bool,
}

/// `watchdog.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    /// Never touch the device.
    Off,
    /// Use the device when it is usable; lead without it otherwise (warned once).
    Automatic,
    /// Never lead without a usable device.
    Required,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin: 5,
            explicit: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_args() {
        assert_eq!(
            InitdbOption::Flag("data-checksums".into()).to_arg(),
            "--data-checksums"
        );
        assert_eq!(InitdbOption::Flag("--verbose".into()).to_arg(), "--verbose");
        assert_eq!(
            InitdbOption::KeyValue("encoding".into(), "UTF8".into()).to_arg(),
            "--encoding=UTF8"
        );
    }

    #[test]
    fn tags_publish_only_what_is_set() {
        assert!(Tags::default().to_json_map().is_empty());
        let tags = Tags {
            nofailover: true,
            replicatefrom: Some("node1".into()),
            failover_priority: Some(2),
            other: BTreeMap::from([
                ("dc".to_string(), Value::from("east")),
                ("nostream".to_string(), Value::Bool(false)),
            ]),
            ..Tags::default()
        };
        let json = serde_json::to_value(tags.to_json_map()).expect("tags serialize");
        assert_eq!(
            json,
            serde_json::json!({"nofailover": true, "replicatefrom": "node1", "failover_priority": 2, "dc": "east"})
        );
    }
}
