//! The router's configuration: what to listen on, which cluster to follow in etcd, and the
//! routing policy (lag bound, fallback, balancing, how long a write waits for a leader).
//! The top-level `tls` key says what happens to a client's SSLRequest: `refuse` (the
//! default) answers `N`, so the session runs in plain text through the router;
//! `passthrough` hands the request to the server chosen by the listener's role and relays
//! the encrypted session end to end (see `passthrough`); `terminate` runs TLS with the
//! router's own certificate (`tls_certfile`, `tls_keyfile`; see `tls`). `databases` maps
//! alias database names to a real database and a role (see `aliases`); `lag_source` and
//! `rest_poll_interval` say where replica lag comes from (see `lag`); `forwarding` who moves
//! the bytes after the startup (see `offload`).
//! Read from a small YAML file (`pgbaton router --config FILE`, `local up`'s `router.yml`)
//! whose keys are validated one by one, every error naming its key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::aliases::DatabaseAlias;
use crate::error::RouterConfigError;
use crate::units::{format_duration, parse_bytes, parse_duration};
use crate::yaml::{boolean, duration, invalid, listen, section, string, unknown};

/// What a read connection gets when no replica qualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFallback {
    /// Send it to the leader (the default: reads keep working on a one-node cluster).
    Leader,
    /// Refuse it with SQLSTATE 57P03.
    Refuse,
}

/// How read connections are spread over the qualifying replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// The replica with the fewest active read connections through this router.
    LeastConnections,
}

/// What the router does with a client's SSLRequest (`tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Answer `N` (the default): clients continue in plain text, or give up if they require
    /// TLS; the router sees the startup and applies every routing rule.
    Refuse,
    /// Forward the SSLRequest to the server picked by the listener's role alone (write: the
    /// leader; read: a replica per the usual selection) and relay the TLS session untouched.
    /// The router cannot read such a session's startup: `pgbaton.target` and
    /// `target_session_attrs` are not seen, the read-only check on write sessions is
    /// skipped, and CancelRequests for it cannot be routed. Write sessions are still closed
    /// when the leader changes.
    Passthrough,
    /// Answer `S` and run TLS with the router's own certificate (`tls_certfile`,
    /// `tls_keyfile`); the startup is read inside TLS and every routing rule applies. The
    /// router→server leg is plain TCP (meant for loopback or a trusted network).
    Terminate,
}

impl TlsMode {
    pub fn label(self) -> &'static str {
        match self {
            TlsMode::Refuse => "refuse",
            TlsMode::Passthrough => "passthrough",
            TlsMode::Terminate => "terminate",
        }
    }
}

/// Who moves a session's bytes after the startup (`forwarding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// The kernel where it can (Linux 5.13+, run as root), else the router's threads (the
    /// default; which one is logged at start).
    Auto,
    /// The kernel, through a BPF socket map: the router is not woken by the session's
    /// traffic. The router refuses to start where the kernel cannot.
    Kernel,
    /// The router's threads read and write every message (any kernel, any user).
    Userspace,
}

impl Forwarding {
    pub fn label(self) -> &'static str {
        match self {
            Forwarding::Auto => "auto",
            Forwarding::Kernel => "kernel",
            Forwarding::Userspace => "userspace",
        }
    }
}

/// Where replica lag for read routing comes from (`lag_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagSource {
    /// The agents' REST API (`GET api_url`), polled every `rest_poll_interval` (the
    /// default); a member whose answer is older than three intervals falls back to its DCS
    /// document.
    Rest,
    /// The member documents in etcd only (refreshed by the agents every loop_wait).
    Dcs,
}

impl LagSource {
    pub fn label(self) -> &'static str {
        match self {
            LagSource::Rest => "rest",
            LagSource::Dcs => "dcs",
        }
    }
}

