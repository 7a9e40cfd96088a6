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
use crate::units::{format_duration, parse_bytes};
use crate::yaml::{self, invalid};
use pgbaton_config::walk::{self, Ctx, Section};

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
    pub auth: Option<crate::credentials::AuthConfig>,
    /// `pool`: PgBouncer's pool settings (used with `auth`).
    pub pool: crate::pool_config::PoolSettings,
    /// `write.pool_mode` / `read.pool_mode`: a listener's mode, over `pool.pool_mode`.
    pub write_pool_mode: Option<crate::pool_config::PoolMode>,
    pub read_pool_mode: Option<crate::pool_config::PoolMode>,
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
            pool: crate::pool_config::PoolSettings::default(),
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
        let root = if root.is_null() {
            Value::Object(Map::new())
        } else {
            root
        };
        let ctx = yaml::context();
        let mut top = Section::new(&ctx, "", &root)?;
        let mut cfg = RouterConfig::new(Vec::new(), "/service/", "");
        if let Some(write) = top.section(&ctx, "write")? {
            parse_write(&ctx, &mut cfg, write)?;
        }
        if let Some(read) = top.section(&ctx, "read")? {
            parse_read(&ctx, &mut cfg, read)?;
        }
        if let Some(mut auto) = top.section(&ctx, "auto")? {
            cfg.auto_listen = yaml::listen(&ctx, &mut auto, "listen")?;
            if let Some(wait) = yaml::duration(&ctx, &mut auto, "read_your_writes_wait")? {
                cfg.read_your_writes_wait = wait;
            }
            auto.finish_strict(&ctx)?;
        }
        if let Some(mut api) = top.section(&ctx, "api")? {
            cfg.api_listen = yaml::listen(&ctx, &mut api, "listen")?;
            api.finish_strict(&ctx)?;
        }
        let etcd_key = match (top.has("etcd3"), top.has("etcd")) {
            (true, true) => {
                return Err(invalid(
                    "etcd",
                    "and etcd3 are both set: keep one (etcd3, as in the agents' files)",
                ))
            }
            (false, true) => "etcd",
            _ => "etcd3",
        };
        top.known("etcd");
        if let Some(etcd) = top.section(&ctx, etcd_key)? {
            (cfg.etcd_hosts, cfg.etcd_access) = parse_etcd(&ctx, etcd)?;
        }
        if let Some(namespace) = top.string(&ctx, "namespace")? {
            cfg.namespace = namespace;
        }
        if let Some(name) = top.string(&ctx, "name")? {
            if name.contains('/') {
                return Err(invalid("name", "must be a non-empty name without `/`"));
            }
            cfg.name = Some(name);
        }
        if let Some(scope) = top.string(&ctx, "scope")? {
            cfg.scope = scope;
        }
        if let Some(timeout) = yaml::duration(&ctx, &mut top, "connect_timeout")? {
            cfg.connect_timeout = timeout;
        }
        if let Some(timeout) = yaml::duration(&ctx, &mut top, "startup_timeout")? {
            cfg.startup_timeout = timeout;
        }
        cfg.handover_wait = yaml::duration(&ctx, &mut top, "handover_wait")?;
        let modes = [
            ("refuse", TlsMode::Refuse),
            ("passthrough", TlsMode::Passthrough),
            ("terminate", TlsMode::Terminate),
        ];
        let expected = "must be `refuse`, `passthrough` or `terminate`";
        if let Some(mode) = yaml::choice(&ctx, &mut top, "tls", &modes, expected)? {
            cfg.tls = mode;
        }
        cfg.tls_certfile = yaml::path(&ctx, &mut top, "tls_certfile")?;
        cfg.tls_keyfile = yaml::path(&ctx, &mut top, "tls_keyfile")?;
        cfg.tls_cafile = yaml::path(&ctx, &mut top, "tls_cafile")?;
        cfg.tls_required = top.bool(&ctx, "tls_required")?.unwrap_or(false);
        if let Some(databases) = top.section(&ctx, "databases")? {
            cfg.databases = crate::aliases::parse(&ctx, &databases)?;
        }
        let sources = [("rest", LagSource::Rest), ("dcs", LagSource::Dcs)];
        let expected = "must be `rest` or `dcs`";
        if let Some(source) = yaml::choice(&ctx, &mut top, "lag_source", &sources, expected)? {
            cfg.lag_source = source;
        }
        let ways = [
            ("auto", Forwarding::Auto),
            ("kernel", Forwarding::Kernel),
            ("userspace", Forwarding::Userspace),
        ];
        let expected = "must be `auto`, `kernel` or `userspace`";
        if let Some(way) = yaml::choice(&ctx, &mut top, "forwarding", &ways, expected)? {
            cfg.forwarding = way;
        }
        cfg.rest_cacert = yaml::path(&ctx, &mut top, "rest_cacert")?;
        if let Some(interval) = yaml::duration(&ctx, &mut top, "rest_poll_interval")? {
            if interval < Duration::from_millis(50) {
                return Err(invalid("rest_poll_interval", "must be at least 50ms"));
            }
            cfg.rest_poll_interval = interval;
        }
        // `auth:` alone (no keys) turns pooling on with the default authentication.
        let mut pooling_key = None;
        if top.has("auth") {
            let auth = top
                .get("auth")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            let section = Section::new(&ctx, "auth", &auth)?;
            cfg.auth = Some(crate::pool_config::parse_auth(&ctx, section)?);
        }
        if let Some(pool) = top.section(&ctx, "pool")? {
            cfg.pool = crate::pool_config::parse_pool(&ctx, pool)?;
            pooling_key = Some("pool".to_string());
        }
        top.finish_strict(&ctx)?;
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

