//! Creating a replica's data directory with the configured methods, tried in order
//! (`postgresql.create_replica_methods`, Patroni's semantics): the built-in `basebackup`
//! (pg_basebackup from the leader) or a command such as `pgbackrest --stanza=main --delta
//! restore`, the next method when one fails.
//!
//! A command method gets `--scope=<scope> --datadir=<data_dir> --role=replica
//! --connstring=<leader's replication URI>` (unless `no_params`) and its section's other keys
//! as `--key=value`; it runs as the user PostgreSQL runs as, with `PGPASSFILE` holding the
//! replication password. Without `keep_data` a non-empty data directory is moved aside first
//! (never deleted); what a failed method wrote into a directory that was empty before it ran
//! is removed, so that the next method starts from an empty one.

use std::path::Path;

use crate::clone::{basebackup_with, password_file, remove_partial};
use crate::error::PgError;
use crate::passfile::PassFile;
use crate::run::{absolute, ensure_dir, run_as, run_async, user_command};
use crate::spec::{PgSpec, Upstream};

/// One way to create a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMethod {
    /// pg_basebackup from the upstream, with these extra arguments.
    Basebackup { extra_args: Vec<String> },
    /// A command (see the module's documentation).
    Command {
        name: String,
        command: String,
        keep_data: bool,
        no_params: bool,
        params: Vec<(String, String)>,
    },
}

impl ReplicaMethod {
    pub fn name(&self) -> &str {
        match self {
            ReplicaMethod::Basebackup { .. } => "basebackup",
            ReplicaMethod::Command { name, .. } => name,
        }
    }
}

/// What [`create_replica`] was asked for: the cluster's name (`--scope`) and the password
/// file to use (`postgresql.pgpass`).
pub struct ReplicaContext<'a> {
    pub scope: &'a str,
    pub passfile: Option<&'a PassFile>,
}

/// Tries `methods` in order (pg_basebackup alone when empty) until one leaves a data
/// directory; returns the name of the method that did. The error lists every failure.
pub async fn create_replica(
    spec: &PgSpec,
    from: &Upstream,
    methods: &[ReplicaMethod],
    ctx: &ReplicaContext<'_>,
) -> Result<String, PgError> {
    let default = [ReplicaMethod::Basebackup {
        extra_args: Vec::new(),
    }];
    let methods = if methods.is_empty() {
        &default[..]
    } else {
        methods
    };
    let mut failures = Vec::new();
    for method in methods {
        let result = match method {
            ReplicaMethod::Basebackup { extra_args } => {
                // A method tried before may have kept data (keep_data) that pg_basebackup
                // cannot write over; alone, pg_basebackup refuses a non-empty directory.
                if !failures.is_empty() {
                    clear_for(spec, method.name(), false)?;
                }
                basebackup_with(spec, from, extra_args, ctx.passfile).await
            }
            ReplicaMethod::Command {
                name,
                command,
                keep_data,
                no_params,
                params,
            } => {
                run_command_method(
                    spec,
                    from,
                    ctx,
                    CommandMethodRef {
                        name,
                        command,
                        keep_data: *keep_data,
                        no_params: *no_params,
                        params,
                    },
                )
                .await
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(method = method.name(), "replica created");
                return Ok(method.name().to_string());
            }
            Err(e) => {
                tracing::error!(method = method.name(), error = %e, "creating the replica with this method failed; trying the next one");
                failures.push(format!("{}: {e}", method.name()));
            }
        }
    }
    Err(PgError::UnexpectedResult {
        what: "creating the replica".into(),
        detail: format!(
            "every method of create_replica_methods failed:\n{}",
            failures.join("\n")
        ),
    })
}

struct CommandMethodRef<'a> {
    name: &'a str,
    command: &'a str,
    keep_data: bool,
    no_params: bool,
    params: &'a [(String, String)],
}

/// Without keep_data, a data directory holding anything is moved aside (never deleted).
fn clear_for(spec: &PgSpec, method: &str, keep_data: bool) -> Result<(), PgError> {
    let data_dir = absolute(&spec.data_dir)?;
    if keep_data || is_missing_or_empty(&data_dir)? {
        return Ok(());
    }
    let reason = format!(
        "before-{}",
        method
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            })
            .collect::<String>()
    );
    let moved = crate::clone::move_aside(spec, &reason)?;
    tracing::warn!(method, moved_to = %moved.display(), "data directory moved aside before creating the replica");
    Ok(())
}

fn is_missing_or_empty(dir: &Path) -> Result<bool, PgError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PgError::io(dir, e)),
    }
}

