//! Everything the agent observes about a running server, read in one connection with the
//! queries pipelined (one round trip for the statements, one for the results).

use std::time::Duration;

use tokio_postgres::Row;

use crate::client::{bounded, connect};
use crate::error::PgError;
use crate::identify::identify_system;
use crate::lsn::parse_lsn;
use crate::spec::PgSpec;
use pgbaton_core::{member_timeline, TimelineSource};

/// The server's view of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStatus {
    pub in_recovery: bool,
    /// `server_version_num`, e.g. 150008.
    pub server_version: u32,
    pub system_identifier: u64,
    pub postmaster_start_time: String,
    /// The timeline of the member's position (see [`member_timeline`]): primary, the
    /// timeline of its current WAL file; replica, the timeline of the newest WAL it holds.
    pub timeline: u32,
    /// Where `timeline` came from.
    pub timeline_source: TimelineSource,
    /// Primary: pg_current_wal_lsn().
    pub wal_lsn: Option<u64>,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub replay_timestamp: Option<String>,
    pub replay_paused: bool,
    pub wal_receiver: Option<WalReceiver>,
    pub replication: Vec<ReplicationRow>,
    pub slots: Vec<SlotRow>,
    pub pending_restart: bool,
    /// default_transaction_read_only or in recovery.
    pub read_only: bool,
}

/// A row of pg_stat_wal_receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReceiver {
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
    pub slot_name: Option<String>,
    pub received_tli: u32,
}

impl WalReceiver {
    /// PostgreSQL's status, except that a walreceiver still connecting to its upstream
    /// (PostgreSQL says `streaming` from its start; the sender is known only once connected)
    /// is `starting`.
    pub fn state(&self) -> &str {
        if self.status == "streaming" && self.sender_host.is_none() {
            "starting"
        } else {
            &self.status
        }
    }

    /// Connected to its upstream and streaming.
    pub fn is_streaming(&self) -> bool {
        self.state() == "streaming"
    }
}

/// A row of pg_stat_replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRow {
    pub pid: i32,
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    pub replay_lsn: Option<u64>,
    pub flush_lsn: Option<u64>,
}

/// A row of pg_replication_slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub slot_name: String,
    pub slot_type: String,
    pub active: bool,
    pub restart_lsn: Option<u64>,
    /// pg_current_wal_lsn() - restart_lsn on a primary.
    pub retained_bytes: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL invalidated the slot:
    /// the WAL it needs is gone).
    pub wal_status: Option<String>,
    /// Bytes that can still be written before the slot may be lost (none when
    /// `max_slot_wal_keep_size` is -1, or the slot is lost).
    pub safe_wal_size: Option<i64>,
}

const SERVER_SQL: &str = "SELECT pg_is_in_recovery(),
    current_setting('server_version_num')::int4,
    (SELECT system_identifier FROM pg_control_system()),
    pg_postmaster_start_time()::text,
    CASE WHEN pg_is_in_recovery() THEN NULL
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,
    (SELECT timeline_id FROM pg_control_checkpoint())::int8,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
    pg_last_wal_receive_lsn()::text,
    pg_last_wal_replay_lsn()::text,
    pg_last_xact_replay_timestamp()::text,
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
    EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
    current_setting('default_transaction_read_only')::bool";

const RECEIVER_SQL: &str =
    "SELECT status, sender_host, sender_port, slot_name::text, received_tli::int8
    FROM pg_stat_wal_receiver";

const REPLICATION_SQL: &str =
    "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''),
    host(client_addr), coalesce(state, ''), coalesce(sync_state, ''), coalesce(sync_priority, 0),
    replay_lsn::text, flush_lsn::text
    FROM pg_stat_replication ORDER BY application_name, pid";

const SLOTS_SQL: &str = "SELECT slot_name::text, slot_type, active, restart_lsn::text,
    CASE WHEN NOT pg_is_in_recovery() AND restart_lsn IS NOT NULL
         THEN (pg_current_wal_lsn() - restart_lsn)::int8 END,
    wal_status, safe_wal_size
    FROM pg_replication_slots ORDER BY slot_name";

/// Everything the agent observes about a running server, in one connection, bounded by
/// `timeout` as a whole.
pub async fn query_status(spec: &PgSpec, timeout: Duration) -> Result<PgStatus, PgError> {
    bounded("query_status", timeout, async {
        let client = connect(spec, timeout).await?;
        let q = |sql: &'static str, what: &'static str| {
            let client = &client;
            async move {
                client
                    .query(sql, &[])
                    .await
                    .map_err(|e| PgError::query(what, e))
            }
        };
        let (server, receiver, replication, slots) = tokio::try_join!(
            q(SERVER_SQL, "reading the server status"),
            q(RECEIVER_SQL, "reading pg_stat_wal_receiver"),
            q(REPLICATION_SQL, "reading pg_stat_replication"),
            q(SLOTS_SQL, "reading pg_replication_slots"),
        )?;
        // Only a standby needs it; asked after pg_stat_replication was read, so this short
        // walsender session never shows there as if it were a standby.
        let in_recovery = server
            .first()
            .and_then(|row| row.try_get::<_, bool>(0).ok())
            .unwrap_or(false);
        let replay_timeline = if in_recovery {
            match identify_system(spec, timeout).await {
                Ok(identity) => Some(identity.timeline),
                Err(e) => {
                    tracing::debug!(error = %e, "no replay timeline from IDENTIFY_SYSTEM");
                    None
                }
            }
        } else {
            None
        };
        assemble(&server, &receiver, &replication, &slots, replay_timeline)
    })
    .await
}

