//! Getting a data directory from elsewhere or repairing it: `pg_basebackup` (clone a replica),
//! `pg_rewind` (bring a diverged former primary back onto the leader's timeline), and moving a
//! data directory aside (never deleting it).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::bounded;
use crate::error::PgError;
use crate::initdb::ensure_missing_or_empty;
use crate::passfile::PassFile;
use crate::postmaster::running_pid;
use crate::run::{absolute, ensure_dir, pg_command, run_as, run_async, SecretFile};
use crate::spec::quote_conninfo;
use crate::spec::{Credentials, PgSpec, Upstream};

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The target had not diverged.
    NotNeeded,
    Rewound,
}

/// `pg_basebackup -D <data_dir> -X stream -c fast -h -p -U <replication> --no-password`
/// (password via a 0600 PGPASSFILE owned by run_as) + `extra_args`. The data dir must be
/// missing or empty (created 0700 owned by run_as). On failure the partial copy is removed
/// (the directory held nothing before) and the error carries the output's tail.
pub async fn basebackup(
    spec: &PgSpec,
    from: &Upstream,
    extra_args: &[String],
) -> Result<(), PgError> {
    basebackup_with(spec, from, extra_args, None).await
}

/// [`basebackup`], the password read from `passfile` (`postgresql.pgpass`, written first)
/// instead of a temporary file.
pub async fn basebackup_with(
    spec: &PgSpec,
    from: &Upstream,
    extra_args: &[String],
    passfile: Option<&PassFile>,
) -> Result<(), PgError> {
    let user = run_as(spec)?;
    let data_dir = absolute(&spec.data_dir)?;
    ensure_missing_or_empty(&data_dir)?;
    let existed = data_dir.exists();
    ensure_dir(&data_dir, 0o700, user.as_ref())?;

    let passfile = password_file(spec, &spec.replication, user.as_ref(), passfile)?;
    let mut cmd = pg_command(spec, "pg_basebackup")?;
    cmd.arg("-D")
        .arg(&data_dir)
        .args([
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            &from.host,
            "-p",
            &from.port.to_string(),
        ])
        .args(["-U", &spec.replication.username, "--no-password"])
        .args(extra_args);
    if !spec.replication_tls.is_empty() {
        // A connection string's settings add to -h/-p/-U (and win over conflicting ones).
        cmd.arg("-d")
            .arg(PgSpec::conninfo_tls(&spec.replication_tls).trim_start());
    }
    if let Some(passfile) = &passfile {
        cmd.env("PGPASSFILE", passfile.path());
    }
    tracing::info!(host = %from.host, port = from.port, data_dir = %data_dir.display(), "cloning with pg_basebackup");
    match run_async(cmd, "pg_basebackup").await {
        Ok(_) => Ok(()),
        Err(e) => {
            remove_partial(&data_dir, existed);
            Err(e)
        }
    }
}

/// The password file libpq reads (`PGPASSFILE`): the configured one, written now, or a
/// temporary one with `credentials` alone (deleted on drop). `None`: no password.
pub(crate) enum PasswordFile<'a> {
    Configured(&'a PassFile),
    Temporary(SecretFile),
}

impl PasswordFile<'_> {
    pub(crate) fn path(&self) -> &Path {
        match self {
            PasswordFile::Configured(file) => file.path(),
            PasswordFile::Temporary(file) => file.path(),
        }
    }
}

pub(crate) fn password_file<'a>(
    spec: &PgSpec,
    credentials: &Credentials,
    user: Option<&crate::run::RunAs>,
    configured: Option<&'a PassFile>,
) -> Result<Option<PasswordFile<'a>>, PgError> {
    let Some(password) = &credentials.password else {
        return Ok(None);
    };
    if let Some(file) = configured {
        if file.write(spec)? {
            return Ok(Some(PasswordFile::Configured(file)));
        }
    }
    Ok(Some(PasswordFile::Temporary(SecretFile::pgpass(
        &credentials.username,
        password,
        user,
    )?)))
}