/// Everything the router needs; see `from_yaml_file` for the YAML keys.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// `write.listen`: host:port of the write listener (connections go to the leader).
    pub write_listen: String,
    /// `read.listen`: host:port of the read listener (connections go to replicas).
    pub read_listen: String,
    /// `auto.listen`: host:port of the auto listener (read-your-writes: transactions the
    /// client declares read-only go to a replica that has replayed its last commit, the
    /// rest to the leader); None = no auto listener. Needs `auth:` (pooling).
    pub auto_listen: Option<String>,
    /// `auto.read_your_writes_wait`: how long a read-only transaction waits for a replica
    /// to replay the client's token before it runs on the leader.
    pub read_your_writes_wait: Duration,
    /// `api.listen`: host:port serving `/metrics` and `/status`; None = no API.
    pub api_listen: Option<String>,
    /// `etcd3.hosts`: etcd client endpoints (host:port).
    pub etcd_hosts: Vec<String>,
    /// `etcd3.protocol: https`, `cacert`, `cert`, `key`, `username`, `password`: TLS and
    /// etcd's own authentication, as the agents' `etcd3:` section says them.
    pub etcd_access: pgbaton_dcs::EtcdAccess,
    /// `namespace` (Patroni's, default `/service/`).
    pub namespace: String,
    /// `scope`: the cluster name.
    pub scope: String,
    /// `read.max_lag`: a replica further behind the leader than this many bytes gets no reads
    /// (`u64::MAX` when `max_lag` is given as a duration: no byte bound).
    pub max_lag_bytes: u64,
    /// `read.max_replay_delay` (or `read.max_lag` written as a duration): a replica whose
    /// replay is further behind than this gets no reads. None = no time bound.
    pub max_replay_delay: Option<Duration>,
    /// `read.fallback`
    pub read_fallback: ReadFallback,
    /// `read.balance`
    pub balance: Balance,
    /// `write.switchover_wait`: how long a new write connection waits for a leader at
    /// least (`handover_wait` when longer).
    pub switchover_wait: Duration,
    /// `handover_wait`: how long new connections and new transactions for the leader wait
    /// through a switchover or failover (no leader, or a leader not accepting connections
    /// yet) before they fail. None: the cluster's `ttl` (DCS `config`) + 2 s.
    pub handover_wait: Option<Duration>,
    /// `connect_timeout`: bound on the TCP connect to a server.
    pub connect_timeout: Duration,
    /// `startup_timeout`: a client must send its startup packet (and a server finish the
    /// startup) within this long.
    pub startup_timeout: Duration,
    /// `tls`: `refuse` (default), `passthrough` or `terminate`.
    pub tls: TlsMode,
    /// `tls_certfile`: PEM certificate chain the router presents (`tls: terminate`).
    pub tls_certfile: Option<PathBuf>,
    /// `tls_keyfile`: PEM private key of that certificate (`tls: terminate`).
    pub tls_keyfile: Option<PathBuf>,
    /// `tls_cafile`: PEM CA certificates that sign client certificates (PgBouncer's
    /// `client_tls_ca_file`). With it the router asks TLS clients for a certificate and
    /// verifies one if given; the hba rules (`cert`, `clientcert=`) decide who needs one.
    pub tls_cafile: Option<PathBuf>,
    /// `tls_required`: a plain-text startup is refused with FATAL 08P01 (CancelRequests,
    /// which libpq always sends in plain text, still pass).
    pub tls_required: bool,
    /// `databases`: alias database name → the real database and the role to route to.
    pub databases: BTreeMap<String, DatabaseAlias>,
    /// `lag_source`: `rest` (default) or `dcs`.
    pub lag_source: LagSource,
    /// `rest_poll_interval`: how often each member's REST API is asked for its WAL positions.
    pub rest_poll_interval: Duration,
    /// `rest_cacert`: the CA that signed the agents' REST API certificates; with it, https
    /// `api_url`s are polled too (verified against it), without it only http ones.
    pub rest_cacert: Option<std::path::PathBuf>,
    /// `forwarding`: `auto` (default), `kernel` or `userspace`.
    pub forwarding: Forwarding,
    /// `auth`: the router authenticates clients itself and pools server connections; None
    /// = authentication is passed through and each client gets its own server connection.
    pub auth: Option<crate::auth::AuthConfig>,
    /// `pool`: PgBouncer's pool settings (used with `auth`).
    pub pool: crate::pool::PoolSettings,
    /// `write.pool_mode` / `read.pool_mode`: a listener's mode, over `pool.pool_mode`.
    pub write_pool_mode: Option<crate::pool::PoolMode>,
    pub read_pool_mode: Option<crate::pool::PoolMode>,
    /// `name`: the router's key `routers/<name>` in the DCS (default `<host name>:<write
    /// port>`); unique among the routers of the cluster.
    pub name: Option<String>,
}

