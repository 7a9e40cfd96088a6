//! What a data directory holds, read without starting PostgreSQL: missing, empty, or an
//! initialized cluster whose `pg_controldata` output we parse (system identifier, cluster
//! state, timeline, checkpoint positions, checksums).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::PgError;
use crate::lsn::parse_lsn;
use crate::run::{absolute, pg_command, run_sync};
use crate::spec::PgSpec;

/// The PostgreSQL major version this crate drives.
pub const PG_MAJOR: &str = "15";

/// What `data_dir` holds.
#[derive(Debug, Clone, PartialEq)]
pub enum DataDirState {
    Missing,
    Empty,
    Initialized(ControlData),
}

/// From `pg_controldata`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlData {
    pub system_identifier: u64,
    pub state: DbState,
    /// "Latest checkpoint's TimeLineID".
    pub timeline: u32,
    pub checkpoint_lsn: u64,
    pub redo_lsn: u64,
    pub min_recovery_end_lsn: u64,
    pub min_recovery_end_timeline: u32,
    pub data_checksums: bool,
    pub wal_log_hints: bool,
}

/// "Database cluster state".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbState {
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Other(String),
}

impl DbState {
    fn parse(text: &str) -> DbState {
        match text {
            "shut down" => DbState::ShutDown,
            "shut down in recovery" => DbState::ShutDownInRecovery,
            "shutting down" => DbState::ShuttingDown,
            "in crash recovery" => DbState::InCrashRecovery,
            "in archive recovery" => DbState::InArchiveRecovery,
            "in production" => DbState::InProduction,
            other => DbState::Other(other.to_string()),
        }
    }

    /// true when the data dir was last a primary (shut down / in production): it may hold WAL
    /// a new leader never saw. "shutting down" and "in crash recovery" only happen on a
    /// primary (a standby records "shut down in recovery" / "in archive recovery"), so they
    /// count as primary too.
    pub fn was_primary(&self) -> bool {
        matches!(
            self,
            DbState::ShutDown
                | DbState::InProduction
                | DbState::ShuttingDown
                | DbState::InCrashRecovery
        )
    }
}

/// Missing, empty, or initialized (then `pg_controldata` is run as run_as).
pub fn data_dir_state(spec: &PgSpec) -> Result<DataDirState, PgError> {
    let data_dir = absolute(&spec.data_dir)?;
    let mut entries = match fs::read_dir(&data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDirState::Missing),
        Err(e) => return Err(PgError::io(&data_dir, e)),
    };
    if entries.next().is_none() {
        return Ok(DataDirState::Empty);
    }
    check_version(&data_dir)?;
    let mut cmd = pg_command(spec, "pg_controldata")?;
    cmd.arg(&data_dir).env("LC_ALL", "C");
    let output = run_sync(cmd, "pg_controldata")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(DataDirState::Initialized(parse_controldata(&text)?))
}

/// A non-empty data dir must say `15` in PG_VERSION.
fn check_version(data_dir: &Path) -> Result<(), PgError> {
    let version_file = data_dir.join("PG_VERSION");
    match fs::read_to_string(&version_file) {
        Ok(v) if v.trim() == PG_MAJOR => Ok(()),
        Ok(v) => Err(PgError::Foreign {
            path: data_dir.to_path_buf(),
            detail: format!("PG_VERSION says {:?}", v.trim()),
        }),
        Err(e) => Err(PgError::Foreign {
            path: data_dir.to_path_buf(),
            detail: format!("no readable PG_VERSION: {e}"),
        }),
    }
}

