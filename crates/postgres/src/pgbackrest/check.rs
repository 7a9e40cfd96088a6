//! The leader's side of the repository: the stanza check each time this member starts
//! leading, the backups it takes on request, and the newest backup, for the member's status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use serde_json::{json, Value};

use super::{parse_last_backup, BackupRun, BackupSource, BackupType, LastBackup, PgBackRest};
use crate::spec::PgSpec;

/// The outcome of the leader's last stanza check, for the member's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoStatus {
    pub stanza: String,
    /// None while the check runs; Ok or the error (naming stanza and configuration file).
    pub result: Option<Result<(), String>>,
    /// The last backup this member's agent started (while it led).
    pub backup: Option<BackupRun>,
    /// The newest backup in the repository, read after each check and backup.
    pub last_backup: Option<LastBackup>,
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

    /// The `pgbackrest` object of `GET /patroni` and of the member key.
    pub fn to_json(&self) -> Value {
        let (check, error) = self.words();
        let mut j = json!({"stanza": self.stanza, "check": check, "error": error});
        if let Some(run) = &self.backup {
            j["backup"] = run.to_json();
        }
        if let Some(last) = &self.last_backup {
            j["last_backup"] = last.to_json();
        }
        j
    }
}

/// Why a backup was not started: an HTTP status and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRefused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> BackupRefused {
    BackupRefused {
        status,
        message: message.into(),
    }
}

/// Runs [`PgBackRest::ensure_stanza_and_check`] in the background each time this member
/// starts leading (at start too), and keeps the outcome. A failure is logged as an error and
/// shown in the status; nothing else changes (the member keeps its data and its role).
/// Backups requested of the leader run in the background too, one at a time.
#[derive(Debug, Default)]
pub struct RepoCheck {
    repo: Option<PgBackRest>,
    leading: AtomicBool,
    status: Arc<Mutex<Option<RepoStatus>>>,
}

fn lock(status: &Mutex<Option<RepoStatus>>) -> std::sync::MutexGuard<'_, Option<RepoStatus>> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
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
        let was = self.leading.swap(leading, Ordering::Relaxed);
        let started = leading && !was;
        let Some(repo) = self.repo.clone().filter(|_| started) else {
            return;
        };
        let status = self.status.clone();
        {
            let mut current = lock(&status);
            let kept = current.take();
            *current = Some(RepoStatus {
                stanza: repo.stanza.clone(),
                result: None,
                backup: kept.as_ref().and_then(|s| s.backup.clone()),
                last_backup: kept.and_then(|s| s.last_backup),
            });
        }
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
            let ok = result.is_ok();
            if let Some(s) = lock(&status).as_mut() {
                s.result = Some(result);
            }
            if ok {
                refresh_last_backup(&repo, &spec, &status).await;
            }
        }.in_current_span());
    }

    /// Start a backup in the background (the caller checked that this member leads). `None`:
    /// from a standby when the configuration file lists standbys, else from the leader.
    /// Returns what was started, for the operator.
    pub fn start_backup(
        &self,
        spec: &PgSpec,
        type_: BackupType,
        source: Option<BackupSource>,
    ) -> Result<String, BackupRefused> {
        let Some(repo) = self.repo.clone() else {
            return Err(refused(
                400,
                "no backup repository: add a pgbackrest: section (stanza, config) to the members' configuration files",
            ));
        };
        let describes = repo.file_describes_cluster();
        let config = repo
            .config
            .as_ref()
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| super::conf::DEFAULT_CONFIG.to_string());
        let source = match source {
            Some(BackupSource::Standby) if !describes => {
                return Err(refused(
                    400,
                    format!(
                        "cannot back up from a standby: {config} lists fewer than two servers (pgN-path/pgN-host) for stanza {}; list the primary and the standbys there, or back up from the leader (--from leader)",
                        repo.stanza
                    ),
                ))
            }
            Some(s) => s,
            None if describes => BackupSource::Standby,
            None => BackupSource::Leader,
        };
        let status = self.status.clone();
        {
            let mut current = lock(&status);
            if let Some(run) = current.as_ref().and_then(|s| s.backup.as_ref()) {
                if run.result.is_none() {
                    return Err(refused(
                        409,
                        format!(
                            "a {} backup is already running (started {}); wait for it (GET /patroni shows pgbackrest.backup)",
                            run.type_.as_str(),
                            run.to_json()["started"].as_str().unwrap_or_default()
                        ),
                    ));
                }
            }
            let entry = current.get_or_insert_with(|| RepoStatus {
                stanza: repo.stanza.clone(),
                result: None,
                backup: None,
                last_backup: None,
            });
            entry.backup = Some(BackupRun {
                type_,
                source,
                started_unix: now_unix(),
                finished_unix: None,
                result: None,
            });
        }
        let what = format!(
            "backup of type {} of stanza {} from {} (config {config})",
            type_.as_str(),
            repo.stanza,
            match source {
                BackupSource::Standby => "a standby",
                BackupSource::Leader => "the leader",
            }
        );
        let spec = spec.clone();
        let started = what.clone();
        tokio::spawn(
            async move {
                tracing::info!("pgbackrest: starting a {what}");
                let result = repo
                    .backup(&spec, type_, source == BackupSource::Standby)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                match &result {
                    Ok(()) => tracing::info!("pgbackrest: {what} finished"),
                    Err(e) => tracing::error!(error = %e, "pgbackrest: {what} failed"),
                }
                if let Some(run) = lock(&status).as_mut().and_then(|s| s.backup.as_mut()) {
                    run.finished_unix = Some(now_unix());
                    run.result = Some(result);
                }
                refresh_last_backup(&repo, &spec, &status).await;
            }
            .in_current_span(),
        );
        Ok(started)
    }

    /// The last check's outcome (None before this member first led).
    pub fn status(&self) -> Option<RepoStatus> {
        lock(&self.status).clone()
    }
}

/// Read the newest backup from the repository into the status (a failure is logged and
/// leaves what was known).
async fn refresh_last_backup(
    repo: &PgBackRest,
    spec: &PgSpec,
    status: &Arc<Mutex<Option<RepoStatus>>>,
) {
    let parsed = match repo.info_json(spec).await {
        Ok(text) => parse_last_backup(&text, &repo.stanza),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(last) => {
            if let Some(s) = lock(status).as_mut() {
                s.last_backup = last;
            }
        }
        Err(e) => {
            tracing::warn!(stanza = %repo.stanza, error = %e, "pgbackrest info: cannot read the newest backup")
        }
    }
}
