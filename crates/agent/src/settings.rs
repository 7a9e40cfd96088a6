//! Turns the Patroni-style configuration (local file + the DCS `config` key) into what the
//! core, the PostgreSQL adapter and the DCS adapter take.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pgbaton_config::{Config, DynamicConfig};
use pgbaton_core::{HaConfig, SyncConfig, SyncMode};
use pgbaton_postgres::{Credentials, PgSpec};

/// Parameters pgbaton needs for replication, failover and pg_rewind; anything the
/// configuration sets wins over these.
const REQUIRED_DEFAULTS: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "128MB"),
    ("hot_standby_feedback", "on"),
    ("wal_log_hints", "on"),
    ("max_connections", "100"),
    // A replica re-pointed to a new leader retries streaming after this (default 5 s).
    ("wal_retrieve_retry_interval", "1s"),
    // A cut replication connection frees its slot in 15 s instead of 60 s (a stale WAL
    // sender keeps the slot active and the replica cannot reconnect until it times out).
    ("wal_sender_timeout", "15s"),
    ("wal_receiver_timeout", "15s"),
    ("wal_receiver_status_interval", "2s"),
];

fn secs_to_ms(secs: f64) -> u64 {
    (secs * 1000.0).round().max(0.0) as u64
}

/// The core's view of the configuration in force.
pub fn ha_config(cfg: &Config, dynamic: &DynamicConfig) -> HaConfig {
    let ttl_ms = secs_to_ms(dynamic.ttl);
    let standby = dynamic.standby_cluster.is_some();
    HaConfig {
        name: cfg.name.clone(),
        ttl_ms,
        loop_wait_ms: secs_to_ms(dynamic.loop_wait).max(10),
        retry_timeout_ms: secs_to_ms(dynamic.retry_timeout).max(10),
        maximum_lag_on_failover: dynamic.maximum_lag_on_failover,
        use_pg_rewind: dynamic.use_pg_rewind,
        use_slots: dynamic.use_slots,
        nofailover: cfg.tags.nofailover || cfg.tags.failover_priority == Some(0),
        failover_priority: cfg
            .tags
            .failover_priority
            .map_or(1, |p| p.clamp(0, i64::from(u32::MAX)) as u32),
        demote_margin_ms: secs_to_ms(cfg.pgbaton.demote_margin),
        primary_restart_timeout_ms: secs_to_ms(cfg.pgbaton.primary_restart_timeout),
        not_streaming_timeout_ms: (2 * ttl_ms).max(4_000),
        paused: dynamic.pause,
        // A standby cluster takes no writes: no synchronous standbys, no failsafe leader.
        synchronous: if standby {
            SyncConfig::off()
        } else {
            SyncConfig {
                mode: match dynamic.synchronous_mode {
                    pgbaton_config::SyncMode::Off => SyncMode::Off,
                    pgbaton_config::SyncMode::On => SyncMode::On,
                    pgbaton_config::SyncMode::Quorum => SyncMode::Quorum,
                },
                strict: dynamic.synchronous_mode_strict,
                count: dynamic.synchronous_node_count.max(1),
            }
        },
        failsafe_mode: dynamic.failsafe_mode && !standby,
        member_slots_ttl_ms: secs_to_ms(dynamic.member_slots_ttl),
        switchover_drain_timeout_ms: secs_to_ms(dynamic.switchover_drain_timeout),
        logical_declared: !dynamic.logical.is_empty(),
        auto_reclone: cfg.pgbaton.auto_reclone,
        reclone_interval_ms: secs_to_ms(cfg.pgbaton.reclone_interval),
        archive_recovery: restore_command_set(cfg, dynamic),
        standby_cluster: standby,
    }
}

/// `restore_command` is set (local or dynamic parameters): a replica can fetch WAL its
/// upstream no longer has from the archive.
pub fn restore_command_set(cfg: &Config, dynamic: &DynamicConfig) -> bool {
    pg_parameters(cfg, dynamic)
        .get("restore_command")
        .is_some_and(|v| !v.trim().trim_matches('\'').trim().is_empty())
}

