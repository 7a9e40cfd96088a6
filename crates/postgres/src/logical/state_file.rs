//! The on-disk state of one replication slot (`pg_replslot/<name>/state`, PostgreSQL 15's
//! `ReplicationSlotOnDisk`): parsed and checked before pgbaton installs a copy on a replica
//! (a bad file makes the replica PANIC at startup), and written into a stopped replica's
//! data directory the way PostgreSQL itself saves slots (state.tmp, fsync, rename, fsync).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::wal_dir::oldest_wal_lsn;
use crate::error::PgError;
use crate::lsn::format_lsn;
use crate::postmaster::running_pid;
use crate::run::{absolute, chmod, chown, ensure_dir, run_as};
use crate::spec::PgSpec;

/// `SLOT_MAGIC` of slot.c.
const SLOT_MAGIC: u32 = 0x0105_1CA1;
/// `SLOT_VERSION` of PostgreSQL 14 to 17.
const SLOT_VERSION: u32 = 2;
/// magic, checksum, version, length: the part before `ReplicationSlotPersistentData`.
const HEADER_LEN: usize = 16;
/// `sizeof(ReplicationSlotPersistentData)` on 64-bit PostgreSQL 15.
const DATA_LEN: usize = 184;
const NAME_LEN: usize = 64;
/// `RS_PERSISTENT` of slot.h: the only persistency PostgreSQL restores at startup.
const RS_PERSISTENT: u32 = 0;

/// What a slot state file says (the fields pgbaton checks or reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub name: String,
    /// OID of the slot's database (0 for a physical slot). A physical replica has the same
    /// OIDs as its primary, so the copy points at the same database.
    pub database_oid: u32,
    /// Empty for a physical slot.
    pub plugin: String,
    pub catalog_xmin: u32,
    pub restart_lsn: u64,
    pub confirmed_flush: u64,
}