impl RouterConfig {
    /// A configuration with every default for the given cluster.
    pub fn new(etcd_hosts: Vec<String>, namespace: &str, scope: &str) -> Self {
        RouterConfig {
            write_listen: "127.0.0.1:5000".to_string(),
            read_listen: "127.0.0.1:5001".to_string(),
            auto_listen: None,
            read_your_writes_wait: Duration::from_millis(100),
            api_listen: None,
            etcd_hosts,
            etcd_access: pgbaton_dcs::EtcdAccess::default(),
            namespace: namespace.to_string(),
            scope: scope.to_string(),
            max_lag_bytes: 1024 * 1024,
            max_replay_delay: None,
            read_fallback: ReadFallback::Leader,
            balance: Balance::RoundRobin,
            switchover_wait: Duration::from_secs(5),
            handover_wait: None,
            connect_timeout: Duration::from_secs(3),
            startup_timeout: Duration::from_secs(10),
            tls: TlsMode::Refuse,
            tls_certfile: None,
            tls_keyfile: None,
            tls_cafile: None,
            tls_required: false,
            databases: BTreeMap::new(),
            lag_source: LagSource::Rest,
            rest_poll_interval: Duration::from_secs(1),
            rest_cacert: None,
            forwarding: Forwarding::Auto,
            auth: None,
            pool: crate::pool::PoolSettings::default(),
            write_pool_mode: None,
            read_pool_mode: None,
            name: None,
        }
    }

