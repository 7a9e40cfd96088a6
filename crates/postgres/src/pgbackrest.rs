//! pgBackRest (`pgbackrest:` of the member's file): the stanza the leader creates when it is
//! missing, `pgbackrest check` (the archive reaches the repository), backups and `info`.
//! Every command runs as the user PostgreSQL runs as, with `--stanza` and, when set,
//! `--config`.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::bounded;
use crate::clone::password_file;
use crate::error::PgError;
use crate::run::{run_as, run_async, user_command};
use crate::spec::PgSpec;

/// Where the repository is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBackRest {
    /// The pgbackrest executable (default `pgbackrest`, looked up in PATH).
    pub command: String,
    pub stanza: String,
    /// `--config` (pgBackRest's default /etc/pgbackrest.conf when None).
    pub config: Option<PathBuf>,
}

/// The kinds of backup pgBackRest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn parse(text: &str) -> Option<BackupType> {
        match text {
            "full" => Some(BackupType::Full),
            "diff" => Some(BackupType::Diff),
            "incr" => Some(BackupType::Incr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

impl PgBackRest {
    /// The arguments of `pgbackrest <command>` (without the executable).
    pub fn args(&self, command: &str, extra: &[String]) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(config) = &self.config {
            args.push(format!("--config={}", config.display()));
        }
        args.push(format!("--stanza={}", self.stanza));
        args.extend(extra.iter().cloned());
        args.push(command.to_string());
        args
    }

    async fn run(
        &self,
        spec: &PgSpec,
        command: &str,
        extra: &[String],
        timeout: Duration,
    ) -> Result<String, PgError> {
        let user = run_as(spec)?;
        // pgBackRest connects to PostgreSQL as the superuser (stanza-create, check, backup).
        let passfile = password_file(spec, &spec.superuser, user.as_ref(), None)?;
        let mut cmd = user_command(spec, &self.command)?;
        cmd.args(self.args(command, extra));
        if let Some(passfile) = &passfile {
            cmd.env("PGPASSFILE", passfile.path());
        }
        let what = format!(
            "pgbackrest {command} (stanza {}{})",
            self.stanza,
            self.config
                .as_ref()
                .map(|c| format!(", config {}", c.display()))
                .unwrap_or_default()
        );
        let output = bounded(&what.clone(), timeout, async move {
            run_async(cmd, &what).await
        })
        .await?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    /// `stanza-create` (a no-op when the stanza exists and matches this cluster), then
    /// `check`: WAL is archived into the repository. Run by the leader.
    pub async fn ensure_stanza_and_check(&self, spec: &PgSpec) -> Result<(), PgError> {
        let pg = self.pg_options(spec);
        // archive-push holds the stanza's archive lock while it runs: try again a few times.
        let mut attempt = 1;
        loop {
            match self
                .run(spec, "stanza-create", &pg, Duration::from_secs(120))
                .await
            {
                Err(PgError::CommandFailed { stderr_tail, .. })
                    if attempt < 10 && stderr_tail.contains("unable to acquire lock") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        self.run(spec, "check", &pg, Duration::from_secs(120))
            .await?;
        Ok(())
    }

    /// A backup of `type_`; `standby`: taken from a replica (`--backup-standby`; the
    /// repository's configuration lists the primary and standbys as pgN-path/pgN-host).
    pub async fn backup(
        &self,
        spec: &PgSpec,
        type_: BackupType,
        standby: bool,
    ) -> Result<String, PgError> {
        let mut extra = vec![format!("--type={}", type_.as_str())];
        if standby {
            extra.push("--backup-standby".into());
        }
        self.run(spec, "backup", &extra, Duration::from_secs(24 * 3600))
            .await
    }

    /// `info --output=json`, as pgBackRest prints it.
    pub async fn info_json(&self, spec: &PgSpec) -> Result<String, PgError> {
        self.run(
            spec,
            "info",
            &["--output=json".to_string()],
            Duration::from_secs(60),
        )
        .await
    }

    /// `--pg1-path` / `--pg1-port` / `--pg1-socket-path` / `--pg1-user` of this member: they
    /// win over the file's pg1 (a file shared by every member names one of them as pg1, which
    /// after a failover is no longer the primary).
    fn pg_options(&self, spec: &PgSpec) -> Vec<String> {
        vec![
            format!("--pg1-path={}", spec.data_dir.display()),
            format!("--pg1-port={}", spec.port),
            format!("--pg1-socket-path={}", spec.socket_dir.display()),
            format!("--pg1-user={}", spec.superuser.username),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_config_and_stanza_before_the_command() {
        let p = PgBackRest {
            command: "pgbackrest".into(),
            stanza: "main".into(),
            config: Some("/etc/pgbackrest/demo.conf".into()),
        };
        assert_eq!(
            p.args("backup", &["--type=full".into()]),
            vec![
                "--config=/etc/pgbackrest/demo.conf",
                "--stanza=main",
                "--type=full",
                "backup"
            ]
        );
        assert_eq!(BackupType::parse("incr"), Some(BackupType::Incr));
        assert_eq!(BackupType::parse("weekly"), None);
    }
}

/// The outcome of the leader's last stanza check, for the member's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoStatus {
    pub stanza: String,
    /// None while the check runs; Ok or the error (naming stanza and configuration file).
    pub result: Option<Result<(), String>>,
}

impl RepoStatus {
    /// `check`: "running", "ok" or "failed", and `error` when failed.
    pub fn words(&self) -> (&'static str, Option<&str>) {
        match &self.result {
            None => ("running", None),
            Some(Ok(())) => ("ok", None),
            Some(Err(e)) => ("failed", Some(e)),
        }
    }
}

/// Runs [`PgBackRest::ensure_stanza_and_check`] in the background each time this member
/// starts leading (at start too), and keeps the outcome. A failure is logged as an error and
/// shown in the status; nothing else changes (the member keeps its data and its role).
#[derive(Debug, Default)]
pub struct RepoCheck {
    repo: Option<PgBackRest>,
    leading: std::sync::atomic::AtomicBool,
    status: std::sync::Arc<std::sync::Mutex<Option<RepoStatus>>>,
}

impl RepoCheck {
    pub fn new(repo: Option<PgBackRest>) -> Self {
        RepoCheck {
            repo,
            ..Default::default()
        }
    }

    /// Called every cycle with whether this member now leads with a running primary.
    pub fn cycle(&self, spec: &PgSpec, leading: bool) {
        let was = self
            .leading
            .swap(leading, std::sync::atomic::Ordering::Relaxed);
        let started = leading && !was;
        let Some(repo) = self.repo.clone().filter(|_| started) else {
            return;
        };
        let status = self.status.clone();
        *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(RepoStatus {
            stanza: repo.stanza.clone(),
            result: None,
        });
        let spec = spec.clone();
        tokio::spawn(async move {
            tracing::info!(stanza = %repo.stanza, "pgbackrest: creating the stanza if missing and checking the archive");
            let result = repo
                .ensure_stanza_and_check(&spec)
                .await
                .map_err(|e| e.to_string());
            match &result {
                Ok(()) => {
                    tracing::info!(stanza = %repo.stanza, "pgbackrest check passed: WAL reaches the repository")
                }
                Err(e) => {
                    tracing::error!(stanza = %repo.stanza, error = %e, "pgbackrest: the repository is not usable; WAL is not archived until it is fixed (check pgbackrest.stanza and pgbackrest.config, then the repository)")
                }
            }
            *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(RepoStatus {
                stanza: repo.stanza.clone(),
                result: Some(result),
            });
        });
    }

    /// The last check's outcome (None before this member first led).
    pub fn status(&self) -> Option<RepoStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
