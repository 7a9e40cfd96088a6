//! Backups the leader's agent takes on request (`POST /backup`, `pgbaton ctl backup`), and
//! the newest backup of the repository as `pgbackrest info` reports it.

use serde_json::{json, Value};

use super::BackupType;

/// Where the backup's files are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSource {
    /// A standby (`--backup-standby`): the primary only starts and stops the backup.
    Standby,
    /// The primary.
    Leader,
}

impl BackupSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupSource::Standby => "standby",
            BackupSource::Leader => "leader",
        }
    }
}

/// One backup the agent started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRun {
    pub type_: BackupType,
    pub source: BackupSource,
    pub started_unix: i64,
    pub finished_unix: Option<i64>,
    /// None while it runs; the error (naming the command, stanza and configuration) when it
    /// failed.
    pub result: Option<Result<(), String>>,
}

impl BackupRun {
    /// `running`, `ok` or `failed`.
    pub fn state(&self) -> &'static str {
        match &self.result {
            None => "running",
            Some(Ok(())) => "ok",
            Some(Err(_)) => "failed",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state(),
            "type": self.type_.as_str(),
            "from": self.source.as_str(),
            "started": rfc3339(self.started_unix),
            "finished": self.finished_unix.map(rfc3339),
            "error": self.result.as_ref().and_then(|r| r.as_ref().err()),
        })
    }
}

/// The newest backup in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastBackup {
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub type_: String,
    pub stop_unix: i64,
    /// The database's size as backed up, bytes.
    pub size: u64,
    /// What the backup added to the repository (after compression and deduplication), bytes.
    pub repo_size: u64,
}

impl LastBackup {
    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "type": self.type_,
            "finished": rfc3339(self.stop_unix),
            "size": self.size,
            "repository_size": self.repo_size,
        })
    }
}

/// The newest backup of `stanza` in `pgbackrest info --output=json`; `Ok(None)` when the
/// stanza has none yet.
pub fn parse_last_backup(info_json: &str, stanza: &str) -> Result<Option<LastBackup>, String> {
    let info: Value = serde_json::from_str(info_json.trim())
        .map_err(|e| format!("pgbackrest info printed no JSON ({e})"))?;
    let Some(entry) = info
        .as_array()
        .and_then(|stanzas| stanzas.iter().find(|s| s["name"] == stanza))
    else {
        return Ok(None);
    };
    let newest = entry["backup"].as_array().and_then(|backups| {
        backups
            .iter()
            .max_by_key(|b| b["timestamp"]["stop"].as_i64())
    });
    Ok(newest.map(|b| LastBackup {
        label: b["label"].as_str().unwrap_or_default().to_string(),
        type_: b["type"].as_str().unwrap_or_default().to_string(),
        stop_unix: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
        size: b["info"]["size"].as_u64().unwrap_or_default(),
        repo_size: b["info"]["repository"]["delta"]
            .as_u64()
            .unwrap_or_default(),
    }))
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape pgBackRest 2.45 prints (shortened from a real `info --output=json`).
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000006","min":"000000010000000000000001"}],
      "backup":[
        {"label":"20261204-222651F","type":"full","error":false,
         "info":{"delta":22992569,"repository":{"delta":3043462,"size":3043462},"size":22992569},
         "timestamp":{"start":1796423211,"stop":1796423217}},
        {"label":"20261204-222651F_20261204-223001I","type":"incr","error":false,
         "info":{"delta":8192,"repository":{"delta":1024,"size":3044000},"size":22992569},
         "timestamp":{"start":1796423400,"stop":1796423402}}],
      "name":"x","status":{"code":0,"message":"ok"}}]"#;

    #[test]
    fn the_newest_backup_of_the_stanza() {
        let last = parse_last_backup(INFO, "x").unwrap().unwrap();
        assert_eq!(last.label, "20261204-222651F_20261204-223001I");
        assert_eq!(last.type_, "incr");
        assert_eq!(last.stop_unix, 1796423402);
        assert_eq!(last.size, 22992569);
        assert_eq!(last.repo_size, 1024);
        assert_eq!(last.to_json()["finished"], "2026-12-04T22:30:02Z");
    }

    #[test]
    fn a_stanza_without_backups_has_none() {
        let info = r#"[{"archive":[],"backup":[],"name":"x","status":{"code":2,"message":"no valid backups"}}]"#;
        assert_eq!(parse_last_backup(info, "x").unwrap(), None);
        assert_eq!(parse_last_backup(INFO, "other").unwrap(), None);
        assert!(parse_last_backup("ERROR: [041]", "x").is_err());
    }

    #[test]
    fn a_run_reads_as_the_status_shows_it() {
        let mut run = BackupRun {
            type_: BackupType::Full,
            source: BackupSource::Standby,
            started_unix: 1796423211,
            finished_unix: None,
            result: None,
        };
        assert_eq!(run.to_json()["state"], "running");
        run.result = Some(Err("pgbackrest backup (stanza x) failed".into()));
        run.finished_unix = Some(1796423217);
        let j = run.to_json();
        assert_eq!(j["state"], "failed");
        assert_eq!(j["from"], "standby");
        assert_eq!(j["error"], "pgbackrest backup (stanza x) failed");
        assert_eq!(j["finished"], "2026-12-04T22:26:57Z");
    }
}
