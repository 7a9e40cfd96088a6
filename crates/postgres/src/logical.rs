//! Permanent logical replication slots that survive a failover on PostgreSQL 15, which has
//! no failover slots: the primary keeps the configured slots; each replica holds a copy made
//! from the primary's slot state file (installed while the replica is stopped) and advances
//! it to the primary's `confirmed_flush_lsn`, so the promoted replica resumes the consumer at
//! (at most slightly before) its confirmed position. The HA core decides when; this module
//! only acts and reports.

mod state_file;
mod wal_dir;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Row};

use crate::client::{bounded, connect, connect_with, credentials_config};
use crate::error::PgError;
use crate::lsn::{format_lsn, parse_lsn};
use crate::run::absolute;
use crate::spec::{Credentials, PgSpec, Upstream};

pub use state_file::{install_slot_state, parse_slot_state, SlotState};
pub use wal_dir::oldest_wal_lsn;

/// One permanent logical slot from the dynamic configuration (`slots.<name>` with
/// `type: logical`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalSlotSpec {
    pub name: String,
    pub database: String,
    pub plugin: String,
}

/// A logical slot as `pg_replication_slots` shows it, on a primary or a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPosition {
    pub database: String,
    pub plugin: String,
    /// A consumer is connected (always false for a replica's copy).
    pub active: bool,
    /// What the consumer confirmed: the value the leader publishes and replicas advance to.
    pub confirmed_flush: Option<u64>,
    /// The oldest WAL the slot still needs.
    pub restart_lsn: Option<u64>,
    /// The oldest catalog rows the slot still needs (replicas report it to the primary
    /// through hot_standby_feedback).
    pub catalog_xmin: Option<u32>,
    /// `wal_status = 'lost'`: the WAL it needs is gone; the slot is unusable.
    pub lost: bool,
}

const POSITIONS_SQL: &str = "SELECT slot_name::text, coalesce(database::text, ''),
    coalesce(plugin::text, ''), active, confirmed_flush_lsn::text, restart_lsn::text,
    catalog_xmin::text, coalesce(wal_status = 'lost', false)
    FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name";

/// Checks a slot name as PostgreSQL does (1 to 63 of `[a-z0-9_]`); this also keeps it from
/// naming any path but `pg_replslot/<name>`.
pub(crate) fn check_slot_name(name: &str) -> Result<(), PgError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(PgError::Invalid {
            what: "replication slot name",
            value: name.to_string(),
            reason: "use 1 to 63 lower-case letters, digits or underscores",
        })
    }
}

/// On the primary: creates each wanted logical slot that is missing (connected to the slot's
/// database) and returns the names created. A slot that exists with another type, database
/// or plugin is never dropped: the others are still created, then the first such slot is
/// returned as `SlotMismatch`.
pub async fn ensure_logical_slots(
    spec: &PgSpec,
    wanted: &[LogicalSlotSpec],
    timeout: Duration,
) -> Result<Vec<String>, PgError> {
    for slot in wanted {
        check_slot_name(&slot.name)?;
    }
    bounded("ensure_logical_slots", timeout, async {
        let client = connect(spec, timeout).await?;
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(|e| PgError::query("reading wal_level", e))?;
        let wal_level: String = get(&row, 0, "reading wal_level")?;
        let in_recovery: bool = get(&row, 1, "reading wal_level")?;
        if in_recovery {
            return Err(PgError::InRecovery {
                what: "creating logical replication slots".into(),
            });
        }
        if wal_level != "logical" {
            return Err(PgError::WalLevelNotLogical { found: wal_level });
        }
        let existing = existing_slots(&client).await?;
        let mut created = Vec::new();
        let mut mismatch = None;
        for slot in wanted {
            match existing.get(&slot.name) {
                Some(found) if *found == describe(Some((&slot.database, &slot.plugin))) => {}
                Some(found) => {
                    let error = PgError::SlotMismatch {
                        slot: slot.name.clone(),
                        expected: describe(Some((&slot.database, &slot.plugin))),
                        found: found.clone(),
                    };
                    tracing::warn!(slot = %slot.name, "{error}");
                    mismatch.get_or_insert(error);
                }
                None => {
                    create_slot(spec, slot, timeout).await?;
                    created.push(slot.name.clone());
                }
            }
        }
        match mismatch {
            Some(error) => Err(error),
            None => Ok(created),
        }
    })
    .await
}