fn parse_write(
    ctx: &Ctx,
    cfg: &mut RouterConfig,
    mut write: Section,
) -> Result<(), RouterConfigError> {
    if let Some(listen) = yaml::listen(ctx, &mut write, "listen")? {
        cfg.write_listen = listen;
    }
    if let Some(wait) = yaml::duration(ctx, &mut write, "switchover_wait")? {
        cfg.switchover_wait = wait;
    }
    cfg.write_pool_mode = crate::pool_config::pool_mode(ctx, &mut write, "pool_mode")?;
    Ok(write.finish_strict(ctx)?)
}

fn parse_read(
    ctx: &Ctx,
    cfg: &mut RouterConfig,
    mut read: Section,
) -> Result<(), RouterConfigError> {
    if let Some(listen) = yaml::listen(ctx, &mut read, "listen")? {
        cfg.read_listen = listen;
    }
    cfg.read_pool_mode = crate::pool_config::pool_mode(ctx, &mut read, "pool_mode")?;
    if let Some(bound) = read.get("max_lag") {
        parse_max_lag(ctx, cfg, bound)?;
    }
    if let Some(delay) = yaml::duration(ctx, &mut read, "max_replay_delay")? {
        cfg.max_replay_delay = Some(delay);
    }
    let fallbacks = [
        ("leader", ReadFallback::Leader),
        ("refuse", ReadFallback::Refuse),
    ];
    let expected = "must be `leader` or `refuse`";
    if let Some(fallback) = yaml::choice(ctx, &mut read, "fallback", &fallbacks, expected)? {
        cfg.read_fallback = fallback;
    }
    let balances = [
        ("round_robin", Balance::RoundRobin),
        ("roundrobin", Balance::RoundRobin),
        ("least_connections", Balance::LeastConnections),
        ("leastconn", Balance::LeastConnections),
    ];
    let expected = "must be `round_robin` or `least_connections`";
    if let Some(balance) = yaml::choice(ctx, &mut read, "balance", &balances, expected)? {
        cfg.balance = balance;
    }
    Ok(read.finish_strict(ctx)?)
}

/// `read.max_lag`: bytes (`1048576`), a size (`16MB`), or a duration (`10s`: a bound on the
/// replay delay instead of bytes).
fn parse_max_lag(
    ctx: &Ctx,
    cfg: &mut RouterConfig,
    bound: &Value,
) -> Result<(), RouterConfigError> {
    const KEY: &str = "read.max_lag";
    match bound {
        Value::Number(n) => {
            cfg.max_lag_bytes = n
                .as_u64()
                .ok_or_else(|| invalid(KEY, "must be a whole number of bytes"))?;
        }
        Value::String(s) => match parse_bytes(s) {
            Ok(bytes) => cfg.max_lag_bytes = bytes,
            Err(size_error) if s.trim().ends_with(|c: char| c.is_ascii_alphabetic()) => {
                let delay = yaml::duration_value(ctx, KEY, bound).map_err(|_| {
                    invalid(KEY, &format!("{size_error}; or a duration such as 10s"))
                })?;
                cfg.max_lag_bytes = u64::MAX;
                cfg.max_replay_delay = Some(delay);
            }
            Err(size_error) => return Err(invalid(KEY, &size_error)),
        },
        _ => {
            return Err(invalid(
                KEY,
                "must be bytes (1048576), a size (\"16MB\") or a duration (\"10s\")",
            ))
        }
    }
    Ok(())
}

/// `etcd3.hosts` as a list or a comma-separated string; `etcd3.host` for a single one; and
/// how to reach them: `protocol` (http or https), `cacert`, `cert`, `key`, `username`,
/// `password`, as in the agents' files.
fn parse_etcd(
    ctx: &Ctx,
    mut etcd: Section,
) -> Result<(Vec<String>, pgbaton_dcs::EtcdAccess), RouterConfigError> {
    let mut hosts = Vec::new();
    for key in ["hosts", "host"] {
        let path = etcd.at(key);
        match etcd.get(key) {
            None => {}
            Some(Value::Array(items)) if key == "hosts" => {
                for (i, item) in items.iter().enumerate() {
                    hosts.push(yaml::listen_value(ctx, &walk::index(&path, i), item)?);
                }
            }
            Some(Value::String(s)) => {
                for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    hosts.push(yaml::listen_value(ctx, &path, &Value::from(part))?);
                }
            }
            Some(_) => {
                return Err(invalid(
                    &path,
                    "must be a list of host:port or a comma-separated string",
                ))
            }
        }
    }
    let protocols = [("https", true), ("http", false)];
    let expected = "must be http or https";
    let https = yaml::choice(ctx, &mut etcd, "protocol", &protocols, expected)?.unwrap_or(false);
    let tls = pgbaton_dcs::EtcdTls {
        cacert: yaml::path(ctx, &mut etcd, "cacert")?,
        cert: yaml::path(ctx, &mut etcd, "cert")?,
        key: yaml::path(ctx, &mut etcd, "key")?,
    };
    let user = match etcd.string(ctx, "username")? {
        Some(user) => Some(user),
        None => etcd.string(ctx, "user")?,
    };
    let password = etcd.any_string(ctx, "password")?;
    let name = etcd.path.clone();
    etcd.finish_strict(ctx)?;
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