    /// The keys of `text` read into a configuration, each value checked on its own (the
    /// checks that span keys and read files are `load.rs`'s).
    pub(crate) fn parse(text: &str) -> Result<Self, RouterConfigError> {
        let root: Value = serde_saphyr::from_str(text).map_err(|e| RouterConfigError::Yaml {
            message: e.to_string(),
        })?;
        let root = match root {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(invalid("(top level)", "must be a mapping of keys")),
        };
        let mut cfg = RouterConfig::new(Vec::new(), "/service/", "");
        let mut pooling_key = None;
        for (key, value) in &root {
            match key.as_str() {
                "write" => parse_write(&mut cfg, value)?,
                "read" => parse_read(&mut cfg, value)?,
                "auto" => {
                    for (k, v) in section("auto", value)? {
                        match k.as_str() {
                            "listen" => cfg.auto_listen = Some(listen("auto.listen", v)?),
                            "read_your_writes_wait" => {
                                cfg.read_your_writes_wait =
                                    duration("auto.read_your_writes_wait", v)?;
                            }
                            other => return Err(unknown(&format!("auto.{other}"))),
                        }
                    }
                }
                "api" => {
                    let api = section("api", value)?;
                    for (k, v) in api {
                        match k.as_str() {
                            "listen" => cfg.api_listen = Some(listen("api.listen", v)?),
                            other => return Err(unknown(&format!("api.{other}"))),
                        }
                    }
                }
                "etcd3" | "etcd" => (cfg.etcd_hosts, cfg.etcd_access) = parse_etcd(key, value)?,
                "namespace" => cfg.namespace = string("namespace", value)?,
                "name" => {
                    let name = string("name", value)?;
                    if name.is_empty() || name.contains('/') {
                        return Err(invalid("name", "must be a non-empty name without `/`"));
                    }
                    cfg.name = Some(name);
                }
                "scope" => cfg.scope = string("scope", value)?,
                "connect_timeout" => {
                    cfg.connect_timeout = duration("connect_timeout", value)?;
                }
                "startup_timeout" => {
                    cfg.startup_timeout = duration("startup_timeout", value)?;
                }
                "handover_wait" => {
                    cfg.handover_wait = Some(duration("handover_wait", value)?);
                }
                "tls" => {
                    cfg.tls = match string("tls", value)?.as_str() {
                        "refuse" => TlsMode::Refuse,
                        "passthrough" => TlsMode::Passthrough,
                        "terminate" => TlsMode::Terminate,
                        _ => {
                            return Err(invalid(
                                "tls",
                                "must be `refuse`, `passthrough` or `terminate`",
                            ))
                        }
                    }
                }
                "tls_certfile" => cfg.tls_certfile = Some(string(key, value)?.into()),
                "tls_keyfile" => cfg.tls_keyfile = Some(string(key, value)?.into()),
                "tls_cafile" => cfg.tls_cafile = Some(string(key, value)?.into()),
                "tls_required" => cfg.tls_required = boolean(key, value)?,
                "databases" => cfg.databases = crate::aliases::parse(section(key, value)?)?,
                "lag_source" => {
                    cfg.lag_source = match string(key, value)?.as_str() {
                        "rest" => LagSource::Rest,
                        "dcs" => LagSource::Dcs,
                        _ => return Err(invalid(key, "must be `rest` or `dcs`")),
                    }
                }
                "forwarding" => {
                    cfg.forwarding = match string(key, value)?.as_str() {
                        "auto" => Forwarding::Auto,
                        "kernel" => Forwarding::Kernel,
                        "userspace" => Forwarding::Userspace,
                        _ => return Err(invalid(key, "must be `auto`, `kernel` or `userspace`")),
                    }
                }
                "rest_cacert" => cfg.rest_cacert = Some(string(key, value)?.into()),
                "rest_poll_interval" => {
                    cfg.rest_poll_interval = duration(key, value)?;
                    if cfg.rest_poll_interval < Duration::from_millis(50) {
                        return Err(invalid(key, "must be at least 50ms"));
                    }
                }
                "auth" => cfg.auth = Some(crate::pool_config::parse_auth(value)?),
                "pool" => {
                    cfg.pool = crate::pool_config::parse_pool(value)?;
                    pooling_key = Some("pool".to_string());
                }
                other => return Err(unknown(other)),
            }
        }
        if cfg.auto_listen.is_some() {
            pooling_key = Some("auto.listen".into());
        }
        if cfg.write_pool_mode.is_some() {
            pooling_key = Some("write.pool_mode".into());
        }
        if cfg.read_pool_mode.is_some() {
            pooling_key = Some("read.pool_mode".into());
        }
        if let Some((alias, _)) = cfg
            .databases
            .iter()
            .find(|(_, a)| a.pool_mode.is_some() || a.pool_size.is_some())
        {
            pooling_key = Some(format!("databases.{alias}"));
        }
        if let (Some(key), None) = (pooling_key, &cfg.auth) {
            let why = if key.starts_with("auto") {
                "needs an `auth:` section: the auto listener picks a server for each transaction, so the router checks passwords and logs in to the servers itself (pooling; see docs/CONFIGURATION.md)"
            } else {
                "needs an `auth:` section: a pooling router checks passwords itself (see docs/CONFIGURATION.md)"
            };
            return Err(invalid(&key, why));
        }
        if cfg.scope.is_empty() {
            return Err(RouterConfigError::Missing {
                key: "scope".into(),
                hint: "the name of the cluster to route to, as in the agents' configuration",
            });
        }
        if cfg.etcd_hosts.is_empty() {
            return Err(RouterConfigError::Missing {
                key: "etcd3.hosts".into(),
                hint: "the etcd endpoints the agents use, e.g. [127.0.0.1:2379]",
            });
        }
        Ok(cfg)
    }