/// How a slot is described in `SlotMismatch`: None for a physical slot.
fn describe(logical: Option<(&str, &str)>) -> String {
    match logical {
        Some((database, plugin)) => {
            format!("a logical slot on database {database:?} with plugin {plugin:?}")
        }
        None => "a physical slot".into(),
    }
}

/// Every slot by name, described as in `SlotMismatch`.
async fn existing_slots(client: &Client) -> Result<BTreeMap<String, String>, PgError> {
    const WHAT: &str = "listing replication slots";
    let rows = client
        .query(
            "SELECT slot_name::text, slot_type = 'logical', coalesce(database::text, ''),
             coalesce(plugin::text, '') FROM pg_replication_slots",
            &[],
        )
        .await
        .map_err(|e| PgError::query(WHAT, e))?;
    let mut slots = BTreeMap::new();
    for row in &rows {
        let name: String = get(row, 0, WHAT)?;
        let logical: bool = get(row, 1, WHAT)?;
        let database: String = get(row, 2, WHAT)?;
        let plugin: String = get(row, 3, WHAT)?;
        let description = describe(logical.then_some((&database, &plugin)));
        slots.insert(name, description);
    }
    Ok(slots)
}

async fn create_slot(
    spec: &PgSpec,
    slot: &LogicalSlotSpec,
    timeout: Duration,
) -> Result<(), PgError> {
    let client = connect_database(spec, &slot.name, &slot.database, timeout).await?;
    let what = format!(
        "creating logical replication slot {:?} on database {:?} with plugin {:?}",
        slot.name, slot.database, slot.plugin
    );
    // Waits for the transactions running now to end before it returns (snapshot building).
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2)",
            &[&slot.name, &slot.plugin],
        )
        .await
        .map_err(|e| PgError::query(what.clone(), e))?;
    let lsn: String = get(&row, 0, &what)?;
    tracing::info!(slot = %slot.name, database = %slot.database, plugin = %slot.plugin, %lsn, "created logical replication slot");
    Ok(())
}

/// Drop the named logical slots that are not in use (on a replica: copies of slots that left
/// the configuration). Returns the ones dropped.
pub async fn drop_logical_slots(
    spec: &PgSpec,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<String>, PgError> {
    bounded("drop_logical_slots", timeout, async {
        let client = connect(spec, timeout).await?;
        let mut dropped = Vec::new();
        for name in names {
            let n = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = $1 AND slot_type = 'logical' AND NOT active",
                    &[name],
                )
                .await
                .map_err(|e| PgError::query(format!("dropping logical slot {name:?}"), e))?;
            if n > 0 {
                dropped.push(name.clone());
            }
        }
        Ok(dropped)
    })
    .await
}

/// The logical slots of the server (primary or replica) by name.
pub async fn logical_slot_positions(
    spec: &PgSpec,
    timeout: Duration,
) -> Result<BTreeMap<String, SlotPosition>, PgError> {
    const WHAT: &str = "reading logical slots from pg_replication_slots";
    bounded("logical_slot_positions", timeout, async {
        let client = connect(spec, timeout).await?;
        let rows = client
            .query(POSITIONS_SQL, &[])
            .await
            .map_err(|e| PgError::query(WHAT, e))?;
        let mut positions = BTreeMap::new();
        for row in &rows {
            let name: String = get(row, 0, WHAT)?;
            positions.insert(name, slot_position(row)?);
        }
        Ok(positions)
    })
    .await
}

fn slot_position(row: &Row) -> Result<SlotPosition, PgError> {
    const WHAT: &str = "reading logical slots from pg_replication_slots";
    let lsn = |index: usize| -> Result<Option<u64>, PgError> {
        let text: Option<String> = get(row, index, WHAT)?;
        text.map(|t| {
            parse_lsn(&t).ok_or_else(|| PgError::UnexpectedResult {
                what: WHAT.into(),
                detail: format!("LSN {t:?}"),
            })
        })
        .transpose()
    };
    let catalog_xmin: Option<String> = get(row, 6, WHAT)?;
    let catalog_xmin = catalog_xmin
        .map(|t| {
            t.parse::<u32>().map_err(|_| PgError::UnexpectedResult {
                what: WHAT.into(),
                detail: format!("catalog_xmin {t:?}"),
            })
        })
        .transpose()?;
    Ok(SlotPosition {
        database: get(row, 1, WHAT)?,
        plugin: get(row, 2, WHAT)?,
        active: get(row, 3, WHAT)?,
        confirmed_flush: lsn(4)?,
        restart_lsn: lsn(5)?,
        catalog_xmin,
        lost: get(row, 7, WHAT)?,
    })
}

