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

mod backup;
mod check;
mod conf;

pub use backup::{parse_last_backup, BackupRun, BackupSource, LastBackup};
pub use check::{BackupRefused, RepoCheck, RepoStatus};
use conf::describes_cluster;

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

    /// A backup of `type_`, run by the leader's agent; `standby`: the files are copied from
    /// a standby (`--backup-standby`; the configuration file lists the primary and the
    /// standbys as pgN-path/pgN-host). Returns pgBackRest's output.
    pub async fn backup(
        &self,
        spec: &PgSpec,
        type_: BackupType,
        standby: bool,
    ) -> Result<String, PgError> {
        let mut extra = self.pg_options(spec);
        extra.push(format!("--type={}", type_.as_str()));
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

    /// Whether the configuration file lists two or more servers for the stanza: then it
    /// describes the cluster and is used as it is (pgBackRest finds the primary among them,
    /// and a backup can be taken from a standby).
    pub fn file_describes_cluster(&self) -> bool {
        describes_cluster(self.config.as_deref(), &self.stanza)
    }

    /// `--pg1-path` / `--pg1-port` / `--pg1-socket-path` / `--pg1-user` of this member, when
    /// the file does not describe the cluster: they win over the file's pg1 (a file shared by
    /// every member that names one of them as pg1 would, after a failover, name a standby).
    /// A file that lists several servers is left alone: adding this member as pg1 beside its
    /// own entry makes pgBackRest find "more than one primary cluster".
    fn pg_options(&self, spec: &PgSpec) -> Vec<String> {
        if self.file_describes_cluster() {
            return Vec::new();
        }
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