/// PostgreSQL parameters in force: pgbaton's required defaults, then the DCS's, then the
/// local file's. `unix_socket_directories`, `listen_addresses` and `port` are set by the adapter.
pub fn pg_parameters(cfg: &Config, dynamic: &DynamicConfig) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = REQUIRED_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params.extend(dynamic.parameters.clone());
    params.extend(cfg.postgresql.parameters.clone());
    // Declared publications need logical WAL too.
    if !dynamic.logical.publications.is_empty()
        && params.get("wal_level").map(String::as_str) != Some("logical")
    {
        params.insert("wal_level".into(), "logical".into());
    }
    if !permanent_logical_slots(dynamic).is_empty() {
        // Logical slots need logical WAL, and their copies on replicas need the leader to
        // keep the catalog rows they use (hot_standby_feedback through the physical slot).
        if params.get("wal_level").map(String::as_str) != Some("logical") {
            params.insert("wal_level".into(), "logical".into());
        }
        params.insert("hot_standby_feedback".into(), "on".into());
    }
    // A standby cluster's archive: every member may read it (the standby leader when the
    // remote primary no longer has a segment, the others when the standby leader does not).
    if let Some(standby) = &dynamic.standby_cluster {
        for (key, value) in [
            ("restore_command", &standby.restore_command),
            ("archive_cleanup_command", &standby.archive_cleanup_command),
        ] {
            if let Some(v) = value {
                params.entry(key.to_string()).or_insert_with(|| v.clone());
            }
        }
    }
    for managed in [
        "unix_socket_directories",
        "listen_addresses",
        "port",
        "hba_file",
        "data_directory",
    ] {
        params.remove(managed);
    }
    params
}

/// pg_hba lines: the local file's `postgresql.pg_hba` when set, else `bootstrap.pg_hba`.
pub fn pg_hba(cfg: &Config) -> Vec<String> {
    if cfg.postgresql.pg_hba.is_empty() {
        cfg.bootstrap.pg_hba.clone()
    } else {
        cfg.postgresql.pg_hba.clone()
    }
}