/// Reads `pg_replslot/<name>/state` from the primary at `upstream` over TCP (Patroni uses
/// the rewind role, which `ensure_users` grants `pg_read_binary_file(text)`), and checks it
/// with `parse_slot_state`. The file is what the primary last saved (at its last checkpoint
/// or slot advance), so it may be somewhat behind the slot's live position: never ahead.
pub async fn read_slot_state(
    upstream: &Upstream,
    credentials: &Credentials,
    name: &str,
    timeout: Duration,
) -> Result<Vec<u8>, PgError> {
    check_slot_name(name)?;
    let what = format!("reading the state file of replication slot {name:?} from the primary");
    let bytes = bounded(&what, timeout, async {
        let client = connect_with(&remote_config(upstream, credentials, timeout), timeout).await?;
        let path = format!("pg_replslot/{name}/state");
        match client
            .query_one("SELECT pg_read_binary_file($1)", &[&path])
            .await
        {
            Ok(row) => get::<Vec<u8>>(&row, 0, &what),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_FILE) => Err(PgError::SlotMissing {
                slot: name.to_string(),
                location: format!("the primary {}:{}", upstream.host, upstream.port),
                remedy: "create it there first (ensure_logical_slots)",
            }),
            Err(e) => Err(PgError::query(what.clone(), e)),
        }
    })
    .await?;
    parse_slot_state(name, &bytes)?;
    Ok(bytes)
}

/// Moves the logical slot `name` (of `database`) forward to `lsn` with
/// `pg_replication_slot_advance`, which PostgreSQL 15 allows on a replica. Never moves it
/// back: a slot already at or past `lsn` is left alone. On a replica the server stops at
/// what it has replayed. Returns the slot's confirmed position afterwards (below `lsn` when
/// the replica has not replayed that far yet: call again later).
pub async fn advance_slot(
    spec: &PgSpec,
    name: &str,
    database: &str,
    lsn: u64,
    timeout: Duration,
) -> Result<u64, PgError> {
    check_slot_name(name)?;
    let what = format!(
        "advancing logical replication slot {name:?} on database {database:?} to {}",
        format_lsn(lsn)
    );
    bounded(&what, timeout, async {
        let client = connect_database(spec, name, database, timeout).await?;
        let rows = client
            .query(
                "SELECT coalesce(database::text, ''), confirmed_flush_lsn::text
                 FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
                &[&name],
            )
            .await
            .map_err(|e| PgError::query(what.clone(), e))?;
        let Some(row) = rows.first() else {
            return Err(PgError::SlotMissing {
                slot: name.to_string(),
                location: format!("the local server (port {})", spec.port),
                remedy: "on a replica, install a copy of the primary's slot (read_slot_state, install_slot_state) while PostgreSQL is stopped",
            });
        };
        let slot_database: String = get(row, 0, &what)?;
        if slot_database != database {
            return Err(PgError::SlotMismatch {
                slot: name.to_string(),
                expected: format!("a logical slot on database {database:?}"),
                found: format!("a logical slot on database {slot_database:?}"),
            });
        }
        let current: Option<String> = get(row, 1, &what)?;
        let current = current.as_deref().and_then(parse_lsn).unwrap_or(0);
        if current >= lsn {
            return Ok(current);
        }
        let row = client
            .query_one(
                "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&name, &format_lsn(lsn)],
            )
            .await
            .map_err(|e| match e.code() {
                // "requested WAL segment ... has already been removed"
                Some(code) if *code == SqlState::UNDEFINED_FILE => PgError::SlotWalMissing {
                    slot: name.to_string(),
                    detail: e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string()),
                },
                _ => PgError::query(what.clone(), e),
            })?;
        let end: String = get(&row, 0, &what)?;
        let end = parse_lsn(&end).ok_or_else(|| PgError::UnexpectedResult {
            what: what.clone(),
            detail: format!("end_lsn {end:?}"),
        })?;
        tracing::debug!(slot = %name, from = %format_lsn(current), to = %format_lsn(end), "advanced logical slot");
        Ok(end)
    })
    .await
}

