//! The configuration files pgbaton owns in the data directory: `postgresql.conf` (initdb's
//! original kept as `postgresql.base.conf` and included), `pg_hba.conf`, `standby.signal`,
//! and the replication settings that `pg_basebackup -R` leaves in `postgresql.auto.conf`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::error::PgError;
use crate::passfile::PassFile;
use crate::run::{absolute, ensure_dir, run_as, write_owned, RunAs};
use crate::spec::{quote_conninfo, PgSpec, StandbyConfig, Upstream};

const HEADER: &str = "# Managed by pgbaton: this file is rewritten on every change; edit the pgbaton configuration instead.\n";
const BASE_CONF: &str = "postgresql.base.conf";

/// Parameters pgbaton sets itself; values given for them in `parameters` are ignored.
const MANAGED: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
];

/// Settings `pg_basebackup -R` writes into postgresql.auto.conf, which would override ours.
const AUTO_CONF_CLEARED: &[&str] = &["primary_conninfo", "primary_slot_name"];

/// Writes postgresql.conf (+ base), pg_hba.conf and standby.signal (present iff `standby`),
/// and clears replication settings from postgresql.auto.conf. All files owned by run_as, 0600.
/// The replication password, if any, is written into `primary_conninfo`: see
/// [`write_config_with`] for a password file instead.
pub fn write_config(
    spec: &PgSpec,
    parameters: &BTreeMap<String, String>,
    hba: &[String],
    standby: Option<&StandbyConfig>,
) -> Result<(), PgError> {
    write_config_with(spec, parameters, hba, standby, None)
}

/// [`write_config`], with `passfile`: the password file is written and `primary_conninfo`
/// names it (`passfile=...`) instead of carrying the password.
pub fn write_config_with(
    spec: &PgSpec,
    parameters: &BTreeMap<String, String>,
    hba: &[String],
    standby: Option<&StandbyConfig>,
    passfile: Option<&PassFile>,
) -> Result<(), PgError> {
    let user = run_as(spec)?;
    let user = user.as_ref();
    let data_dir = absolute(&spec.data_dir)?;
    let socket_dir = absolute(&spec.socket_dir)?;
    if !socket_dir.exists() {
        ensure_dir(&socket_dir, 0o755, user)?;
    }
    keep_base_conf(&data_dir, user)?;
    // The WAL receiver reads the password file when it connects: write it first.
    let passfile = match passfile {
        Some(file) if standby.is_some_and(|s| s.upstream.is_some()) => {
            file.write(spec)?.then_some(file)
        }
        _ => None,
    };
    let conf = render_postgresql_conf(spec, &socket_dir, parameters, standby, passfile)?;
    write_owned(&data_dir.join("postgresql.conf"), &conf, user)?;
    write_owned(&data_dir.join("pg_hba.conf"), &render_hba(spec, hba)?, user)?;

    let signal = data_dir.join("standby.signal");
    match standby {
        Some(_) => write_owned(&signal, "", user)?,
        None => match fs::remove_file(&signal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io(&signal, e)),
        },
    }
    clear_auto_conf(&data_dir, user)?;
    tracing::debug!(data_dir = %data_dir.display(), standby = standby.is_some(), "configuration written");
    Ok(())
}

/// On first call, initdb's postgresql.conf becomes postgresql.base.conf.
fn keep_base_conf(data_dir: &Path, user: Option<&RunAs>) -> Result<(), PgError> {
    let base = data_dir.join(BASE_CONF);
    if base.exists() {
        return Ok(());
    }
    let conf = data_dir.join("postgresql.conf");
    if conf.exists() {
        fs::rename(&conf, &base).map_err(|e| PgError::io(&conf, e))
    } else {
        write_owned(&base, "", user)
    }
}

