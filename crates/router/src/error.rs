//! The router's errors: a configuration that cannot be used (`RouterConfigError`, naming the
//! key) and a router that cannot start or keep running (`RouterError`). Problems of single
//! client connections are not errors of the router: they are logged and counted.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RouterConfigError {
    #[error("cannot read the router configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the router configuration is not valid YAML: {message}")]
    Yaml { message: String },
    #[error("router configuration: {key} {reason}")]
    Invalid { key: String, reason: String },
    #[error("router configuration: unknown key {key}; check its spelling (known: write.listen, write.switchover_wait, read.listen, read.max_lag, read.max_replay_delay, read.fallback, read.balance, api.listen, etcd3.hosts, etcd3.protocol, etcd3.cacert, etcd3.cert, etcd3.key, etcd3.username, etcd3.password, namespace, scope, connect_timeout, startup_timeout, handover_wait, tls, tls_certfile, tls_keyfile, tls_required, databases, lag_source, rest_poll_interval, rest_cacert, forwarding, auth, pool, write.pool_mode, read.pool_mode; auth: auth_type, hba, auth_hba_file, auth_file, auth_user, auth_query, auth_dbname, auth_query_cache_ttl; pool: pool_mode, default_pool_size, reserve_pool_size, reserve_pool_timeout, max_client_conn, max_db_connections, max_user_connections, server_lifetime, server_idle_timeout, query_wait_timeout, client_idle_timeout, server_reset_query, server_check_query, server_check_delay, server_connect_timeout, min_pool_size)")]
    Unknown { key: String },
    #[error("router configuration: {key} is required: {hint}")]
    Missing { key: String, hint: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {address} for the {what}: {source}; choose a free address in the router configuration")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("the router API server failed: {source}")]
    Api { source: std::io::Error },
    #[error("{0}")]
    Config(#[from] RouterConfigError),
    #[error("kernel forwarding (`forwarding: kernel`) is not available here: {source}; run the router as root on Linux 5.13 or later, or set `forwarding: auto` (falls back to relaying) or `userspace`")]
    Forwarding { source: std::io::Error },
    #[error("cannot listen for SIGHUP (reloading router.yml): {source}")]
    Signal { source: std::io::Error },
}
