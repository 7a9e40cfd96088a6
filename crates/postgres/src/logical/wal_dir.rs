//! Which WAL a data directory still holds: a copied logical slot can only be decoded (or
//! advanced) from its `restart_lsn` if that WAL is in the replica's own `pg_wal` (PostgreSQL 15
//! reads it from there, never through restore_command), and a replica only has WAL from its
//! clone onwards, minus what its restartpoints recycled.

use std::fs;
use std::path::Path;

use crate::error::PgError;
use crate::run::absolute;
use crate::spec::PgSpec;

/// The LSN where the oldest WAL segment in `pg_wal` of `spec` starts (None when there is
/// none). Reads only the directory, so it works whether PostgreSQL runs or not. Segments
/// are removed oldest first, so the directory holds every WAL position from there on.
pub fn oldest_wal_lsn(spec: &PgSpec) -> Result<Option<u64>, PgError> {
    let pg_wal = absolute(&spec.data_dir)?.join("pg_wal");
    let entries = fs::read_dir(&pg_wal).map_err(|e| PgError::io(&pg_wal, e))?;
    let mut oldest: Option<u64> = None;
    for entry in entries {
        let entry = entry.map_err(|e| PgError::io(&pg_wal, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((log, seg)) = segment_numbers(name) else {
            continue;
        };
        let size = segment_size(&entry.path())?;
        let Some(start) = segment_start(log, seg, size) else {
            continue;
        };
        oldest = Some(oldest.map_or(start, |o| o.min(start)));
    }
    Ok(oldest)
}

/// `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log, segment in hex) → (log, segment).
fn segment_numbers(name: &str) -> Option<(u32, u32)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&name[16..24], 16).ok()?;
    Some((log, seg))
}

/// Every segment file is exactly `wal_segment_size` bytes (a power of two, 1 MB to 1 GB).
fn segment_size(path: &Path) -> Result<u64, PgError> {
    let size = fs::metadata(path).map_err(|e| PgError::io(path, e))?.len();
    if size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size) {
        Ok(size)
    } else {
        Err(PgError::Foreign {
            path: path.to_path_buf(),
            detail: format!("a WAL segment of {size} bytes"),
        })
    }
}

/// The first LSN of segment `seg` of log `log` (XLogFileName's inverse).
fn segment_start(log: u32, seg: u32, size: u64) -> Option<u64> {
    let within = u64::from(seg).checked_mul(size)?;
    (within < 1 << 32).then(|| (u64::from(log) << 32) | within)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_map_to_their_first_lsn() {
        let mb16 = 16 << 20;
        let (log, seg) = segment_numbers("000000010000000000000003").expect("a segment");
        assert_eq!(segment_start(log, seg, mb16), Some(0x300_0000));
        let (log, seg) = segment_numbers("00000002000000010000000A").expect("a segment");
        assert_eq!(segment_start(log, seg, mb16), Some((1 << 32) | 0xA00_0000));
        assert_eq!(segment_start(0, 256, mb16), None, "past the 4 GB of a log");
        for other in [
            "00000002.history",
            "000000010000000000000003.partial",
            "archive_status",
        ] {
            assert_eq!(segment_numbers(other), None, "{other}");
        }
    }
}