    /// The configuration as YAML that `from_yaml_file` reads back to the same value.
    pub fn to_yaml(&self) -> String {
        let q = |s: &str| Value::from(s).to_string();
        let mut out = String::new();
        out.push_str(&format!("scope: {}\n", q(&self.scope)));
        out.push_str(&format!("namespace: {}\n", q(&self.namespace)));
        if let Some(name) = &self.name {
            out.push_str(&format!("name: {}\n", q(name)));
        }
        out.push_str("etcd3:\n  hosts:\n");
        for host in &self.etcd_hosts {
            out.push_str(&format!("    - {}\n", q(host)));
        }
        if let Some(tls) = &self.etcd_access.tls {
            out.push_str("  protocol: https\n");
            for (key, path) in [
                ("cacert", &tls.cacert),
                ("cert", &tls.cert),
                ("key", &tls.key),
            ] {
                if let Some(path) = path {
                    out.push_str(&format!("  {key}: {}\n", q(&path.to_string_lossy())));
                }
            }
        }
        if let Some((user, password)) = &self.etcd_access.user {
            out.push_str(&format!(
                "  username: {}\n  password: {}\n",
                q(user),
                q(password)
            ));
        }
        out.push_str("write:\n");
        out.push_str(&format!("  listen: {}\n", q(&self.write_listen)));
        out.push_str(&format!(
            "  switchover_wait: {}\n",
            format_duration(self.switchover_wait)
        ));
        if let Some(mode) = self.write_pool_mode {
            out.push_str(&format!("  pool_mode: {}\n", mode.label()));
        }
        out.push_str("read:\n");
        out.push_str(&format!("  listen: {}\n", q(&self.read_listen)));
        if let Some(mode) = self.read_pool_mode {
            out.push_str(&format!("  pool_mode: {}\n", mode.label()));
        }
        match self.max_replay_delay {
            // `max_lag` as a duration: a time bound and no byte bound.
            Some(delay) if self.max_lag_bytes == u64::MAX => {
                out.push_str(&format!("  max_lag: {}\n", format_duration(delay)));
            }
            Some(delay) => {
                out.push_str(&format!("  max_lag: {}\n", self.max_lag_bytes));
                out.push_str(&format!("  max_replay_delay: {}\n", format_duration(delay)));
            }
            None => out.push_str(&format!("  max_lag: {}\n", self.max_lag_bytes)),
        }
        let fallback = match self.read_fallback {
            ReadFallback::Leader => "leader",
            ReadFallback::Refuse => "refuse",
        };
        out.push_str(&format!("  fallback: {fallback}\n"));
        let balance = match self.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConnections => "least_connections",
        };
        out.push_str(&format!("  balance: {balance}\n"));
        if let Some(auto) = &self.auto_listen {
            out.push_str(&format!(
                "auto:\n  listen: {}\n  read_your_writes_wait: {}\n",
                q(auto),
                format_duration(self.read_your_writes_wait)
            ));
        }
        if let Some(api) = &self.api_listen {
            out.push_str(&format!("api:\n  listen: {}\n", q(api)));
        }
        out.push_str(&format!(
            "connect_timeout: {}\n",
            format_duration(self.connect_timeout)
        ));
        out.push_str(&format!(
            "startup_timeout: {}\n",
            format_duration(self.startup_timeout)
        ));
        if let Some(wait) = self.handover_wait {
            out.push_str(&format!("handover_wait: {}\n", format_duration(wait)));
        }
        out.push_str(&format!("tls: {}\n", self.tls.label()));
        let path = |p: &Path| q(&p.to_string_lossy());
        if let Some(cert) = &self.tls_certfile {
            out.push_str(&format!("tls_certfile: {}\n", path(cert)));
        }
        if let Some(key) = &self.tls_keyfile {
            out.push_str(&format!("tls_keyfile: {}\n", path(key)));
        }
        if let Some(ca) = &self.tls_cafile {
            out.push_str(&format!("tls_cafile: {}\n", path(ca)));
        }
        out.push_str(&format!("tls_required: {}\n", self.tls_required));
        out.push_str(&crate::aliases::to_yaml(&self.databases));
        out.push_str(&format!("lag_source: {}\n", self.lag_source.label()));
        out.push_str(&format!("forwarding: {}\n", self.forwarding.label()));
        out.push_str(&format!(
            "rest_poll_interval: {}\n",
            format_duration(self.rest_poll_interval)
        ));
        if let Some(path) = &self.rest_cacert {
            out.push_str(&format!("rest_cacert: {}\n", q(&path.to_string_lossy())));
        }
        if let Some(auth) = &self.auth {
            out.push_str(&crate::pool_config::auth_to_yaml(auth));
            out.push_str(&crate::pool_config::pool_to_yaml(&self.pool));
        }
        out
    }
}

