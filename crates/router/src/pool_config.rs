//! The `auth:` and `pool:` sections of router.yml, with PgBouncer's key names. Pooling is on
//! when `auth:` is present (the router must check passwords to hand clients shared server
//! connections); `pool:` and every `pool_mode` need it. Keys PgBouncer has and the router
//! does not implement yet are refused, naming them.
//!
//! ```yaml
//! auth:
//!   auth_type: scram-sha-256        # trust | password | md5 | scram-sha-256 | hba
//!   auth_file: /etc/pgbaton/userlist.txt
//!   auth_user: pgbaton_auth         # auth_query runs as this role on the leader
//! pool:
//!   pool_mode: transaction
//!   default_pool_size: 20
//!   max_client_conn: 1000
//! ```

use std::path::PathBuf;

use std::time::Duration;

use pgbaton_config::walk::{self, Ctx, Section};
use serde_json::Value;

use crate::credentials::{AuthConfig, AuthType, Credentials, Method};
use crate::error::RouterConfigError;
use crate::units::format_duration;
use crate::yaml::{self, invalid};

/// When a client's server connection goes back to the pool (`pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client disconnects (the default).
    Session,
    /// At the end of each transaction.
    Transaction,
}

impl PoolMode {
    pub fn label(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }

    pub fn parse(text: &str) -> Option<PoolMode> {
        match text {
            "session" => Some(PoolMode::Session),
            "transaction" => Some(PoolMode::Transaction),
            _ => None,
        }
    }
}

/// The `pool:` section (PgBouncer's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub pool_mode: PoolMode,
    pub default_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Duration,
    pub max_client_conn: usize,
    /// 0 = no limit.
    pub max_db_connections: usize,
    /// 0 = no limit.
    pub max_user_connections: usize,
    /// A server connection older than this is closed when it comes back (0 = never).
    pub server_lifetime: Duration,
    /// An idle server connection is closed after this long (0 = never).
    pub server_idle_timeout: Duration,
    /// A client waits this long for a server connection (0 = forever).
    pub query_wait_timeout: Duration,
    /// A client without a server connection is closed after this long idle (0 = never).
    pub client_idle_timeout: Duration,
    /// Run on a server connection before another client gets it, in session mode ("" = none).
    pub server_reset_query: String,
    /// Run on a connection idle longer than `server_check_delay` before use ("" = none).
    pub server_check_query: String,
    pub server_check_delay: Duration,
    /// Connecting and logging in to a server must finish within this (PgBouncer's
    /// `server_connect_timeout`); None: the router's `connect_timeout` bounds the connect
    /// and `startup_timeout` the login.
    pub server_connect_timeout: Option<Duration>,
    /// Server connections each pool keeps open, idle or not (at most its size), opened by
    /// the router every second once a client has logged in to the pool (0 = none).
    pub min_pool_size: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            pool_mode: PoolMode::Session,
            default_pool_size: 20,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_client_conn: 100,
            max_db_connections: 0,
            max_user_connections: 0,
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            query_wait_timeout: Duration::from_secs(120),
            client_idle_timeout: Duration::ZERO,
            server_reset_query: "DISCARD ALL".into(),
            server_check_query: "select 1".into(),
            server_check_delay: Duration::from_secs(30),
            server_connect_timeout: None,
            min_pool_size: 0,
        }
    }
}

/// PgBouncer settings the router does not implement (yet): refused with a clear error.
const NOT_YET: [&str; 7] = [
    "max_prepared_statements",
    "server_reset_query_always",
    "ignore_startup_parameters",
    "track_extra_parameters",
    "idle_transaction_timeout",
    "query_timeout",
    "server_login_retry",
];

/// `key` of `section` as a pool mode.
pub(crate) fn pool_mode(
    ctx: &Ctx,
    section: &mut Section,
    key: &str,
) -> Result<Option<PoolMode>, RouterConfigError> {
    let path = section.at(key);
    let Some(text) = section.string(ctx, key)? else {
        return Ok(None);
    };
    match PoolMode::parse(&text) {
        Some(mode) => Ok(Some(mode)),
        None if text == "statement" => Err(invalid(
            &path,
            "statement pooling is not supported: use `session` or `transaction`",
        )),
        None => Err(invalid(&path, "must be `session` or `transaction`")),
    }
}