/// Parses `pg_controldata` output (run with LC_ALL=C): "Key:   value" lines.
pub fn parse_controldata(text: &str) -> Result<ControlData, PgError> {
    let fields: HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect();
    let get = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| PgError::ControlData {
                detail: format!("no {key:?} line"),
            })
    };
    let number = |key: &str| -> Result<u64, PgError> {
        let value = get(key)?;
        value.parse().map_err(|_| PgError::ControlData {
            detail: format!("{key:?} is {value:?}, not a number"),
        })
    };
    let lsn = |key: &str| -> Result<u64, PgError> {
        let value = get(key)?;
        parse_lsn(value).ok_or_else(|| PgError::ControlData {
            detail: format!("{key:?} is {value:?}, not an LSN"),
        })
    };
    let timeline = |key: &str| -> Result<u32, PgError> {
        let value = number(key)?;
        u32::try_from(value).map_err(|_| PgError::ControlData {
            detail: format!("{key:?} is {value}, too large for a timeline"),
        })
    };
    Ok(ControlData {
        system_identifier: number("Database system identifier")?,
        state: DbState::parse(get("Database cluster state")?),
        timeline: timeline("Latest checkpoint's TimeLineID")?,
        checkpoint_lsn: lsn("Latest checkpoint location")?,
        redo_lsn: lsn("Latest checkpoint's REDO location")?,
        min_recovery_end_lsn: lsn("Minimum recovery ending location")?,
        min_recovery_end_timeline: timeline("Min recovery ending loc's timeline")?,
        data_checksums: number("Data page checksum version")? != 0,
        wal_log_hints: get("wal_log_hints setting")? == "on",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = include_str!("../tests/fixtures/controldata_primary_shut_down.txt");

    #[test]
    fn parses_a_freshly_initialized_cluster() {
        let data = parse_controldata(PRIMARY).expect("parse");
        assert_eq!(
            data,
            ControlData {
                system_identifier: 7712495151925449872,
                state: DbState::ShutDown,
                timeline: 1,
                checkpoint_lsn: 0x17529B0,
                redo_lsn: 0x17529B0,
                min_recovery_end_lsn: 0,
                min_recovery_end_timeline: 0,
                data_checksums: true,
                wal_log_hints: false,
            }
        );
        assert!(data.state.was_primary());
    }

    #[test]
    fn parses_a_standby_in_archive_recovery() {
        let text = PRIMARY
            .replace("shut down", "in archive recovery")
            .replace(
                "Latest checkpoint's TimeLineID:       1",
                "Latest checkpoint's TimeLineID:       3",
            )
            .replace(
                "Minimum recovery ending location:     0/0",
                "Minimum recovery ending location:     0/5000028",
            )
            .replace(
                "Min recovery ending loc's timeline:   0",
                "Min recovery ending loc's timeline:   3",
            )
            .replace(
                "Data page checksum version:           1",
                "Data page checksum version:           0",
            )
            .replace(
                "wal_log_hints setting:                off",
                "wal_log_hints setting:                on",
            );
        let data = parse_controldata(&text).expect("parse");
        assert_eq!(data.state, DbState::InArchiveRecovery);
        assert!(!data.state.was_primary());
        assert_eq!(data.timeline, 3);
        assert_eq!(data.min_recovery_end_lsn, 0x5000028);
        assert_eq!(data.min_recovery_end_timeline, 3);
        assert!(!data.data_checksums);
        assert!(data.wal_log_hints);
    }

    #[test]
    fn states_map_and_unknown_ones_are_kept() {
        assert_eq!(DbState::parse("in production"), DbState::InProduction);
        assert_eq!(
            DbState::parse("shut down in recovery"),
            DbState::ShutDownInRecovery
        );
        assert_eq!(
            DbState::parse("starting up"),
            DbState::Other("starting up".into())
        );
        assert!(DbState::InProduction.was_primary());
        assert!(!DbState::ShutDownInRecovery.was_primary());
        assert!(!DbState::Other("starting up".into()).was_primary());
    }

    #[test]
    fn missing_or_garbled_fields_are_errors() {
        let err = parse_controldata("Database cluster state: in production\n").unwrap_err();
        assert!(
            err.to_string().contains("Database system identifier"),
            "{err}"
        );
        let garbled = PRIMARY.replace("0/17529B0", "zz");
        assert!(parse_controldata(&garbled).is_err());
    }
}
