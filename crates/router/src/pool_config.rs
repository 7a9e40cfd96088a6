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

use serde_json::{Map, Value};

use crate::auth::{AuthConfig, AuthType, Method};
use crate::error::RouterConfigError;
use crate::pool::{PoolMode, PoolSettings};
use crate::units::format_duration;
use crate::yaml::{duration, invalid, section, string, unknown};

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

fn not_yet(key: &str) -> RouterConfigError {
    invalid(
        key,
        "is not supported by the pgbaton router yet (see docs/CONFIGURATION.md for the pooling keys it has)",
    )
}

pub(crate) fn pool_mode(key: &str, value: &Value) -> Result<PoolMode, RouterConfigError> {
    let text = string(key, value)?;
    match PoolMode::parse(&text) {
        Some(mode) => Ok(mode),
        None if text == "statement" => Err(invalid(
            key,
            "statement pooling is not supported: use `session` or `transaction`",
        )),
        None => Err(invalid(key, "must be `session` or `transaction`")),
    }
}

pub(crate) fn count(key: &str, value: &Value) -> Result<usize, RouterConfigError> {
    value
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| invalid(key, "must be a whole number (0 or more)"))
}

fn path(key: &str, value: &Value) -> Result<PathBuf, RouterConfigError> {
    Ok(PathBuf::from(string(key, value)?))
}

pub(crate) fn parse_auth(value: &Value) -> Result<AuthConfig, RouterConfigError> {
    let mut cfg = AuthConfig::default();
    let mut auth_type_given = false;
    for (k, v) in section("auth", value)? {
        let key = format!("auth.{k}");
        match k.as_str() {
            "auth_type" => {
                auth_type_given = true;
                let text = string(&key, v)?;
                cfg.auth_type = match text.as_str() {
                    "hba" => AuthType::Hba,
                    other => match Method::parse(other) {
                        Some(Method::Reject) | None => {
                            return Err(invalid(
                                &key,
                                "must be trust, password (plain), md5, scram-sha-256 or hba",
                            ))
                        }
                        Some(m) => AuthType::Method(m),
                    },
                };
            }
            "hba" => {
                let lines = match v {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| string(&format!("{key}[{i}]"), item))
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::String(text) => text.lines().map(str::to_string).collect(),
                    _ => return Err(invalid(&key, "must be a list of pg_hba.conf lines")),
                };
                cfg.hba = lines;
            }
            "auth_hba_file" => cfg.auth_hba_file = Some(path(&key, v)?),
            "auth_file" => cfg.auth_file = Some(path(&key, v)?),
            "auth_user" => cfg.auth_user = Some(string(&key, v)?),
            "auth_query" => cfg.auth_query = string(&key, v)?,
            "auth_dbname" => cfg.auth_dbname = Some(string(&key, v)?),
            "auth_query_cache_ttl" => cfg.auth_query_cache_ttl = duration(&key, v)?,
            _ => return Err(unknown(&key)),
        }
    }
    if !auth_type_given && (!cfg.hba.is_empty() || cfg.auth_hba_file.is_some()) {
        cfg.auth_type = AuthType::Hba;
    }
    // Loading checks the files and the rules now, naming the key.
    crate::auth::Auth::load(&cfg)?;
    Ok(cfg)
}

pub(crate) fn parse_pool(value: &Value) -> Result<PoolSettings, RouterConfigError> {
    let mut cfg = PoolSettings::default();
    let map: &Map<String, Value> = section("pool", value)?;
    for (k, v) in map {
        let key = format!("pool.{k}");
        match k.as_str() {
            "pool_mode" => cfg.pool_mode = pool_mode(&key, v)?,
            "default_pool_size" => {
                cfg.default_pool_size = count(&key, v)?;
                if cfg.default_pool_size == 0 {
                    return Err(invalid(&key, "must be at least 1"));
                }
            }
            "reserve_pool_size" => cfg.reserve_pool_size = count(&key, v)?,
            "reserve_pool_timeout" => cfg.reserve_pool_timeout = duration(&key, v)?,
            "max_client_conn" => cfg.max_client_conn = count(&key, v)?,
            "max_db_connections" => cfg.max_db_connections = count(&key, v)?,
            "max_user_connections" => cfg.max_user_connections = count(&key, v)?,
            "server_lifetime" => cfg.server_lifetime = duration(&key, v)?,
            "server_idle_timeout" => cfg.server_idle_timeout = duration(&key, v)?,
            "query_wait_timeout" => cfg.query_wait_timeout = duration(&key, v)?,
            "client_idle_timeout" => cfg.client_idle_timeout = duration(&key, v)?,
            "server_reset_query" => cfg.server_reset_query = string(&key, v)?,
            "server_check_query" => cfg.server_check_query = string(&key, v)?,
            "server_check_delay" => cfg.server_check_delay = duration(&key, v)?,
            "min_pool_size" => cfg.min_pool_size = count(&key, v)?,
            "server_connect_timeout" => {
                let limit = duration(&key, v)?;
                if limit.is_zero() {
                    return Err(invalid(
                        &key,
                        "must be more than 0 (leave it out to bound the connect by connect_timeout and the login by startup_timeout)",
                    ));
                }
                cfg.server_connect_timeout = Some(limit);
            }
            other if NOT_YET.contains(&other) => return Err(not_yet(&key)),
            _ => return Err(unknown(&key)),
        }
    }
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
            crate::auth::AuthType::Hba,
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