/// Where the socket lives: the first `unix_socket_directories` entry, else /tmp.
fn socket_dir(cfg: &Config) -> PathBuf {
    cfg.postgresql
        .parameters
        .get("unix_socket_directories")
        .and_then(|v| v.split(',').map(str::trim).find(|s| !s.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

pub fn pg_spec(cfg: &Config) -> PgSpec {
    let pg = &cfg.postgresql;
    let log_file = match &cfg.pgbaton.log_dir {
        Some(dir) => dir.join("postgresql.log"),
        None => pg.data_dir.with_file_name(format!(
            "{}.postgresql.log",
            pg.data_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("data")
        )),
    };
    let running_as_root = nix::unistd::Uid::effective().is_root();
    PgSpec {
        bin_dir: pg.bin_dir.clone(),
        data_dir: pg.data_dir.clone(),
        listen_host: pg.listen_host.clone(),
        port: pg.port,
        socket_dir: socket_dir(cfg),
        run_as: running_as_root.then(|| cfg.pgbaton.run_as.clone()),
        superuser: Credentials {
            username: pg.superuser.username.clone(),
            password: pg.superuser.password.clone(),
        },
        replication: Credentials {
            username: pg.replication.username.clone(),
            password: pg.replication.password.clone(),
        },
        rewind: pg.rewind.as_ref().map(|c| Credentials {
            username: c.username.clone(),
            password: c.password.clone(),
        }),
        log_file,
        application_name: cfg.name.clone(),
        replication_tls: pg.replication_tls.clone(),
        rewind_tls: pg.rewind_tls.clone(),
    }
}

/// The libpq password file (`postgresql.pgpass`, default `~/pgpass` of the user PostgreSQL
/// runs as) that pg_basebackup, pg_rewind and primary_conninfo read the passwords from.
pub fn passfile(cfg: &Config, spec: &PgSpec) -> Option<pgbaton_postgres::PassFile> {
    match pgbaton_postgres::PassFile::for_spec(spec, cfg.postgresql.pgpass.as_deref()) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(error = %e, "postgresql.pgpass: no usable password file; passwords go into primary_conninfo");
            None
        }
    }
}

/// `postgresql.create_replica_methods` as the PostgreSQL adapter runs them (empty:
/// pg_basebackup alone); `basebackup` takes `postgresql.basebackup`'s options.
pub fn replica_methods(cfg: &Config) -> Vec<pgbaton_postgres::ReplicaMethod> {
    use pgbaton_config::ReplicaMethod as M;
    use pgbaton_postgres::ReplicaMethod as R;
    let basebackup = || R::Basebackup {
        extra_args: cfg.postgresql.basebackup.clone(),
    };
    if cfg.postgresql.create_replica_methods.is_empty() {
        return vec![basebackup()];
    }
    cfg.postgresql
        .create_replica_methods
        .iter()
        .map(|m| match m {
            M::Basebackup => basebackup(),
            M::Command(c) => R::Command {
                name: c.name.clone(),
                command: c.command.clone(),
                keep_data: c.keep_data,
                no_params: c.no_params,
                params: c.params.clone(),
            },
        })
        .collect()
}

/// How a standby cluster's first member copies the remote primary: the methods
/// `standby_cluster.create_replica_methods` names, in its order (`basebackup`, or a command
/// method of `postgresql.create_replica_methods`); pg_basebackup when it names none.
pub fn standby_replica_methods(
    cfg: &Config,
    remote: &pgbaton_config::StandbyCluster,
) -> Vec<pgbaton_postgres::ReplicaMethod> {
    let basebackup = || pgbaton_postgres::ReplicaMethod::Basebackup {
        extra_args: cfg.postgresql.basebackup.clone(),
    };
    let configured = replica_methods(cfg);
    let mut out = Vec::new();
    for name in &remote.create_replica_methods {
        let found = configured.iter().find(|m| m.name() == name.as_str());
        match (name.as_str(), found) {
            (_, Some(method)) => out.push(method.clone()),
            ("basebackup", None) => out.push(basebackup()),
            (_, None) => {
                tracing::warn!(method = %name, "standby_cluster.create_replica_methods names a method that postgresql.create_replica_methods does not define; skipped")
            }
        }
    }
    if out.is_empty() {
        out.push(basebackup());
    }
    out
}

/// The `pgbackrest:` section as the PostgreSQL adapter takes it.
pub fn pgbackrest(cfg: &Config) -> Option<pgbaton_postgres::PgBackRest> {
    cfg.pgbackrest
        .as_ref()
        .map(|p| pgbaton_postgres::PgBackRest {
            command: p.command.clone(),
            stanza: p.stanza.clone(),
            config: p.config.clone(),
        })
}

/// `bootstrap.method` other than initdb, as the PostgreSQL adapter runs it.
pub fn bootstrap_method(cfg: &Config) -> Option<pgbaton_postgres::BootstrapCommand> {
    cfg.bootstrap
        .method
        .as_ref()
        .map(|m| pgbaton_postgres::BootstrapCommand {
            name: m.name.clone(),
            command: m.command.clone(),
            keep_existing_recovery_conf: m.keep_existing_recovery_conf,
            no_params: m.no_params,
            recovery_conf: m.recovery_conf.clone(),
            params: m.params.clone(),
        })
}

/// Users to create at bootstrap: `(name, password, options)`.
pub fn bootstrap_users(cfg: &Config) -> Vec<(String, Option<String>, Vec<String>)> {
    cfg.bootstrap
        .users
        .iter()
        .map(|(name, spec)| (name.clone(), spec.password.clone(), spec.options.clone()))
        .collect()
}

/// Permanent slots from the dynamic configuration: never dropped by slot maintenance.
pub fn permanent_slots(dynamic: &DynamicConfig) -> BTreeSet<String> {
    dynamic.slots.keys().cloned().collect()
}

/// Permanent physical slots the leader creates and keeps (logical ones are not managed yet).
pub fn permanent_physical_slots(dynamic: &DynamicConfig) -> BTreeSet<String> {
    dynamic
        .slots
        .iter()
        .filter(|(_, spec)| spec.slot_type == "physical")
        .map(|(name, _)| name.clone())
        .collect()
}

/// Permanent logical slots from the dynamic configuration (database and plugin are required
/// there: the config parser refuses a logical slot without them).
pub fn permanent_logical_slots(dynamic: &DynamicConfig) -> Vec<pgbaton_postgres::LogicalSlotSpec> {
    dynamic
        .slots
        .iter()
        .filter(|(_, spec)| spec.slot_type == "logical")
        .map(|(name, spec)| pgbaton_postgres::LogicalSlotSpec {
            name: name.clone(),
            database: spec.database.clone().unwrap_or_else(|| "postgres".into()),
            plugin: spec.plugin.clone().unwrap_or_else(|| "pgoutput".into()),
        })
        .collect()
}

pub fn conn_url(cfg: &Config) -> String {
    format!(
        "postgres://{}:{}/postgres",
        cfg.postgresql.connect_host, cfg.postgresql.connect_port
    )
}

/// The published `api_url`: https when the REST API serves TLS (`restapi.certfile`).
pub fn api_url(cfg: &Config) -> String {
    let scheme = if cfg.restapi.certfile.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}/patroni", cfg.restapi.connect_address)
}