fn parse_write(cfg: &mut RouterConfig, value: &Value) -> Result<(), RouterConfigError> {
    for (k, v) in section("write", value)? {
        match k.as_str() {
            "listen" => cfg.write_listen = listen("write.listen", v)?,
            "switchover_wait" => cfg.switchover_wait = duration("write.switchover_wait", v)?,
            "pool_mode" => {
                cfg.write_pool_mode = Some(crate::pool_config::pool_mode("write.pool_mode", v)?)
            }
            other => return Err(unknown(&format!("write.{other}"))),
        }
    }
    Ok(())
}

fn parse_read(cfg: &mut RouterConfig, value: &Value) -> Result<(), RouterConfigError> {
    for (k, v) in section("read", value)? {
        match k.as_str() {
            "listen" => cfg.read_listen = listen("read.listen", v)?,
            "pool_mode" => {
                cfg.read_pool_mode = Some(crate::pool_config::pool_mode("read.pool_mode", v)?)
            }
            "max_lag" => match v {
                Value::Number(n) => {
                    cfg.max_lag_bytes = n
                        .as_u64()
                        .ok_or_else(|| invalid("read.max_lag", "must be a whole number of bytes"))?
                }
                Value::String(s) => match parse_bytes(s) {
                    Ok(bytes) => cfg.max_lag_bytes = bytes,
                    // `10s`, `500ms`: a bound on the replay delay instead of bytes.
                    Err(size_error) => match parse_duration(s) {
                        Ok(delay) if s.trim().ends_with(|c: char| c.is_ascii_alphabetic()) => {
                            cfg.max_lag_bytes = u64::MAX;
                            cfg.max_replay_delay = Some(delay);
                        }
                        _ => {
                            return Err(invalid(
                                "read.max_lag",
                                &format!("{size_error}; or a duration such as 10s"),
                            ))
                        }
                    },
                },
                _ => {
                    return Err(invalid(
                        "read.max_lag",
                        "must be bytes (1048576), a size (\"16MB\") or a duration (\"10s\")",
                    ))
                }
            },
            "max_replay_delay" => {
                cfg.max_replay_delay = Some(duration("read.max_replay_delay", v)?);
            }
            "fallback" => {
                cfg.read_fallback = match string("read.fallback", v)?.as_str() {
                    "leader" => ReadFallback::Leader,
                    "refuse" => ReadFallback::Refuse,
                    _ => return Err(invalid("read.fallback", "must be `leader` or `refuse`")),
                }
            }
            "balance" => {
                cfg.balance = match string("read.balance", v)?.replace('-', "_").as_str() {
                    "round_robin" | "roundrobin" => Balance::RoundRobin,
                    "least_connections" | "leastconn" => Balance::LeastConnections,
                    _ => {
                        return Err(invalid(
                            "read.balance",
                            "must be `round_robin` or `least_connections`",
                        ))
                    }
                }
            }
            other => return Err(unknown(&format!("read.{other}"))),
        }
    }
    Ok(())
}