pub(crate) fn parse_auth(ctx: &Ctx, mut auth: Section) -> Result<AuthConfig, RouterConfigError> {
    let mut cfg = AuthConfig::default();
    let auth_type_path = auth.at("auth_type");
    let auth_type = auth.string(ctx, "auth_type")?;
    if let Some(text) = &auth_type {
        cfg.auth_type = match text.as_str() {
            "hba" => AuthType::Hba,
            other => match Method::parse(other) {
                Some(Method::Reject) | None => {
                    return Err(invalid(
                        &auth_type_path,
                        "must be trust, password (plain), md5, scram-sha-256 or hba",
                    ))
                }
                Some(m) => AuthType::Method(m),
            },
        };
    }
    let hba_path = auth.at("hba");
    cfg.hba = match auth.get("hba") {
        None => Vec::new(),
        Some(Value::String(text)) => text.lines().map(str::to_string).collect(),
        Some(lines @ Value::Array(_)) => walk::string_list(ctx, &hba_path, lines)?,
        Some(_) => return Err(invalid(&hba_path, "must be a list of pg_hba.conf lines")),
    };
    cfg.auth_hba_file = yaml::path(ctx, &mut auth, "auth_hba_file")?;
    cfg.auth_file = yaml::path(ctx, &mut auth, "auth_file")?;
    cfg.auth_user = auth.string(ctx, "auth_user")?;
    if let Some(query) = auth.string(ctx, "auth_query")? {
        cfg.auth_query = query;
    }
    cfg.auth_dbname = auth.string(ctx, "auth_dbname")?;
    if let Some(ttl) = yaml::duration(ctx, &mut auth, "auth_query_cache_ttl")? {
        cfg.auth_query_cache_ttl = ttl;
    }
    auth.finish_strict(ctx)?;
    if auth_type.is_none() && (!cfg.hba.is_empty() || cfg.auth_hba_file.is_some()) {
        cfg.auth_type = AuthType::Hba;
    }
    // Loading checks the files and the rules now, naming the key.
    Credentials::load(&cfg)?;
    Ok(cfg)
}

pub(crate) fn parse_pool(ctx: &Ctx, mut pool: Section) -> Result<PoolSettings, RouterConfigError> {
    if let Some(key) = NOT_YET.iter().find(|key| pool.has(key)) {
        return Err(invalid(
            &pool.at(key),
            "is not supported by the pgbaton router yet (see docs/CONFIGURATION.md for the pooling keys it has)",
        ));
    }
    let mut cfg = PoolSettings::default();
    let p = &mut pool;
    if let Some(mode) = pool_mode(ctx, p, "pool_mode")? {
        cfg.pool_mode = mode;
    }
    let counts: [(&str, &mut usize); 5] = [
        ("reserve_pool_size", &mut cfg.reserve_pool_size),
        ("max_client_conn", &mut cfg.max_client_conn),
        ("max_db_connections", &mut cfg.max_db_connections),
        ("max_user_connections", &mut cfg.max_user_connections),
        ("min_pool_size", &mut cfg.min_pool_size),
    ];
    for (key, field) in counts {
        if let Some(n) = yaml::count(ctx, p, key)? {
            *field = n;
        }
    }
    if let Some(size) = yaml::positive(ctx, p, "default_pool_size")? {
        cfg.default_pool_size = size;
    }
    let durations: [(&str, &mut Duration); 6] = [
        ("reserve_pool_timeout", &mut cfg.reserve_pool_timeout),
        ("server_lifetime", &mut cfg.server_lifetime),
        ("server_idle_timeout", &mut cfg.server_idle_timeout),
        ("query_wait_timeout", &mut cfg.query_wait_timeout),
        ("client_idle_timeout", &mut cfg.client_idle_timeout),
        ("server_check_delay", &mut cfg.server_check_delay),
    ];
    for (key, field) in durations {
        if let Some(d) = yaml::duration(ctx, p, key)? {
            *field = d;
        }
    }
    // Either may be empty: no reset, no check.
    if let Some(query) = p.any_string(ctx, "server_reset_query")? {
        cfg.server_reset_query = query;
    }
    if let Some(query) = p.any_string(ctx, "server_check_query")? {
        cfg.server_check_query = query;
    }
    if let Some(limit) = yaml::duration(ctx, p, "server_connect_timeout")? {
        if limit.is_zero() {
            return Err(invalid(
                &p.at("server_connect_timeout"),
                "must be more than 0 (leave it out to bound the connect by connect_timeout and the login by startup_timeout)",
            ));
        }
        cfg.server_connect_timeout = Some(limit);
    }
    pool.finish_strict(ctx)?;
    Ok(cfg)
}

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

pub(crate) fn auth_to_yaml(cfg: &AuthConfig) -> String {
    let mut out = String::from("auth:\n");
    out.push_str(&format!("  auth_type: {}\n", cfg.auth_type.label()));
    if !cfg.hba.is_empty() {
        out.push_str("  hba:\n");
        for line in &cfg.hba {
            out.push_str(&format!("    - {}\n", q(line)));
        }
    }
    let p = |p: &PathBuf| q(&p.to_string_lossy());
    if let Some(file) = &cfg.auth_hba_file {
        out.push_str(&format!("  auth_hba_file: {}\n", p(file)));
    }
    if let Some(file) = &cfg.auth_file {
        out.push_str(&format!("  auth_file: {}\n", p(file)));
    }
    if let Some(user) = &cfg.auth_user {
        out.push_str(&format!("  auth_user: {}\n", q(user)));
    }
    out.push_str(&format!("  auth_query: {}\n", q(&cfg.auth_query)));
    if let Some(db) = &cfg.auth_dbname {
        out.push_str(&format!("  auth_dbname: {}\n", q(db)));
    }
    out.push_str(&format!(
        "  auth_query_cache_ttl: {}\n",
        format_duration(cfg.auth_query_cache_ttl)
    ));
    out
}