/// Parses and checks a PostgreSQL 15 slot state file read for slot `expected_name`: magic,
/// version, length, CRC-32C, name, persistency and that it is a logical slot.
pub fn parse_slot_state(expected_name: &str, bytes: &[u8]) -> Result<SlotState, PgError> {
    let bad = |detail: String| PgError::SlotState {
        slot: expected_name.to_string(),
        detail,
    };
    if bytes.len() != HEADER_LEN + DATA_LEN {
        return Err(bad(format!(
            "{} bytes, expected {} (is the primary PostgreSQL 15 on a 64-bit little-endian machine?)",
            bytes.len(),
            HEADER_LEN + DATA_LEN
        )));
    }
    let magic = u32_at(bytes, 0);
    if magic != SLOT_MAGIC {
        return Err(bad(format!("magic {magic:#x}, expected {SLOT_MAGIC:#x}")));
    }
    let version = u32_at(bytes, 8);
    if version != SLOT_VERSION {
        return Err(bad(format!("version {version}, expected {SLOT_VERSION}")));
    }
    let length = u32_at(bytes, 12) as usize;
    if length != DATA_LEN {
        return Err(bad(format!("data length {length}, expected {DATA_LEN}")));
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32c(&bytes[8..]);
    if stored != computed {
        return Err(bad(format!(
            "checksum {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let name = c_string(&bytes[16..16 + NAME_LEN]);
    if name != expected_name {
        return Err(bad(format!("the file names slot {name:?}")));
    }
    let persistency = u32_at(bytes, 84);
    if persistency != RS_PERSISTENT {
        return Err(bad(format!(
            "persistency {persistency}: only persistent slots survive a restart"
        )));
    }
    let state = SlotState {
        name,
        database_oid: u32_at(bytes, 80),
        plugin: c_string(&bytes[129..129 + NAME_LEN]),
        catalog_xmin: u32_at(bytes, 92),
        restart_lsn: u64_at(bytes, 96),
        confirmed_flush: u64_at(bytes, 112),
    };
    if state.database_oid == 0 || state.plugin.is_empty() {
        return Err(bad("it is a physical slot, not a logical one".into()));
    }
    Ok(state)
}

/// Writes `state` as `pg_replslot/<name>/state` into the data directory of `spec`, which
/// must be stopped (PostgreSQL reads slot files only at startup and would overwrite ours).
/// The directory gets mode 0700 and the file 0600, both owned by `run_as`; file and
/// directories are fsynced. An existing copy of the slot is replaced.
pub fn install_slot_state(spec: &PgSpec, name: &str, state: &[u8]) -> Result<(), PgError> {
    super::check_slot_name(name)?;
    let parsed = parse_slot_state(name, state)?;
    let data_dir = absolute(&spec.data_dir)?;
    if let Some(pid) = running_pid(&data_dir)? {
        return Err(PgError::AlreadyRunning { pid, data_dir });
    }
    // A copy whose WAL this server lacks could never be advanced nor decoded.
    match oldest_wal_lsn(spec)? {
        Some(oldest) if oldest <= parsed.restart_lsn => {}
        oldest => {
            return Err(PgError::SlotWalMissing {
                slot: name.to_string(),
                detail: format!(
                    "its restart_lsn is {}, the oldest WAL in {} starts at {}",
                    format_lsn(parsed.restart_lsn),
                    data_dir.join("pg_wal").display(),
                    oldest.map_or("(none)".to_string(), format_lsn)
                ),
            })
        }
    }
    let replslot = data_dir.join("pg_replslot");
    if !replslot.is_dir() {
        return Err(PgError::Foreign {
            path: data_dir,
            detail: "it has no pg_replslot directory".into(),
        });
    }
    let user = run_as(spec)?;
    let slot_dir = replslot.join(name);
    ensure_dir(&slot_dir, 0o700, user.as_ref())?;

    // PostgreSQL removes a leftover state.tmp at startup, so a crash here leaves no trace
    // but an empty slot directory (which it also ignores).
    let tmp = slot_dir.join("state.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PgError::io(&tmp, e))?;
    file.write_all(state)
        .and_then(|()| file.sync_all())
        .map_err(|e| PgError::io(&tmp, e))?;
    drop(file);
    chmod(&tmp, 0o600)?;
    chown(&tmp, user.as_ref())?;
    let path = slot_dir.join("state");
    fs::rename(&tmp, &path).map_err(|e| PgError::io(&path, e))?;
    fsync_dir(&slot_dir)?;
    fsync_dir(&replslot)?;
    tracing::info!(slot = %name, data_dir = %data_dir.display(), "installed a copy of the primary's replication slot");
    Ok(())
}

fn fsync_dir(path: &Path) -> Result<(), PgError> {
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| PgError::io(path, e))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A NUL-terminated `NameData`.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// CRC-32C (Castagnoli), as PostgreSQL's `COMP_CRC32C`; bitwise, the file is 200 bytes.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_replslot/ls/state` of a test_decoding slot, read from a real PostgreSQL 15.
    const REAL_STATE: &str = concat!(
        "a11c0501a2fd402c02000000b80000006c730000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000050000000000000000000000d4020000c8fe0103",
        "00000000000000000000000000ff010300000000000000000000000000746573745f6465636f64696e670000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    );

    fn real_state() -> Vec<u8> {
        (0..REAL_STATE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&REAL_STATE[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn parses_a_real_state_file() {
        let state = parse_slot_state("ls", &real_state()).expect("valid");
        assert_eq!(
            state,
            SlotState {
                name: "ls".into(),
                database_oid: 5,
                plugin: "test_decoding".into(),
                catalog_xmin: 724,
                restart_lsn: 0x301_FEC8,
                confirmed_flush: 0x301_FF00,
            }
        );
    }

    #[test]
    fn rejects_corrupt_or_foreign_files() {
        let good = real_state();
        let err = |bytes: &[u8], name: &str| parse_slot_state(name, bytes).unwrap_err().to_string();

        assert!(err(&good, "other").contains("names slot \"ls\""));
        assert!(err(&good[..199], "ls").contains("199 bytes"));
        let mut flipped = good.clone();
        flipped[120] ^= 1;
        assert!(err(&flipped, "ls").contains("checksum"));
        let mut magic = good.clone();
        magic[0] = 0;
        assert!(err(&magic, "ls").contains("magic"));
        let mut version = good.clone();
        version[8] = 3;
        assert!(err(&version, "ls").contains("version 3"));
    }

    #[test]
    fn rejects_physical_slots() {
        let mut physical = real_state();
        physical[80..84].fill(0);
        physical[129..129 + NAME_LEN].fill(0);
        let crc = crc32c(&physical[8..]);
        physical[4..8].copy_from_slice(&crc.to_le_bytes());
        let message = parse_slot_state("ls", &physical).unwrap_err().to_string();
        assert!(message.contains("physical slot"), "{message}");
    }
}