async fn run_command_method(
    spec: &PgSpec,
    from: &Upstream,
    ctx: &ReplicaContext<'_>,
    method: CommandMethodRef<'_>,
) -> Result<(), PgError> {
    clear_for(spec, method.name, method.keep_data)?;
    let user = run_as(spec)?;
    let data_dir = absolute(&spec.data_dir)?;
    let was_empty = is_missing_or_empty(&data_dir)?;
    let existed = data_dir.exists();
    ensure_dir(&data_dir, 0o700, user.as_ref())?;
    let argv = command_line(
        method.command,
        method.no_params,
        method.params,
        ctx.scope,
        &data_dir,
        &connstring(&spec.replication.username, from),
    )
    .ok_or_else(|| PgError::Invalid {
        what: "a replica method's command",
        value: method.command.to_string(),
        reason: "it cannot be split into words (an unclosed quote?)",
    })?;
    let passfile = password_file(spec, &spec.replication, user.as_ref(), ctx.passfile)?;
    let mut cmd = user_command(spec, &argv[0])?;
    cmd.args(&argv[1..]);
    if let Some(passfile) = &passfile {
        cmd.env("PGPASSFILE", passfile.path());
    }
    let what = format!("replica method {} ({})", method.name, argv[0]);
    tracing::info!(method = method.name, command = ?argv, "creating the replica with a command");
    let result = match run_async(cmd, &what).await {
        Ok(_) if data_dir.join("PG_VERSION").is_file() => Ok(()),
        Ok(_) => Err(PgError::UnexpectedResult {
            what,
            detail: format!(
                "it succeeded but {} holds no PostgreSQL data directory (no PG_VERSION); check that the command restores into postgresql.data_dir",
                data_dir.display()
            ),
        }),
        Err(e) => Err(e),
    };
    if result.is_err() && was_empty {
        remove_partial(&data_dir, existed);
    }
    result
}

/// A custom bootstrap method (`bootstrap.method`): a command that creates the new cluster's
/// data directory (e.g. `pgbackrest restore`) and the recovery settings to reach a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapCommand {
    pub name: String,
    pub command: String,
    pub keep_existing_recovery_conf: bool,
    pub no_params: bool,
    pub recovery_conf: std::collections::BTreeMap<String, String>,
    pub params: Vec<(String, String)>,
}