/// On the primary at `upstream`: the `catalog_xmin` that the replica streaming through the
/// physical slot `physical_slot` reports by hot_standby_feedback (None while it reports
/// none). A replica's slot copies are protected once this is set and not after their own
/// catalog_xmin (see `xid_precedes_or_equals`); until then the primary may remove catalog
/// rows the copies need, and they should be copied again.
pub async fn feedback_catalog_xmin(
    upstream: &Upstream,
    credentials: &Credentials,
    physical_slot: &str,
    timeout: Duration,
) -> Result<Option<u32>, PgError> {
    check_slot_name(physical_slot)?;
    let what = format!("reading catalog_xmin of physical slot {physical_slot:?} on the primary");
    bounded(&what, timeout, async {
        let client = connect_with(&remote_config(upstream, credentials, timeout), timeout).await?;
        let rows = client
            .query(
                "SELECT catalog_xmin::text FROM pg_replication_slots
                 WHERE slot_name = $1 AND slot_type = 'physical'",
                &[&physical_slot],
            )
            .await
            .map_err(|e| PgError::query(what.clone(), e))?;
        let Some(row) = rows.first() else {
            return Err(PgError::SlotMissing {
                slot: physical_slot.to_string(),
                location: format!("the primary {}:{}", upstream.host, upstream.port),
                remedy: "the primary must keep a physical slot for this replica (use_slots) so it holds the catalog rows the replica's logical slot copies need",
            });
        };
        let xmin: Option<String> = get(row, 0, &what)?;
        xmin.map(|t| {
            t.parse::<u32>().map_err(|_| PgError::UnexpectedResult {
                what: what.clone(),
                detail: format!("catalog_xmin {t:?}"),
            })
        })
        .transpose()
    })
    .await
}

/// Transaction-id order with wraparound, as PostgreSQL's `TransactionIdPrecedesOrEquals`
/// for normal xids.
pub fn xid_precedes_or_equals(a: u32, b: u32) -> bool {
    // The wrapping difference read as signed gives the circular order.
    (a.wrapping_sub(b) as i32) <= 0
}

/// A superuser connection to `database` on the local server; a missing database is
/// reported as `SlotDatabaseMissing` for `slot`.
async fn connect_database(
    spec: &PgSpec,
    slot: &str,
    database: &str,
    timeout: Duration,
) -> Result<Client, PgError> {
    let mut config = credentials_config(&spec.superuser);
    config
        .dbname(database)
        .host_path(absolute(&spec.socket_dir)?)
        .port(spec.port)
        .connect_timeout(timeout);
    match connect_with(&config, timeout).await {
        Err(PgError::Query { source, .. })
            if source.code() == Some(&SqlState::INVALID_CATALOG_NAME) =>
        {
            Err(PgError::SlotDatabaseMissing {
                slot: slot.to_string(),
                database: database.to_string(),
            })
        }
        other => other,
    }
}

/// A connection to the `postgres` database of a remote server over TCP.
fn remote_config(upstream: &Upstream, credentials: &Credentials, timeout: Duration) -> Config {
    let mut config = credentials_config(credentials);
    config
        .host(&upstream.host)
        .port(upstream.port)
        .connect_timeout(timeout);
    config
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &str,
) -> Result<T, PgError> {
    row.try_get(index).map_err(|e| PgError::query(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_checked_like_postgres() {
        for good in ["a", "slot_1", &"x".repeat(63)] {
            assert!(check_slot_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Slot", "a-b", "../x", "a/b", &"x".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xid_order_wraps_around() {
        assert!(xid_precedes_or_equals(5, 5));
        assert!(xid_precedes_or_equals(5, 6));
        assert!(!xid_precedes_or_equals(6, 5));
        assert!(xid_precedes_or_equals(u32::MAX - 10, 3));
        assert!(!xid_precedes_or_equals(3, u32::MAX - 10));
    }

    #[test]
    fn mismatch_descriptions_name_database_and_plugin() {
        assert_eq!(
            describe(Some(("app", "pgoutput"))),
            "a logical slot on database \"app\" with plugin \"pgoutput\""
        );
        assert_eq!(describe(None), "a physical slot");
    }
}