pub(crate) fn pool_to_yaml(cfg: &PoolSettings) -> String {
    let d = format_duration;
    let mut out = format!(
        "pool:\n  pool_mode: {}\n  default_pool_size: {}\n  reserve_pool_size: {}\n  reserve_pool_timeout: {}\n  max_client_conn: {}\n  max_db_connections: {}\n  max_user_connections: {}\n  server_lifetime: {}\n  server_idle_timeout: {}\n  query_wait_timeout: {}\n  client_idle_timeout: {}\n  server_reset_query: {}\n  server_check_query: {}\n  server_check_delay: {}\n",
        cfg.pool_mode.label(),
        cfg.default_pool_size,
        cfg.reserve_pool_size,
        d(cfg.reserve_pool_timeout),
        cfg.max_client_conn,
        cfg.max_db_connections,
        cfg.max_user_connections,
        d(cfg.server_lifetime),
        d(cfg.server_idle_timeout),
        d(cfg.query_wait_timeout),
        d(cfg.client_idle_timeout),
        q(&cfg.server_reset_query),
        q(&cfg.server_check_query),
        d(cfg.server_check_delay),
    );
    if cfg.min_pool_size > 0 {
        out.push_str(&format!("  min_pool_size: {}\n", cfg.min_pool_size));
    }
    if let Some(limit) = cfg.server_connect_timeout {
        out.push_str(&format!("  server_connect_timeout: {}\n", d(limit)));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::RouterConfig;

    const BASE: &str = "scope: c\netcd3: {hosts: [a:1]}\n";

    fn error_of(extra: &str) -> String {
        RouterConfig::from_yaml_str(&format!("{BASE}{extra}"))
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn pooling_keys_parse_round_trip_and_refuse_what_is_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(&userlist, "\"app\" \"secret\"\n").expect("write");
        let text = format!(
            "{BASE}auth:\n  auth_file: {}\n  hba: ['host all all 127.0.0.1/32 scram-sha-256']\n\
             pool:\n  pool_mode: transaction\n  default_pool_size: 5\n  max_client_conn: 1000\n  query_wait_timeout: 3\n  server_reset_query: ''\n  server_connect_timeout: 2\n  min_pool_size: 3\n\
             write: {{pool_mode: session}}\n\
             databases: {{app_tx: {{dbname: app, pool_mode: transaction, pool_size: 2}}}}\n",
            userlist.display()
        );
        let cfg = RouterConfig::from_yaml_str(&text).expect("parse");
        let auth = cfg.auth.as_ref().expect("auth");
        assert_eq!(
            auth.auth_type,
            crate::credentials::AuthType::Hba,
            "hba lines imply hba"
        );
        assert_eq!(cfg.pool.default_pool_size, 5);
        assert_eq!(cfg.pool.max_client_conn, 1000);
        assert_eq!(
            cfg.pool.query_wait_timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(cfg.pool.server_reset_query, "");
        assert_eq!(
            cfg.pool.server_connect_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(cfg.pool.min_pool_size, 3);
        assert_eq!(cfg.write_pool_mode, Some(crate::pool::PoolMode::Session));
        assert_eq!(cfg.databases["app_tx"].pool_size, Some(2));
        let again = RouterConfig::from_yaml_str(&cfg.to_yaml()).expect("reparse");
        assert_eq!(again, cfg);

        let e = error_of("pool: {pool_mode: transaction}\n");
        assert!(e.contains("pool") && e.contains("auth:"), "{e}");
        let e = error_of("write: {pool_mode: transaction}\n");
        assert!(e.contains("write.pool_mode") && e.contains("auth:"), "{e}");
        let e = error_of("auth: {auth_type: trust}\npool: {query_timeout: 5}\n");
        assert!(
            e.contains("pool.query_timeout") && e.contains("not supported"),
            "{e}"
        );
        let e = error_of("auth: {auth_type: trust}\npool: {pool_mode: statement}\n");
        assert!(e.contains("statement pooling is not supported"), "{e}");
        let e = error_of("auth: {auth_type: md5}\n");
        assert!(e.contains("auth.auth_file"), "{e}");
        let e = error_of("auth: {auth_type: trust, auth_file: /nonexistent/userlist.txt}\n");
        assert!(
            e.contains("auth.auth_file") && e.contains("cannot be read"),
            "{e}"
        );
        let e = error_of("auth: {hba: ['host all all 127.0.0.1/32 peer']}\n");
        assert!(
            e.contains("auth.hba") && e.contains("line 1") && e.contains("peer"),
            "{e}"
        );
        let e = error_of("auth: {auth_type: trust}\npool: {server_connect_timeout: 0}\n");
        assert!(
            e.contains("pool.server_connect_timeout") && e.contains("more than 0"),
            "{e}"
        );
        let e = error_of("auth: {auth_type: trust}\npool: {default_pool_size: 0}\n");
        assert!(e.contains("pool.default_pool_size"), "{e}");
    }
}
