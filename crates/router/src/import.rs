//! `pgbaton router import-pgbouncer pgbouncer.ini [userlist.txt]`: a router.yml doing what a
//! PgBouncer configuration does, the way in for PgBouncer users. `[pgbouncer]` keys map to
//! `auth:` and `pool:` (same names), `listen_addr`/`listen_port` to the write listener (the
//! read listener goes on the next port), `client_tls_*` to `tls: terminate`, and each
//! `[databases]` entry to an alias of `databases:` (its `dbname`, `pool_size`,
//! `pool_mode`; `host`/`port` are dropped: the router follows the cluster in etcd, and a
//! name that says read or write sets the alias's target). Everything else is named in a
//! warning: kept out (no equivalent, or not implemented yet) or changed in meaning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::aliases::DatabaseAlias;
use crate::auth::{AuthConfig, AuthType, Method};
use crate::config::{RouterConfig, TlsMode};
use crate::pool_config::PoolMode;
use crate::protocol::Target;

/// The router.yml text and what did not carry over.
#[derive(Debug, Clone)]
pub struct Imported {
    pub config: RouterConfig,
    pub warnings: Vec<String>,
}

impl Imported {
    /// router.yml with the warnings as comments at its top.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from(
            "# router.yml imported from a PgBouncer configuration (pgbaton router import-pgbouncer).\n\
             # Check scope, namespace and etcd3.hosts: they name the cluster the router follows.\n",
        );
        for warning in &self.warnings {
            out.push_str(&format!("# warning: {warning}\n"));
        }
        out.push_str(&self.config.to_yaml());
        out
    }
}

/// Where the cluster is (PgBouncer's file does not say).
pub struct ClusterAt<'a> {
    pub scope: &'a str,
    pub namespace: &'a str,
    pub etcd_hosts: Vec<String>,
}

/// Keys with no router equivalent that change nothing a client sees.
const IGNORED: [&str; 33] = [
    "logfile",
    "pidfile",
    "syslog",
    "syslog_ident",
    "syslog_facility",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "log_stats",
    "stats_period",
    "verbose",
    "admin_users",
    "stats_users",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "user",
    "so_reuseport",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_user_timeout",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "pkt_buf",
    "sbuf_loopcnt",
    "max_packet_size",
    "listen_backlog",
    "suspend_timeout",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
];

fn seconds(key: &str, value: &str) -> Result<Duration, String> {
    let number: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("[pgbouncer] {key} = {value}: expected seconds (a number)"))?;
    if !(0.0..=1e9).contains(&number) {
        return Err(format!("[pgbouncer] {key} = {value}: out of range"));
    }
    Ok(Duration::from_secs_f64(number))
}

fn count(key: &str, value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{key} = {value}: expected a whole number"))
}