/// `etcd3.hosts` as a list or a comma-separated string; `etcd3.host` for a single one; and
/// how to reach them: `protocol` (http or https), `cacert`, `cert`, `key`, `username`,
/// `password`, as in the agents' files.
fn parse_etcd(
    name: &str,
    value: &Value,
) -> Result<(Vec<String>, pgbaton_dcs::EtcdAccess), RouterConfigError> {
    let mut hosts = Vec::new();
    let mut https = false;
    let mut tls = pgbaton_dcs::EtcdTls::default();
    let (mut user, mut password) = (None, None);
    for (k, v) in section(name, value)? {
        let key = format!("{name}.{k}");
        match (k.as_str(), v) {
            ("hosts", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    hosts.push(listen(&format!("{key}[{i}]"), item)?);
                }
            }
            ("hosts" | "host", Value::String(s)) => {
                for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    hosts.push(listen(&key, &Value::from(part))?);
                }
            }
            ("hosts" | "host", _) => {
                return Err(invalid(
                    &key,
                    "must be a list of host:port or a comma-separated string",
                ))
            }
            ("protocol", _) => match string(&key, v)?.as_str() {
                "https" => https = true,
                "http" => https = false,
                other => {
                    return Err(invalid(
                        &key,
                        &format!("{other} is not a protocol etcd speaks; use http or https"),
                    ))
                }
            },
            ("cacert", _) => tls.cacert = Some(string(&key, v)?.into()),
            ("cert", _) => tls.cert = Some(string(&key, v)?.into()),
            ("key", _) => tls.key = Some(string(&key, v)?.into()),
            ("username" | "user", _) => user = Some(string(&key, v)?),
            ("password", _) => password = Some(string(&key, v)?),
            _ => return Err(unknown(&key)),
        }
    }
    let has_files = tls.cacert.is_some() || tls.cert.is_some() || tls.key.is_some();
    if has_files && !https {
        return Err(invalid(
            &format!("{name}.protocol"),
            "TLS files are set but etcd is reached over http; set protocol: https to use them",
        ));
    }
    let user = match (user, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                &format!("{name}.password"),
                "username is set without a password; set both, or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                &format!("{name}.username"),
                "password is set without a username; set both, or neither",
            ))
        }
    };
    let access = pgbaton_dcs::EtcdAccess {
        tls: https.then_some(tls),
        user,
    };
    Ok((hosts, access))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
scope: demo
namespace: /service/
name: router-a
etcd3:
  hosts: [127.0.0.1:2379, "127.0.0.2:2379"]
write:
  listen: 127.0.0.1:6000
  switchover_wait: 2.5
read:
  listen: 127.0.0.1:6001
  max_lag: 16MB
  fallback: refuse
  balance: least_connections
api:
  listen: 127.0.0.1:6002