fn render_postgresql_conf(
    spec: &PgSpec,
    socket_dir: &Path,
    parameters: &BTreeMap<String, String>,
    standby: Option<&StandbyConfig>,
    passfile: Option<&PassFile>,
) -> Result<String, PgError> {
    let mut out = String::from(HEADER);
    out.push_str(&format!("include '{BASE_CONF}'\n\n"));
    for (name, value) in parameters {
        if MANAGED.contains(&name.as_str()) {
            tracing::debug!(parameter = %name, "ignoring a parameter pgbaton manages itself");
            continue;
        }
        check_parameter_name(name)?;
        push_setting(&mut out, name, value);
    }
    push_setting(&mut out, "listen_addresses", &spec.listen_host);
    push_setting(&mut out, "port", &spec.port.to_string());
    push_setting(
        &mut out,
        "unix_socket_directories",
        &socket_dir.to_string_lossy(),
    );
    if let Some(standby) = standby {
        // Without an upstream (no leader yet) the standby replays what it has and waits.
        if let Some(upstream) = &standby.upstream {
            push_setting(
                &mut out,
                "primary_conninfo",
                &primary_conninfo(spec, upstream, passfile),
            );
        }
        if let (Some(slot), Some(_)) = (&standby.slot_name, &standby.upstream) {
            push_setting(&mut out, "primary_slot_name", slot);
        }
        if let Some(delay) = &standby.apply_delay {
            push_setting(&mut out, "recovery_min_apply_delay", delay);
        }
    }
    // Written for primaries too: removing it at promotion would flag a pending restart.
    push_setting(&mut out, "recovery_target_timeline", "latest");
    Ok(out)
}

fn check_parameter_name(name: &str) -> Result<(), PgError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(PgError::Invalid {
            what: "PostgreSQL parameter name",
            value: name.to_string(),
            reason: "only letters, digits, '_' and '.' are allowed",
        })
    }
}

fn push_setting(out: &mut String, name: &str, value: &str) {
    out.push_str(&format!("{name} = {}\n", quote_conf(value)));
}

/// A postgresql.conf string literal: backslashes doubled, single quotes doubled.
pub(crate) fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// How long a walreceiver's connection to its upstream may take before it gives up and
/// PostgreSQL tries again (after `wal_retrieve_retry_interval`).
const WALRECEIVER_CONNECT_TIMEOUT_S: u32 = 5;

fn primary_conninfo(spec: &PgSpec, upstream: &Upstream, passfile: Option<&PassFile>) -> String {
    let mut parts = vec![
        format!("host={}", quote_conninfo(&upstream.host)),
        format!("port={}", upstream.port),
        format!("user={}", quote_conninfo(&spec.replication.username)),
    ];
    match (passfile, &spec.replication.password) {
        (Some(file), Some(_)) => parts.push(format!(
            "passfile={}",
            quote_conninfo(&file.path().to_string_lossy())
        )),
        (None, Some(password)) => parts.push(format!("password={}", quote_conninfo(password))),
        (_, None) => {}
    }
    parts.push(format!(
        "application_name={}",
        quote_conninfo(&spec.application_name)
    ));
    // Without a timeout libpq waits for ever on a connection whose peer vanished during the
    // handshake (a partition, a lost host): the walreceiver then never tries again, and
    // PostgreSQL shows it as streaming all along (found by the chaos suite).
    parts.push(format!("connect_timeout={WALRECEIVER_CONNECT_TIMEOUT_S}"));
    parts.join(" ") + &PgSpec::conninfo_tls(&spec.replication_tls)
}

/// A role name in pg_hba.conf, double-quoted so it never reads as a keyword.
fn hba_role(name: &str) -> Result<String, PgError> {
    if name.is_empty() || name.contains('"') || name.contains(char::is_whitespace) {
        return Err(PgError::Invalid {
            what: "role name for pg_hba.conf",
            value: name.to_string(),
            reason: "must be non-empty without quotes or whitespace",
        });
    }
    Ok(format!("\"{name}\""))
}

fn render_hba(spec: &PgSpec, lines: &[String]) -> Result<String, PgError> {
    let mut out = String::from(HEADER);
    let mut grant = |database: &str, role: &str| -> Result<(), PgError> {
        let role = hba_role(role)?;
        out.push_str(&format!("local {database} {role} scram-sha-256\n"));
        for network in ["127.0.0.1/32", "::1/128"] {
            out.push_str(&format!("host {database} {role} {network} scram-sha-256\n"));
        }
        Ok(())
    };
    grant("all", &spec.superuser.username)?;
    grant("replication", &spec.replication.username)?;
    if let Some(rewind) = &spec.rewind {
        if rewind.username != spec.superuser.username {
            grant("all", &rewind.username)?;
        }
    }
    out.push_str("# from the pgbaton configuration\n");
    for line in lines {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// Drops primary_conninfo / primary_slot_name lines from postgresql.auto.conf.
fn clear_auto_conf(data_dir: &Path, user: Option<&RunAs>) -> Result<(), PgError> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PgError::io(&path, e)),
    };
    let kept: Vec<&str> = text.lines().filter(|line| !sets_cleared(line)).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let mut new_text = kept.join("\n");
    new_text.push('\n');
    write_owned(&path, &new_text, user)
}