/// `key=value key='quoted value'` (libpq style, as PgBouncer's [databases] entries).
fn connstr(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{text}`: `{key}` has no value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("`{text}`: unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
}

/// The target a database name implies, if any.
fn target_of(name: &str) -> Option<Target> {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
    if has(&["read", "ro", "replica", "replicas", "standby", "readonly"]) {
        Some(Target::Read)
    } else if has(&["write", "rw", "primary", "master", "leader"]) {
        Some(Target::Write)
    } else {
        None
    }
}

fn mode(where_: &str, value: &str, warnings: &mut Vec<String>) -> Option<PoolMode> {
    match PoolMode::parse(value.trim()) {
        Some(mode) => Some(mode),
        None => {
            warnings.push(format!(
                "{where_} pool_mode = {value}: the router has session and transaction pooling only; left at the default (session)"
            ));
            None
        }
    }
}

/// Translate `ini` (pgbouncer.ini's text); `userlist` replaces its `auth_file` when given.
pub fn import_pgbouncer(
    ini: &str,
    userlist: Option<&Path>,
    cluster: ClusterAt<'_>,
) -> Result<Imported, String> {
    let mut cfg = RouterConfig::new(cluster.etcd_hosts, cluster.namespace, cluster.scope);
    let mut auth = AuthConfig::default();
    let mut warnings = Vec::new();
    let mut section = String::new();
    let mut listen_addr = "127.0.0.1".to_string();
    let mut listen_port: u16 = 6432;
    let mut tls_mode = None::<String>;
    let mut tls_cert = None::<PathBuf>;
    let mut tls_key = None::<PathBuf>;
    let mut tls_ca = None::<PathBuf>;
    for (number, raw) in ini.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if line.starts_with("%include") {
            warnings.push(format!(
                "line {}: `{line}` not followed: import the included file separately",
                number + 1
            ));
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            if !matches!(section.as_str(), "databases" | "pgbouncer") {
                warnings.push(format!(
                    "[{name}]: not supported by the router (per-user and peer settings); its entries are left out"
                ));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: `{line}` is not `key = value`",
                number + 1
            ));
        };
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        match section.as_str() {
            "databases" => import_database(&mut cfg, &key, &value, &mut warnings)?,
            "pgbouncer" => {
                let k = key.to_ascii_lowercase();
                let p = &mut cfg.pool;
                match k.as_str() {
                    "listen_addr" => {
                        let first = value.split(',').next().unwrap_or_default().trim();
                        if value.contains(',') {
                            warnings.push(format!(
                                "[pgbouncer] listen_addr = {value}: the router listens on one address; {first} kept"
                            ));
                        }
                        listen_addr = if first == "*" { "0.0.0.0".into() } else { first.into() };
                    }
                    "listen_port" => {
                        listen_port = value
                            .parse()
                            .map_err(|_| format!("[pgbouncer] listen_port = {value}: not a port"))?
                    }
                    "auth_type" => {
                        auth.auth_type = match value.as_str() {
                            "hba" => AuthType::Hba,
                            "plain" => AuthType::Method(Method::Password),
                            other => match Method::parse(other) {
                                Some(Method::Reject) | None => {
                                    warnings.push(format!(
                                        "[pgbouncer] auth_type = {value}: not supported by the router (trust, password, md5, scram-sha-256, cert, hba); md5 used"
                                    ));
                                    AuthType::Method(Method::Md5)
                                }
                                Some(m) => AuthType::Method(m),
                            },
                        }
                    }
                    "auth_file" => auth.auth_file = Some(value.into()),
                    "auth_hba_file" => auth.auth_hba_file = Some(value.into()),
                    "auth_user" => auth.auth_user = Some(value),
                    "auth_query" => auth.auth_query = value,
                    "auth_dbname" => auth.auth_dbname = Some(value),
                    "pool_mode" => {
                        if let Some(m) = mode("[pgbouncer]", &value, &mut warnings) {
                            p.pool_mode = m;
                        }
                    }
                    "default_pool_size" => p.default_pool_size = count(&k, &value)?.max(1),
                    "min_pool_size" => p.min_pool_size = count(&k, &value)?,
                    "reserve_pool_size" => p.reserve_pool_size = count(&k, &value)?,
                    "reserve_pool_timeout" => p.reserve_pool_timeout = seconds(&k, &value)?,
                    "max_client_conn" => p.max_client_conn = count(&k, &value)?,
                    "max_db_connections" => p.max_db_connections = count(&k, &value)?,
                    "max_user_connections" => p.max_user_connections = count(&k, &value)?,
                    "server_lifetime" => p.server_lifetime = seconds(&k, &value)?,
                    "server_idle_timeout" => p.server_idle_timeout = seconds(&k, &value)?,
                    "query_wait_timeout" => p.query_wait_timeout = seconds(&k, &value)?,
                    "client_idle_timeout" => p.client_idle_timeout = seconds(&k, &value)?,
                    "server_reset_query" => p.server_reset_query = value,
                    "server_check_query" => p.server_check_query = value,
                    "server_check_delay" => p.server_check_delay = seconds(&k, &value)?,
                    "server_connect_timeout" => {
                        let limit = seconds(&k, &value)?;
                        p.server_connect_timeout = (!limit.is_zero()).then_some(limit);
                    }
                    "client_tls_sslmode" => tls_mode = Some(value),
                    "client_tls_cert_file" => tls_cert = Some(value.into()),
                    "client_tls_key_file" => tls_key = Some(value.into()),
                    "client_tls_ca_file" => tls_ca = Some(value.into()),
                    "max_prepared_statements" => warnings.push(format!(
                        "[pgbouncer] max_prepared_statements = {value}: the router always keeps named prepared statements across server connections in transaction mode (no limit); left out"
                    )),
                    "ignore_startup_parameters" => warnings.push(format!(
                        "[pgbouncer] ignore_startup_parameters = {value}: not supported; the router keeps extra_float_digits and search_path per client and refuses other unknown startup parameters"
                    )),
                    other if IGNORED.contains(&other) => warnings.push(format!(
                        "[pgbouncer] {key}: no router equivalent (logging, admin console, sockets and buffers are the router's own); left out"
                    )),
                    other if other.starts_with("server_tls_") => warnings.push(format!(
                        "[pgbouncer] {key}: the router connects to PostgreSQL in plain TCP; left out"
                    )),
                    other if other.starts_with("client_tls_") => warnings.push(format!(
                        "[pgbouncer] {key}: not supported (the router's TLS takes a certificate, a key and a client CA: tls_certfile, tls_keyfile, tls_cafile); left out"
                    )),
                    _ => warnings.push(format!(
                        "[pgbouncer] {key}: unknown or unsupported by the router; left out"
                    )),
                }
            }
            _ => {}
        }
    }
    cfg.write_listen = format!("{listen_addr}:{listen_port}");
    cfg.read_listen = format!("{listen_addr}:{}", listen_port.saturating_add(1));
    cfg.api_listen = Some(format!("127.0.0.1:{}", listen_port.saturating_add(2)));
    warnings.push(format!(
        "the router has a write listener ({}, PgBouncer's address) and a read listener ({}): replicas within read.max_lag; PgBouncer's admin console (SHOW POOLS/CLIENTS/SERVERS/STATS, PAUSE, RESUME) is HTTP on api.listen ({})",
        cfg.write_listen,
        cfg.read_listen,
        cfg.api_listen.as_deref().unwrap_or_default()
    ));
    if let Some(mode) = tls_mode.filter(|m| m != "disable") {
        match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                cfg.tls = TlsMode::Terminate;
                cfg.tls_certfile = Some(cert);
                cfg.tls_keyfile = Some(key);
                cfg.tls_required = matches!(mode.as_str(), "require" | "verify-ca" | "verify-full");
                cfg.tls_cafile = tls_ca.clone();
                if mode.starts_with("verify") {
                    require_client_certificates(&mut auth, &mode, tls_ca.is_some(), &mut warnings);
                }
            }
            _ => warnings.push(format!(
                "[pgbouncer] client_tls_sslmode = {mode} without client_tls_cert_file and client_tls_key_file: TLS left off"
            )),
        }
    }
    if let Some(path) = userlist {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let users = crate::credentials::userlist::parse(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(old) = &auth.auth_file {
            if old != path {
                warnings.push(format!(
                    "auth_file {} replaced by the userlist given, {} ({} users)",
                    old.display(),
                    path.display(),
                    users.len()
                ));
            }
        }
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        auth.auth_file = Some(absolute);
    }
    cfg.auth = Some(auth);
    Ok(Imported {
        config: cfg,
        warnings,
    })
}

/// `client_tls_sslmode = verify-ca|verify-full`: every client presents a certificate the CA
/// signed. One method becomes one hba line with `clientcert=verify-ca`; hba rules are the
/// user's to extend.
fn require_client_certificates(
    auth: &mut AuthConfig,
    mode: &str,
    have_ca: bool,
    warnings: &mut Vec<String>,
) {
    if !have_ca {
        warnings.push(format!(
            "[pgbouncer] client_tls_sslmode = {mode} without client_tls_ca_file: TLS is required, client certificates are not verified"
        ));
        return;
    }
    match auth.auth_type {
        AuthType::Method(Method::Cert) => {}
        AuthType::Method(method) => {
            auth.auth_type = AuthType::Hba;
            auth.hba = vec![format!(
                "hostssl all all all {} clientcert=verify-ca",
                method.label()
            )];
            warnings.push(format!(
                "[pgbouncer] client_tls_sslmode = {mode}: auth.hba `{}` (every client presents a certificate signed by tls_cafile, then its password)",
                auth.hba[0]
            ));
        }
        AuthType::Hba => warnings.push(format!(
            "[pgbouncer] client_tls_sslmode = {mode} with auth_type = hba: add clientcert=verify-ca to the hostssl lines of the hba file for the router to require certificates"
        )),
    }
}

fn import_database(
    cfg: &mut RouterConfig,
    name: &str,
    value: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if name == "*" {
        warnings.push(
            "[databases] * (the fallback database): the router accepts every database name as it is; left out".into(),
        );
        return Ok(());
    }
    let fields = connstr(value).map_err(|e| format!("[databases] {name}: {e}"))?;
    let mut alias = DatabaseAlias {
        dbname: fields
            .get("dbname")
            .cloned()
            .unwrap_or_else(|| name.to_string()),
        target: target_of(name),
        pool_mode: None,
        pool_size: None,
    };
    let mut dropped = Vec::new();
    for (key, v) in &fields {
        match key.as_str() {
            "dbname" => {}
            "host" | "port" => dropped.push(format!("{key}={v}")),
            "pool_size" => alias.pool_size = Some(count(&format!("[databases] {name} pool_size"), v)?),
            "pool_mode" => alias.pool_mode = mode(&format!("[databases] {name}"), v, warnings),
            _ => warnings.push(format!(
                "[databases] {name}: {key}={v} is not supported per database by the router; left out"
            )),
        }
    }
    if !dropped.is_empty() {
        let routed = match alias.target {
            Some(t) => format!(
                "its name routes it to target {} (the {})",
                t.label(),
                match t {
                    Target::Write => "leader",
                    _ => "replicas within read.max_lag",
                }
            ),
            None => "it follows the listener it arrives on (write: the leader, read: replicas)"
                .to_string(),
        };
        warnings.push(format!(
            "[databases] {name}: {} dropped: the router follows the cluster in etcd; {routed}",
            dropped.join(" ")
        ));
    }
    cfg.databases.insert(name.to_string(), alias);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chapter 8.2 of the guide users follow (PgBouncer in front of the cluster).
    const SEED_8_2: &str = include_str!("../tests/fixtures/pgbouncer-8.2.ini");

    fn at() -> ClusterAt<'static> {
        ClusterAt {
            scope: "pg-cluster",
            namespace: "/service/",
            etcd_hosts: vec!["192.168.1.21:2379".into()],
        }
    }

    #[test]
    fn the_guides_pgbouncer_ini_becomes_a_router_yml_that_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(&userlist, "\"app\" \"app pw\"\n").expect("userlist");
        let imported = import_pgbouncer(SEED_8_2, Some(&userlist), at()).expect("import");
        let cfg = &imported.config;
        assert_eq!(cfg.write_listen, "0.0.0.0:6432");
        assert_eq!(cfg.read_listen, "0.0.0.0:6433");
        assert_eq!(cfg.api_listen.as_deref(), Some("127.0.0.1:6434"));
        assert_eq!(cfg.pool.pool_mode, PoolMode::Transaction);
        assert_eq!(cfg.pool.max_client_conn, 1000);
        assert_eq!(cfg.pool.default_pool_size, 20);
        let auth = cfg.auth.as_ref().expect("auth");
        assert_eq!(auth.auth_type, AuthType::Method(Method::ScramSha256));
        assert_eq!(
            auth.auth_file.as_deref(),
            Some(std::fs::canonicalize(&userlist).expect("path").as_path())
        );
        assert_eq!(cfg.databases["mydb_write"].dbname, "mydb");
        assert_eq!(cfg.databases["mydb_write"].target, Some(Target::Write));
        assert_eq!(cfg.databases["mydb_read"].target, Some(Target::Read));
        let text = imported.to_yaml();
        assert!(
            text.contains(
                "# warning: [databases] mydb_read: host=replica1,replica2 port=5432 dropped"
            ),
            "{text}"
        );
        assert!(
            text.contains("auth_file /etc/pgbouncer/userlist.txt replaced"),
            "{text}"
        );
        // What it prints is a router.yml the router accepts, with the same meaning.
        let again = RouterConfig::from_yaml_str(&text).expect("the output reads back");
        assert_eq!(&again, cfg);
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        let ini = "[databases]\n\
                   app = host=db1 dbname=app pool_size=5 pool_mode=session user=forced\n\
                   * = host=db1\n\
                   [pgbouncer]\n\
                   listen_addr = *\n\
                   auth_type = cert\n\
                   pool_mode = statement\n\
                   logfile = /var/log/pgbouncer.log\n\
                   max_prepared_statements = 100\n\
                   server_tls_sslmode = require\n\
                   frobnicate = yes\n\
                   query_wait_timeout = 2.5\n\
                   [users]\n\
                   app = pool_mode=transaction\n";
        let imported = import_pgbouncer(ini, None, at()).expect("import");
        let all = imported.warnings.join("\n");
        for needle in [
            "pool_mode = statement",
            "logfile",
            "max_prepared_statements",
            "server_tls_sslmode",
            "frobnicate: unknown",
            "[users]",
            "user=forced",
            "[databases] *",
        ] {
            assert!(all.contains(needle), "{needle} in\n{all}");
        }
        let cfg = &imported.config;
        assert_eq!(cfg.databases["app"].pool_size, Some(5));
        assert_eq!(cfg.databases["app"].pool_mode, Some(PoolMode::Session));
        assert_eq!(cfg.databases["app"].target, None);
        assert_eq!(cfg.pool.query_wait_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.write_listen, "0.0.0.0:6432");
        assert!(import_pgbouncer("[pgbouncer]\nnot a pair\n", None, at()).is_err());
        assert!(import_pgbouncer("[pgbouncer]\nmax_client_conn = lots\n", None, at()).is_err());
    }

    #[test]
    fn client_certificates_are_required_as_pgbouncer_verify_ca_does() {
        let ini = "[databases]\napp = host=db1\n[pgbouncer]\nauth_type = scram-sha-256\nauth_file = /etc/u.txt\nclient_tls_sslmode = verify-ca\nclient_tls_cert_file = /etc/r.crt\nclient_tls_key_file = /etc/r.key\nclient_tls_ca_file = /etc/ca.crt\n";
        let imported = import_pgbouncer(ini, None, at()).expect("import");
        let cfg = &imported.config;
        assert_eq!(cfg.tls, TlsMode::Terminate);
        assert_eq!(cfg.tls_cafile, Some(PathBuf::from("/etc/ca.crt")));
        let auth = cfg.auth.as_ref().expect("auth");
        assert_eq!(auth.auth_type, AuthType::Hba);
        assert_eq!(
            auth.hba,
            ["hostssl all all all scram-sha-256 clientcert=verify-ca"]
        );
        // Without the CA: TLS required, certificates not verified, said so.
        let ini = ini.replace("client_tls_ca_file = /etc/ca.crt\n", "");
        let imported = import_pgbouncer(&ini, None, at()).expect("import");
        assert!(imported.config.tls_cafile.is_none());
        assert!(
            imported
                .warnings
                .iter()
                .any(|w| w.contains("without client_tls_ca_file")),
            "{:?}",
            imported.warnings
        );
    }
}