connect_timeout: 500ms
handover_wait: 7s
tls: passthrough
"#;

    #[test]
    fn full_config_parses_and_round_trips() {
        let cfg = RouterConfig::from_yaml_str(FULL).expect("parse");
        assert_eq!(cfg.scope, "demo");
        assert_eq!(cfg.name.as_deref(), Some("router-a"));
        assert_eq!(cfg.etcd_hosts, vec!["127.0.0.1:2379", "127.0.0.2:2379"]);
        assert_eq!(cfg.write_listen, "127.0.0.1:6000");
        assert_eq!(cfg.switchover_wait, Duration::from_millis(2500));
        assert_eq!(cfg.max_lag_bytes, 16 * 1024 * 1024);
        assert_eq!(cfg.read_fallback, ReadFallback::Refuse);
        assert_eq!(cfg.balance, Balance::LeastConnections);
        assert_eq!(cfg.api_listen.as_deref(), Some("127.0.0.1:6002"));
        assert_eq!(cfg.connect_timeout, Duration::from_millis(500));
        assert_eq!(cfg.startup_timeout, Duration::from_secs(10));
        assert_eq!(cfg.handover_wait, Some(Duration::from_secs(7)));
        assert_eq!(cfg.tls, TlsMode::Passthrough);
        let again = RouterConfig::from_yaml_str(&cfg.to_yaml()).expect("reparse");
        assert_eq!(again, cfg);
    }

    #[test]
    fn defaults_and_comma_separated_hosts() {
        let cfg =
            RouterConfig::from_yaml_str("scope: c\netcd3:\n  hosts: 'a:1, b:2'\n").expect("parse");
        let expected = RouterConfig::new(vec!["a:1".into(), "b:2".into()], "/service/", "c");
        assert_eq!(cfg, expected);
    }

    #[test]
    fn aliases_lag_source_and_time_bound_parse_and_round_trip() {
        let text = "scope: c\netcd3: {hosts: [a:1]}\n\
            read: {max_lag: 10s}\n\
            databases:\n  app_ro: {dbname: app, target: read}\n  plain: {dbname: other}\n\
            lag_source: dcs\nrest_poll_interval: 250ms\ntls: passthrough\ntls_required: true\n";
        let cfg = RouterConfig::from_yaml_str(text).expect("parse");
        assert_eq!(cfg.max_replay_delay, Some(Duration::from_secs(10)));
        assert_eq!(cfg.max_lag_bytes, u64::MAX, "a duration bound alone");
        let alias = &cfg.databases["app_ro"];
        assert_eq!(
            (alias.dbname.as_str(), alias.target),
            ("app", Some(crate::protocol::Target::Read))
        );
        assert_eq!(cfg.databases["plain"].target, None);
        assert_eq!(cfg.lag_source, LagSource::Dcs);
        assert_eq!(cfg.rest_poll_interval, Duration::from_millis(250));
        assert!(cfg.tls_required);
        let again = RouterConfig::from_yaml_str(&cfg.to_yaml()).expect("reparse");
        assert_eq!(again, cfg);

        let both = "scope: c\netcd3: {hosts: [a:1]}\nread: {max_lag: 16MB, max_replay_delay: 2s}\n";
        let cfg = RouterConfig::from_yaml_str(both).expect("parse");
        assert_eq!(cfg.max_lag_bytes, 16 << 20);
        assert_eq!(cfg.max_replay_delay, Some(Duration::from_secs(2)));
        assert_eq!(cfg.lag_source, LagSource::Rest, "rest is the default");
        assert_eq!(cfg.rest_poll_interval, Duration::from_secs(1));
        let again = RouterConfig::from_yaml_str(&cfg.to_yaml()).expect("reparse");
        assert_eq!(again, cfg);
    }

    fn error_of(text: &str) -> String {
        RouterConfig::from_yaml_str(text)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn errors_name_the_key_path() {
        let base = "scope: c\netcd3: {hosts: [a:1]}\n";
        let e = error_of(&format!("{base}read: {{max_lag: lots}}\n"));
        assert!(e.contains("read.max_lag"), "{e}");
        let e = error_of(&format!("{base}read: {{fallback: maybe}}\n"));
        assert!(e.contains("read.fallback") && e.contains("refuse"), "{e}");
        let e = error_of(&format!("{base}write: {{listen: nowhere}}\n"));
        assert!(e.contains("write.listen") && e.contains("host:port"), "{e}");
        let e = error_of(&format!("{base}write: {{switchover_wait: -1}}\n"));
        assert!(e.contains("write.switchover_wait"), "{e}");
        let e = error_of(&format!("{base}read: {{lsiten: a:1}}\n"));
        assert!(e.contains("read.lsiten") && e.contains("unknown"), "{e}");
        let e = error_of(&format!("{base}read: {{balance: random}}\n"));
        assert!(e.contains("read.balance"), "{e}");
        let e = error_of(&format!("{base}name: a/b\n"));
        assert!(e.contains("name") && e.contains("without `/`"), "{e}");
        let e = error_of(&format!("{base}tls: sometimes\n"));
        assert!(e.contains("tls") && e.contains("terminate"), "{e}");
        let e = error_of(&format!("{base}tls: terminate\n"));
        assert!(e.contains("tls_certfile") && e.contains("required"), "{e}");
        let e = error_of(&format!("{base}tls_required: true\n"));
        assert!(e.contains("tls_required"), "{e}");
        let e = error_of(&format!("{base}lag_source: carrier pigeon\n"));
        assert!(e.contains("lag_source") && e.contains("rest"), "{e}");
        let e = error_of(&format!("{base}rest_poll_interval: 1ms\n"));
        assert!(e.contains("rest_poll_interval"), "{e}");
        let e = error_of(&format!("{base}read: {{max_lag: 10 parsecs}}\n"));
        assert!(e.contains("read.max_lag") && e.contains("duration"), "{e}");
        let e = error_of("etcd3: {hosts: [a:1]}\n");
        assert!(e.contains("scope"), "{e}");
        let e = error_of("scope: c\n");
        assert!(e.contains("etcd3.hosts"), "{e}");
        let e = error_of("scope: [\n");
        assert!(e.contains("YAML"), "{e}");
    }
}