fn assemble(
    server: &[Row],
    receiver: &[Row],
    replication: &[Row],
    slots: &[Row],
    replay_timeline: Option<u32>,
) -> Result<PgStatus, PgError> {
    let row = server.first().ok_or_else(|| PgError::UnexpectedResult {
        what: "reading the server status".into(),
        detail: "no row".into(),
    })?;
    let in_recovery: bool = get(row, 0)?;
    let wal_receiver = receiver.first().map(wal_receiver).transpose()?;
    let primary_timeline: Option<i64> = get(row, 4)?;
    let checkpoint_timeline: i64 = get(row, 5)?;
    let as_tli = |t: i64| u32::try_from(t).unwrap_or_default();
    let (timeline, timeline_source) = member_timeline(
        primary_timeline.map(as_tli),
        replay_timeline.filter(|_| in_recovery),
        wal_receiver.as_ref().map(|r| r.received_tli),
        as_tli(checkpoint_timeline),
    );
    let server_version: i32 = get(row, 1)?;
    let system_identifier: i64 = get(row, 2)?;
    let read_only_setting: bool = get(row, 12)?;
    Ok(PgStatus {
        in_recovery,
        server_version: u32::try_from(server_version).unwrap_or_default(),
        // pg_control_system() shows the unsigned identifier as a signed bigint.
        system_identifier: system_identifier as u64,
        postmaster_start_time: get(row, 3)?,
        timeline,
        timeline_source,
        wal_lsn: lsn(row, 6)?,
        receive_lsn: lsn(row, 7)?,
        replay_lsn: lsn(row, 8)?,
        replay_timestamp: get(row, 9)?,
        replay_paused: get(row, 10)?,
        wal_receiver,
        replication: replication
            .iter()
            .map(replication_row)
            .collect::<Result<_, _>>()?,
        slots: slots.iter().map(slot_row).collect::<Result<_, _>>()?,
        pending_restart: get(row, 11)?,
        read_only: read_only_setting || in_recovery,
    })
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, PgError> {
    row.try_get(index)
        .map_err(|e| PgError::query(format!("reading column {index} of the status"), e))
}

fn lsn(row: &Row, index: usize) -> Result<Option<u64>, PgError> {
    Ok(get::<Option<String>>(row, index)?
        .as_deref()
        .and_then(parse_lsn))
}

fn wal_receiver(row: &Row) -> Result<WalReceiver, PgError> {
    let port: Option<i32> = get(row, 2)?;
    let received_tli: Option<i64> = get(row, 4)?;
    Ok(WalReceiver {
        status: get(row, 0)?,
        sender_host: get(row, 1)?,
        sender_port: port.and_then(|p| u16::try_from(p).ok()),
        slot_name: get(row, 3)?,
        received_tli: received_tli
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or_default(),
    })
}

fn replication_row(row: &Row) -> Result<ReplicationRow, PgError> {
    Ok(ReplicationRow {
        pid: get(row, 0)?,
        usename: get(row, 1)?,
        application_name: get(row, 2)?,
        client_addr: get(row, 3)?,
        state: get(row, 4)?,
        sync_state: get(row, 5)?,
        sync_priority: get(row, 6)?,
        replay_lsn: lsn(row, 7)?,
        flush_lsn: lsn(row, 8)?,
    })
}

fn slot_row(row: &Row) -> Result<SlotRow, PgError> {
    let retained: Option<i64> = get(row, 4)?;
    Ok(SlotRow {
        slot_name: get(row, 0)?,
        slot_type: get(row, 1)?,
        active: get(row, 2)?,
        restart_lsn: lsn(row, 3)?,
        retained_bytes: retained.map(|b| u64::try_from(b).unwrap_or_default()),
        wal_status: get(row, 5)?,
        safe_wal_size: get(row, 6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::WalReceiver;

    fn receiver(status: &str, sender: Option<&str>) -> WalReceiver {
        WalReceiver {
            status: status.into(),
            sender_host: sender.map(str::to_string),
            sender_port: sender.map(|_| 5432),
            slot_name: None,
            received_tli: 1,
        }
    }

    #[test]
    fn a_walreceiver_still_connecting_is_not_streaming() {
        let connecting = receiver("streaming", None);
        assert_eq!(connecting.state(), "starting");
        assert!(!connecting.is_streaming());
        let connected = receiver("streaming", Some("10.0.0.1"));
        assert_eq!(connected.state(), "streaming");
        assert!(connected.is_streaming());
        assert_eq!(receiver("waiting", None).state(), "waiting");
    }
}