fn sets_cleared(line: &str) -> bool {
    let line = line.trim_start().to_ascii_lowercase();
    AUTO_CONF_CLEARED.iter().any(|name| {
        line.strip_prefix(name).is_some_and(|rest| {
            rest.trim_start().starts_with('=') || rest.starts_with(char::is_whitespace)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Credentials;

    fn spec() -> PgSpec {
        PgSpec {
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            data_dir: "/tmp/x/data".into(),
            listen_host: "127.0.0.1".into(),
            port: 5433,
            socket_dir: "/tmp/x/sock".into(),
            run_as: None,
            superuser: Credentials {
                username: "postgres".into(),
                password: Some("su".into()),
            },
            replication: Credentials {
                username: "repl".into(),
                password: Some("it's a \\ secret".into()),
            },
            rewind: Some(Credentials {
                username: "rewinder".into(),
                password: None,
            }),
            log_file: "/tmp/x/log".into(),
            application_name: "node-1".into(),
            replication_tls: Vec::new(),
            rewind_tls: Vec::new(),
        }
    }

    #[test]
    fn conf_quotes_values_and_sets_standby_settings() {
        let params = BTreeMap::from([
            ("shared_buffers".to_string(), "16MB".to_string()),
            ("port".to_string(), "1".to_string()),
            ("search_path".to_string(), "'$user', public".to_string()),
        ]);
        let standby = StandbyConfig {
            upstream: Some(Upstream {
                host: "127.0.0.1".into(),
                port: 5432,
            }),
            slot_name: Some("node_1".into()),
            apply_delay: None,
        };
        let conf = render_postgresql_conf(&spec(), Path::new("/s"), &params, Some(&standby), None)
            .expect("render");
        assert!(conf.contains("include 'postgresql.base.conf'\n"));
        assert!(conf.contains("shared_buffers = '16MB'\n"));
        assert!(conf.contains("search_path = '''$user'', public'\n"));
        assert!(conf.contains("port = '5433'\n"));
        assert!(!conf.contains("port = '1'"));
        assert!(conf.contains("primary_slot_name = 'node_1'\n"));
        assert!(conf.contains("recovery_target_timeline = 'latest'\n"));
        // conninfo escaping ('\'' and '\\'), then conf escaping (quotes and backslashes doubled).
        assert!(
            conf.contains(r"primary_conninfo = 'host=''127.0.0.1'' port=5432 user=''repl'' password=''it\\''s a \\\\ secret'' application_name=''node-1'' connect_timeout=5'"),
            "{conf}"
        );
        // With a password file (postgresql.pgpass): named, and no password anywhere.
        let file = PassFile::new("/var/lib/postgresql/pg pass");
        let conf = render_postgresql_conf(
            &spec(),
            Path::new("/s"),
            &params,
            Some(&standby),
            Some(&file),
        )
        .expect("render");
        assert!(
            conf.contains(r"primary_conninfo = 'host=''127.0.0.1'' port=5432 user=''repl'' passfile=''/var/lib/postgresql/pg pass'' application_name=''node-1'' connect_timeout=5'"),
            "{conf}"
        );
        assert!(!conf.contains("secret"), "{conf}");
    }

    #[test]
    fn conf_rejects_bad_parameter_names() {
        let params = BTreeMap::from([("a = 1\nb".to_string(), "x".to_string())]);
        assert!(render_postgresql_conf(&spec(), Path::new("/s"), &params, None, None).is_err());
    }

    #[test]
    fn hba_has_managed_header_then_user_lines() {
        let hba =
            render_hba(&spec(), &["host all all 10.0.0.0/8 scram-sha-256".into()]).expect("render");
        assert!(hba.contains("local all \"postgres\" scram-sha-256\n"));
        assert!(hba.contains("host replication \"repl\" 127.0.0.1/32 scram-sha-256\n"));
        assert!(hba.contains("host replication \"repl\" ::1/128 scram-sha-256\n"));
        assert!(hba.contains("host all \"rewinder\" 127.0.0.1/32 scram-sha-256\n"));
        assert!(hba.ends_with("host all all 10.0.0.0/8 scram-sha-256\n"));
    }

    #[test]
    fn auto_conf_replication_lines_are_recognised() {
        assert!(sets_cleared("primary_conninfo = 'host=x'"));
        assert!(sets_cleared("  PRIMARY_SLOT_NAME='a'"));
        assert!(!sets_cleared("primary_conninfo_extra = 1"));
        assert!(!sets_cleared("# primary_conninfo = ''"));
    }
}