/// Removes what a failed clone left: the directory itself when we created it, else its content.
pub(crate) fn remove_partial(data_dir: &Path, existed: bool) {
    let result = if existed {
        fs::read_dir(data_dir).and_then(|entries| {
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    } else {
        fs::remove_dir_all(data_dir)
    };
    if let Err(e) = result {
        tracing::warn!(data_dir = %data_dir.display(), error = %e, "could not remove a partial clone");
    }
}

/// `pg_rewind --target-pgdata=<data_dir> --source-server='host= port= user=<rewind or
/// superuser> dbname=postgres'` (password via PGPASSFILE). The local server must be stopped;
/// PostgreSQL 15's pg_rewind runs crash recovery itself when it was not shut down cleanly.
/// A source promoted moments ago may still show its old timeline in pg_control (which would
/// make pg_rewind wrongly answer "no rewind required"), so the source is checkpointed first
/// when that is the case. pg_rewind copies the source's configuration files: call
/// `write_config` afterwards.
pub async fn rewind(spec: &PgSpec, from: &Upstream) -> Result<RewindOutcome, PgError> {
    rewind_with(spec, from, None).await
}

/// How long pg_rewind may take to connect to its source.
const REWIND_CONNECT_TIMEOUT_S: u32 = 5;

/// pg_rewind failed connecting to its source, before it looked at (let alone changed) the
/// target: it says so and never got as far as comparing the servers' histories.
fn source_unreachable(output: &str) -> bool {
    let connecting = output.contains("connection to server") && output.contains("failed");
    let compared = output.contains("servers diverged")
        || output.contains("rewinding from last common checkpoint")
        || output.contains("source and target cluster");
    connecting && !compared
}

/// [`rewind`], the password read from `passfile` (`postgresql.pgpass`, written first).
pub async fn rewind_with(
    spec: &PgSpec,
    from: &Upstream,
    passfile: Option<&PassFile>,
) -> Result<RewindOutcome, PgError> {
    let user = run_as(spec)?;
    let data_dir = absolute(&spec.data_dir)?;
    if let Some(pid) = running_pid(&data_dir)? {
        return Err(PgError::AlreadyRunning { pid, data_dir });
    }
    let credentials = spec.rewind_credentials();
    let passfile = password_file(spec, credentials, user.as_ref(), passfile)?;
    let source = format!(
        "host={} port={} user={} dbname=postgres connect_timeout={REWIND_CONNECT_TIMEOUT_S}{}",
        quote_conninfo(&from.host),
        from.port,
        quote_conninfo(&credentials.username),
        PgSpec::conninfo_tls(&spec.rewind_tls)
    );
    let pgpass = passfile.as_ref().map(|p| p.path());
    if let Err(e) = checkpoint_source_if_needed(spec, &source, pgpass).await {
        tracing::warn!(error = %e, "could not check the rewind source's checkpoint timeline; rewinding anyway");
    }
    let mut cmd = pg_command(spec, "pg_rewind")?;
    cmd.arg(format!("--target-pgdata={}", data_dir.display()))
        .arg(format!("--source-server={source}"));
    if let Some(passfile) = &passfile {
        cmd.env("PGPASSFILE", passfile.path());
    }
    tracing::info!(host = %from.host, port = from.port, data_dir = %data_dir.display(), "running pg_rewind");
    let output = match run_async(cmd, "pg_rewind").await {
        Err(PgError::CommandFailed { stderr_tail, .. }) if source_unreachable(&stderr_tail) => {
            return Err(PgError::RewindSourceUnreachable {
                source_server: format!("{}:{}", from.host, from.port),
                output_tail: stderr_tail,
            });
        }
        other => other?,
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if text.contains("no rewind required") {
        tracing::info!("pg_rewind: no rewind required");
        Ok(RewindOutcome::NotNeeded)
    } else {
        tracing::info!("pg_rewind done");
        Ok(RewindOutcome::Rewound)
    }
}

/// CHECKPOINT on the source when its latest checkpoint is on an older timeline than its WAL.
/// Asked with psql (libpq, as pg_rewind connects: TLS when the server offers it), so that a
/// source whose pg_hba.conf accepts only `hostssl` connections is checked too.
async fn checkpoint_source_if_needed(
    spec: &PgSpec,
    source: &str,
    pgpass: Option<&Path>,
) -> Result<(), PgError> {
    let psql = |sql: &str| -> Result<std::process::Command, PgError> {
        let mut cmd = pg_command(spec, "psql")?;
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "{source} connect_timeout=5 application_name=pgbaton"
            ))
            .args(["-c", sql]);
        if let Some(path) = pgpass {
            cmd.env("PGPASSFILE", path);
        }
        Ok(cmd)
    };
    let timeout = Duration::from_secs(30);
    bounded("checking the rewind source", timeout, async {
        let output = run_async(
            psql(
                "SELECT (SELECT timeline_id FROM pg_control_checkpoint())::int8,
                     CASE WHEN pg_is_in_recovery() THEN NULL
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END",
            )?,
            "psql (the rewind source's timelines)",
        )
        .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (checkpoint_tli, current_tli) = parse_timelines(&text).ok_or_else(|| PgError::Invalid {
            what: "the rewind source's timelines",
            value: text.trim().to_string(),
            reason: "expected <checkpoint timeline>|<current timeline>",
        })?;
        if current_tli.is_some_and(|current| current > checkpoint_tli) {
            tracing::info!(checkpoint_tli, ?current_tli, "checkpointing the freshly promoted rewind source");
            run_async(psql("CHECKPOINT")?, "psql (CHECKPOINT on the rewind source)").await?;
        }
        Ok(())
    })
    .await
}

/// psql's unaligned `checkpoint_tli|current_tli` (the second empty on a server in recovery).
fn parse_timelines(text: &str) -> Option<(i64, Option<i64>)> {
    let (checkpoint, current) = text.trim().split_once('|')?;
    let checkpoint = checkpoint.trim().parse().ok()?;
    let current = match current.trim() {
        "" => None,
        value => Some(value.parse().ok()?),
    };
    Some((checkpoint, current))
}

/// Renames the data dir to `<data_dir>.<reason>.<YYYYmmddTHHMMSS>` (with `-N` appended if that
/// exists already); never deletes. Refuses while a postmaster runs on it.
pub fn move_aside(spec: &PgSpec, reason: &str) -> Result<PathBuf, PgError> {
    if reason.is_empty()
        || !reason
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(PgError::Invalid {
            what: "move_aside reason",
            value: reason.to_string(),
            reason: "use letters, digits, '_' or '-'",
        });
    }
    let data_dir = absolute(&spec.data_dir)?;
    if let Some(pid) = running_pid(&data_dir)? {
        return Err(PgError::AlreadyRunning { pid, data_dir });
    }
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S");
    let base = format!("{}.{reason}.{stamp}", data_dir.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    fs::rename(&data_dir, &target).map_err(|e| PgError::io(&data_dir, e))?;
    tracing::warn!(from = %data_dir.display(), to = %target.display(), "data directory moved aside");
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pg_rewind_that_could_not_connect_changed_nothing() {
        let refused = "pg_rewind: error: connection to server at \"10.231.34.13\", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?";
        assert!(source_unreachable(refused));
        let timeout = "pg_rewind: error: connection to server at \"10.0.0.9\", port 5432 failed: timeout expired";
        assert!(source_unreachable(timeout));
        // Lost mid-way: the target may have been changed.
        let mid = "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\npg_rewind: error: connection to server at \"10.0.0.9\", port 5432 failed: server closed the connection unexpectedly";
        assert!(!source_unreachable(mid));
        assert!(!source_unreachable(
            "pg_rewind: fatal: could not open target file"
        ));
    }

    #[test]
    fn psql_timelines_are_read_for_a_primary_and_a_replica() {
        assert_eq!(parse_timelines("2|3\n"), Some((2, Some(3))));
        assert_eq!(parse_timelines("3|\n"), Some((3, None)));
        assert_eq!(parse_timelines("psql: error"), None);
    }
}