/// Runs a bootstrap method's command into the (missing or empty) data directory, with
/// `--scope=<scope> --datadir=<data_dir>` unless `no_params` and the section's keys as
/// `--key=value`, as Patroni does. Then, unless `keep_existing_recovery_conf`, removes the
/// signal files the command left; with `recovery_conf`, writes `recovery.signal` and returns
/// the recovery parameters to put into postgresql.conf (`recovery_target_action` defaults to
/// `promote`). A failed command's partial output is removed (the directory held nothing).
pub async fn bootstrap_by_command(
    spec: &PgSpec,
    method: &BootstrapCommand,
    scope: &str,
) -> Result<std::collections::BTreeMap<String, String>, PgError> {
    let user = run_as(spec)?;
    let data_dir = absolute(&spec.data_dir)?;
    crate::initdb::ensure_missing_or_empty(&data_dir)?;
    let existed = data_dir.exists();
    ensure_dir(&data_dir, 0o700, user.as_ref())?;
    let mut argv = shlex::split(&method.command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| PgError::Invalid {
            what: "bootstrap method's command",
            value: method.command.clone(),
            reason: "it cannot be split into words (an unclosed quote?)",
        })?;
    if !method.no_params {
        argv.push(format!("--scope={scope}"));
        argv.push(format!("--datadir={}", data_dir.display()));
    }
    argv.extend(method.params.iter().map(|(k, v)| format!("--{k}={v}")));
    let mut cmd = user_command(spec, &argv[0])?;
    cmd.args(&argv[1..]);
    let what = format!("bootstrap method {} ({})", method.name, argv[0]);
    tracing::info!(method = %method.name, command = ?argv, "creating the new cluster with a command");
    let result = match run_async(cmd, &what).await {
        Ok(_) if data_dir.join("PG_VERSION").is_file() => Ok(()),
        Ok(_) => Err(PgError::UnexpectedResult {
            what: what.clone(),
            detail: format!(
                "it succeeded but {} holds no PostgreSQL data directory (no PG_VERSION); check that the command restores into postgresql.data_dir",
                data_dir.display()
            ),
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        remove_partial(&data_dir, existed);
        return Err(e);
    }
    if !method.keep_existing_recovery_conf {
        // pgbackrest restore (and others) put restore_command into postgresql.auto.conf,
        // which would win over recovery_conf's settings in postgresql.conf.
        let auto_conf = data_dir.join("postgresql.auto.conf");
        if let Ok(text) = std::fs::read_to_string(&auto_conf) {
            let kept: Vec<&str> = text.lines().filter(|l| !sets_recovery(l)).collect();
            if kept.len() != text.lines().count() {
                tracing::info!(file = %auto_conf.display(), "recovery settings the command wrote removed (keep_existing_recovery_conf is off)");
                crate::run::write_owned(
                    &auto_conf,
                    &format!("{}\n", kept.join("\n")),
                    user.as_ref(),
                )?;
            }
        }
        for signal in ["recovery.signal", "standby.signal"] {
            match std::fs::remove_file(data_dir.join(signal)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PgError::io(data_dir.join(signal), e)),
            }
        }
    }
    let mut recovery = method.recovery_conf.clone();
    if !recovery.is_empty() {
        recovery
            .entry("recovery_target_action".to_string())
            .or_insert_with(|| "promote".to_string());
        crate::run::write_owned(&data_dir.join("recovery.signal"), "", user.as_ref())?;
    }
    Ok(recovery)
}

/// Whether a configuration line sets a recovery parameter (restore_command, recovery_target*,
/// archive_cleanup_command, recovery_end_command, primary_conninfo, primary_slot_name).
fn sets_recovery(line: &str) -> bool {
    let line = line.trim_start().to_ascii_lowercase();
    let name: String = line
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    name == "restore_command"
        || name.starts_with("recovery_target")
        || [
            "archive_cleanup_command",
            "recovery_end_command",
            "primary_conninfo",
            "primary_slot_name",
        ]
        .contains(&name.as_str())
}

/// Polls until the local server has left recovery (a bootstrap recovered to its target and
/// promoted); fails after `timeout` naming what PostgreSQL still does.
pub async fn wait_until_promoted(
    spec: &PgSpec,
    timeout: std::time::Duration,
) -> Result<(), PgError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match crate::status::query_status(spec, std::time::Duration::from_secs(2)).await {
            Ok(status) if !status.in_recovery => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                return Err(PgError::Timeout {
                    what: "recovery to the bootstrap method's target and promotion (check recovery_target_* and restore_command; a target action other than promote leaves the server in recovery)".into(),
                    after: timeout,
                })
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}

/// The command's words, then (unless `no_params`) Patroni's four parameters, then the
/// section's other keys as `--key=value`. None when the command cannot be split.
pub fn command_line(
    command: &str,
    no_params: bool,
    params: &[(String, String)],
    scope: &str,
    data_dir: &Path,
    connstring: &str,
) -> Option<Vec<String>> {
    let mut argv = shlex::split(command).filter(|w| !w.is_empty())?;
    if !no_params {
        argv.push(format!("--scope={scope}"));
        argv.push(format!("--datadir={}", data_dir.display()));
        argv.push("--role=replica".to_string());
        argv.push(format!("--connstring={connstring}"));
    }
    argv.extend(params.iter().map(|(k, v)| format!("--{k}={v}")));
    Some(argv)
}

/// The upstream's replication connection as Patroni passes it:
/// `postgres://<user>@<host>:<port>/postgres` (the password comes from PGPASSFILE).
pub fn connstring(user: &str, from: &Upstream) -> String {
    let host = if from.host.contains(':') && !from.host.starts_with('[') {
        format!("[{}]", from.host)
    } else {
        from.host.clone()
    };
    format!(
        "postgres://{}@{host}:{}/postgres",
        percent_encode(user),
        from.port
    )
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream {
            host: "10.0.0.1".into(),
            port: 5433,
        }
    }

    #[test]
    fn a_command_gets_patronis_parameters_then_its_own() {
        let argv = command_line(
            "/usr/bin/restore-it --from 'the archive'",
            false,
            &[("process-max".into(), "2".into())],
            "demo",
            Path::new("/var/lib/pg/data"),
            &connstring("replicator", &upstream()),
        )
        .expect("splits");
        assert_eq!(
            argv,
            vec![
                "/usr/bin/restore-it",
                "--from",
                "the archive",
                "--scope=demo",
                "--datadir=/var/lib/pg/data",
                "--role=replica",
                "--connstring=postgres://replicator@10.0.0.1:5433/postgres",
                "--process-max=2",
            ]
        );
    }

    #[test]
    fn no_params_leaves_only_the_sections_keys() {
        let argv = command_line(
            "pgbackrest --stanza=main --delta restore",
            true,
            &[("type".into(), "standby".into())],
            "demo",
            Path::new("/d"),
            "x",
        )
        .expect("splits");
        assert_eq!(
            argv,
            vec![
                "pgbackrest",
                "--stanza=main",
                "--delta",
                "restore",
                "--type=standby"
            ]
        );
        assert_eq!(
            command_line("a 'b", true, &[], "s", Path::new("/d"), "x"),
            None
        );
        assert_eq!(
            command_line("  ", true, &[], "s", Path::new("/d"), "x"),
            None
        );
    }

    #[test]
    fn recovery_lines_of_auto_conf_are_recognised() {
        assert!(sets_recovery(
            "restore_command = 'pgbackrest archive-get %f \"%p\"'"
        ));
        assert!(sets_recovery("recovery_target_time='x'"));
        assert!(!sets_recovery("# restore_command = 'x'"));
        assert!(!sets_recovery("shared_buffers = '32MB'"));
        assert!(!sets_recovery("restore_command_extra = 1"));
    }

    #[test]
    fn connstrings_bracket_ipv6_and_encode_the_user() {
        let v6 = Upstream {
            host: "::1".into(),
            port: 5432,
        };
        assert_eq!(
            connstring("rep user", &v6),
            "postgres://rep%20user@[::1]:5432/postgres"
        );
    }
}
