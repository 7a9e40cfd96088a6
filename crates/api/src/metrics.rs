//! `GET /metrics`: this member's status in the Prometheus/OpenMetrics text format, with
//! Patroni's metric names (so existing Grafana dashboards keep working) and pgbaton's own.
//!
//! The registry is built fresh from one [`NodeStatus`] snapshot per scrape: the agent loop
//! owns the numbers, the endpoint only formats them.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::checks::is_sync_standby;
use crate::lag::own_lag;
use crate::status::{NodeStatus, PgRole};

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric could not be written into the response text.
#[derive(Debug, thiserror::Error)]
#[error("could not encode the metrics text: {0}")]
pub struct MetricsError(#[from] std::fmt::Error);

/// The metrics text for one snapshot (ends with `# EOF`).
pub fn render(status: &NodeStatus) -> Result<String, MetricsError> {
    let labels = [
        (Cow::Borrowed("scope"), Cow::Owned(status.scope.clone())),
        (Cow::Borrowed("name"), Cow::Owned(status.name.clone())),
    ];
    let mut registry = Registry::with_labels(labels.into_iter());

    let primary = status.pg_running && status.pg_role == PgRole::Primary && status.holds_leader_key;
    let replica = status.pg_running && status.pg_role == PgRole::Replica;
    let unlocked = status.cluster.as_ref().is_some_and(|c| c.leader.is_none());
    let named_sync = is_sync_standby(status);
    let quorum = status
        .cluster
        .as_ref()
        .and_then(|c| c.sync.as_ref())
        .is_some_and(|k| k.value.quorum.is_some());
    let streaming = replica && status.replication_state.as_deref() == Some("streaming");
    let failsafe_enabled = status
        .cluster
        .as_ref()
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.value.get("failsafe_mode"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let failsafe_member = status
        .cluster
        .as_ref()
        .and_then(|c| c.failsafe.as_ref())
        .is_some_and(|f| f.contains_key(&status.name));
    let gauges: [(&str, &str, i64); 25] = [
        (
            "patroni_version",
            "Agent version without periods (Patroni's semver encoding).",
            version_number(&status.version),
        ),
        (
            "patroni_postgres_running",
            "1 when PostgreSQL is running, else 0.",
            i64::from(status.pg_running),
        ),
        (
            "patroni_primary",
            "1 when this member is the running primary holding the leader key.",
            i64::from(primary),
        ),
        (
            "patroni_master",
            "Same as patroni_primary (Patroni 3.0 name).",
            i64::from(primary),
        ),
        (
            "patroni_replica",
            "1 when PostgreSQL runs as a replica.",
            i64::from(replica),
        ),
        (
            "patroni_standby_leader",
            "1 when this member leads a standby cluster.",
            i64::from(status.standby_leader && status.pg_running),
        ),
        (
            "patroni_sync_standby",
            "1 when this member is a synchronous standby (synchronous_mode: on).",
            i64::from(named_sync && !quorum),
        ),
        (
            "patroni_quorum_standby",
            "1 when this member is a quorum standby (synchronous_mode: quorum).",
            i64::from(named_sync && quorum),
        ),
        (
            "patroni_postgres_streaming",
            "1 when this replica's WAL receiver streams from its upstream.",
            i64::from(streaming),
        ),
        (
            "patroni_postgres_in_archive_recovery",
            "1 when this replica runs without streaming from an upstream (replaying WAL it has or fetches with restore_command), as Patroni's replication_state 'in archive recovery'.",
            i64::from(replica && !streaming),
        ),
        (
            "patroni_pending_restart",
            "1 when PostgreSQL needs a restart for a changed parameter.",
            i64::from(status.pending_restart),
        ),
        (
            "patroni_is_paused",
            "1 when the cluster is in maintenance mode (pause).",
            i64::from(status.paused),
        ),
        (
            "patroni_xlog_location",
            "Current WAL write position on the primary.",
            lsn(status
                .wal_position
                .filter(|_| status.pg_role == PgRole::Primary)),
        ),
        (
            "patroni_xlog_received_location",
            "WAL position received by this replica.",
            lsn(status.received_location),
        ),
        (
            "patroni_xlog_replayed_location",
            "WAL position replayed by this replica.",
            lsn(status.replayed_location),
        ),
        (
            "patroni_xlog_paused",
            "1 when WAL replay is paused.",
            i64::from(status.replay_paused),
        ),
        (
            "patroni_postgres_timeline",
            "PostgreSQL timeline.",
            i64::from(status.timeline.unwrap_or(0)),
        ),
        (
            "patroni_postgres_server_version",
            "PostgreSQL version number (e.g. 150008).",
            i64::from(status.server_version.unwrap_or(0)),
        ),
        (
            "patroni_cluster_unlocked",
            "1 when the cluster has no leader key.",
            i64::from(unlocked),
        ),
        (
            "patroni_failsafe_mode_is_active",
            "1 when DCS failsafe mode is in force on this member.",
            i64::from(status.failsafe_active),
        ),
        (
            "patroni_failsafe_mode_enabled",
            "1 when failsafe_mode is on in the dynamic configuration.",
            i64::from(failsafe_enabled),
        ),
        (
            "patroni_failsafe_member",
            "1 when the failsafe key names this member (it may take part in failsafe mode).",
            i64::from(failsafe_member),
        ),
        (
            "patroni_failover_priority",
            "The failover_priority tag (1 when unset, 0 when nofailover).",
            failover_priority(status),
        ),
        (
            "patroni_postgres_state",
            "PostgreSQL's state as Patroni numbers it: 0 initdb, 1 initdb failed, 2 custom bootstrap, 3 custom bootstrap failed, 4 creating replica, 5 running, 6 starting, 7 bootstrap starting, 8 start failed, 9 restarting, 10 restart failed, 11 stopping, 12 stopped, 13 stop failed, 14 crashed, -1 other (pg_rewind, promoting, halted).",
            postgres_state(&status.state),
        ),
        (
            "pgbaton_writable_leader",
            "1 when PostgreSQL is writable and this member holds an unexpired leader lease.",
            i64::from(status.writable_leader),
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }

    let start_time = Gauge::<f64, AtomicU64>::default();
    start_time.set(
        status
            .postmaster_start_time
            .as_deref()
            .and_then(epoch_seconds)
            .unwrap_or(0.0),
    );
    registry.register(
        "patroni_postmaster_start_time",
        "Epoch seconds when PostgreSQL started.",
        start_time,
    );

    let replayed_at = status
        .replayed_timestamp
        .as_deref()
        .and_then(epoch_seconds)
        .filter(|_| replica);
    let replayed_timestamp = Gauge::<f64, AtomicU64>::default();
    replayed_timestamp.set(replayed_at.unwrap_or(0.0));
    registry.register(
        "patroni_xlog_replayed_timestamp",
        "Epoch seconds of the last transaction this replica replayed, 0 if none.",
        replayed_timestamp,
    );

    let dcs_last_seen = Gauge::<i64>::default();
    dcs_last_seen.set(
        status
            .dcs_last_seen
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
    );
    registry.register(
        "patroni_dcs_last_seen",
        "Epoch seconds of the last successful DCS read.",
        dcs_last_seen,
    );

    let leader_changes = Counter::<u64>::default();
    leader_changes.inc_by(status.leader_changes);
    registry.register(
        "pgbaton_leader_changes",
        "Leader changes this agent observed since it started.",
        leader_changes,
    );

    if let Some(lag) = own_lag(status).filter(|_| status.pg_role == PgRole::Replica) {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(lag).unwrap_or(i64::MAX));
        registry.register(
            "pgbaton_replication_lag_bytes",
            "Bytes this replica is behind the leader's last known position.",
            gauge,
        );
        let seconds = Gauge::<f64, AtomicU64>::default();
        seconds.set(lag_seconds(lag, replayed_at, status.last_cycle_unix_ms));
        registry.register(
            "pgbaton_replication_lag_seconds",
            "Seconds this replica is behind: 0 when it holds the leader's last known position, else the age of the last transaction it replayed.",
            seconds,
        );
    }

    let slots = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    for slot in &status.slots {
        if let Some(bytes) = slot.retained_wal_bytes {
            slots
                .get_or_create(&vec![("slot".to_string(), slot.slot_name.clone())])
                .set(lsn(Some(bytes)));
        }
    }
    registry.register(
        "pgbaton_slot_retained_wal_bytes",
        "WAL bytes a replication slot keeps on this member.",
        slots,
    );

    let safe = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    let wal_status = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    for slot in &status.slots {
        if let Some(bytes) = slot.safe_wal_size {
            safe.get_or_create(&vec![("slot".to_string(), slot.slot_name.clone())])
                .set(bytes);
        }
        if let Some(word) = &slot.wal_status {
            wal_status
                .get_or_create(&vec![
                    ("slot".to_string(), slot.slot_name.clone()),
                    ("wal_status".to_string(), word.clone()),
                ])
                .set(1);
        }
    }
    registry.register(
        "pgbaton_slot_safe_wal_size_bytes",
        "Bytes of WAL that can still be written before a replication slot may be invalidated (max_slot_wal_keep_size); absent when unlimited.",
        safe,
    );
    registry.register(
        "pgbaton_slot_wal_status",
        "1 for each replication slot, labelled with its wal_status (reserved, extended, unreserved, lost: invalidated).",
        wal_status,
    );

    if let Some(logical) = &status.logical {
        register_logical(&mut registry, logical);
    }

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

type Labels = Vec<(String, String)>;

/// The leader's declared publications and subscriptions (`logical:`).
fn register_logical(registry: &mut Registry, logical: &crate::status::LogicalStatus) {
    let up = Family::<Labels, Gauge<i64>>::default();
    let lag_bytes = Family::<Labels, Gauge<i64>>::default();
    let lag_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let apply_errors = Family::<Labels, Counter<u64>>::default();
    let sync_errors = Family::<Labels, Counter<u64>>::default();
    for s in &logical.subscriptions {
        let labels = vec![("subscription".to_string(), s.name.clone())];
        up.get_or_create(&labels)
            .set(i64::from(s.state == "streaming"));
        if let Some(b) = s.lag_bytes {
            lag_bytes.get_or_create(&labels).set(lsn(Some(b)));
        }
        if let Some(secs) = s.lag_seconds {
            lag_seconds.get_or_create(&labels).set(secs);
        }
        apply_errors
            .get_or_create(&labels)
            .inc_by(u64::try_from(s.apply_error_count).unwrap_or(0));
        sync_errors
            .get_or_create(&labels)
            .inc_by(u64::try_from(s.sync_error_count).unwrap_or(0));
    }
    registry.register(
        "pgbaton_logical_subscription_streaming",
        "1 when a declared subscription's apply worker streams from its publisher, else 0.",
        up,
    );
    registry.register(
        "pgbaton_logical_subscription_lag_bytes",
        "Bytes a declared subscription received but has not confirmed to its publisher.",
        lag_bytes,
    );
    registry.register(
        "pgbaton_logical_subscription_last_message_age_seconds",
        "Seconds since a declared subscription last heard from its publisher.",
        lag_seconds,
    );
    registry.register(
        "pgbaton_logical_subscription_apply_errors",
        "Apply errors of a declared subscription (pg_stat_subscription_stats).",
        apply_errors,
    );
    registry.register(
        "pgbaton_logical_subscription_sync_errors",
        "Initial table copy errors of a declared subscription (pg_stat_subscription_stats).",
        sync_errors,
    );

    let slot_bytes = Family::<Labels, Gauge<i64>>::default();
    let slot_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for p in &logical.publications {
        for sub in &p.subscribers {
            let labels = vec![
                ("publication".to_string(), p.name.clone()),
                ("slot".to_string(), sub.slot.clone()),
            ];
            if let Some(b) = sub.lag_bytes {
                slot_bytes.get_or_create(&labels).set(lsn(Some(b)));
            }
            if let Some(secs) = sub.lag_seconds {
                slot_seconds.get_or_create(&labels).set(secs);
            }
        }
    }
    registry.register(
        "pgbaton_logical_subscriber_lag_bytes",
        "Publisher side: WAL bytes a subscriber's slot has not confirmed.",
        slot_bytes,
    );
    registry.register(
        "pgbaton_logical_subscriber_lag_seconds",
        "Publisher side: the subscriber walsender's replay_lag.",
        slot_seconds,
    );
    let problems = Gauge::<i64>::default();
    problems.set(i64::try_from(logical.problems.len()).unwrap_or(i64::MAX));
    registry.register(
        "pgbaton_logical_problems",
        "Problems `ctl logical check` reports (tables without replica identity, missing tables or columns, sequences, slots that would not survive a failover).",
        problems,
    );
}

/// Patroni's numbering of the state word (`patroni_postgres_state`).
fn postgres_state(state: &str) -> i64 {
    match state {
        "initializing new cluster" => 0,
        "initdb failed" => 1,
        "running custom bootstrap script" => 2,
        "custom bootstrap failed" => 3,
        "creating replica" => 4,
        "running" => 5,
        "starting" => 6,
        "bootstrap starting" => 7,
        "start failed" => 8,
        "restarting" => 9,
        "restart failed" => 10,
        "stopping" => 11,
        "stopped" => 12,
        "stop failed" => 13,
        "crashed" => 14,
        _ => -1,
    }
}

/// The `failover_priority` tag as Patroni reads it: 0 with nofailover, 1 when unset.
fn failover_priority(status: &NodeStatus) -> i64 {
    if crate::checks::tag_true(status.tags.get("nofailover")) {
        return 0;
    }
    match status.tags.get("failover_priority") {
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(1),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(1),
        _ => 1,
    }
}

/// Lag in seconds: none while the replica holds everything the leader last reported, else
/// how old the last replayed transaction is (as of the agent's last cycle). An idle primary
/// writes no transactions, so the age alone would grow without any lag: the byte lag decides
/// whether there is lag at all.
pub fn lag_seconds(lag_bytes: u64, replayed_at: Option<f64>, now_unix_ms: u64) -> f64 {
    match replayed_at {
        Some(at) if lag_bytes > 0 => (now_unix_ms as f64 / 1000.0 - at).max(0.0),
        _ => 0.0,
    }
}

/// An LSN or byte count as a gauge value (0 when unknown, like Patroni).
fn lsn(value: Option<u64>) -> i64 {
    value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Patroni's `patroni_version`: `3.0.2` → 30002 (two digits per minor and patch).
fn version_number(version: &str) -> i64 {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<i64>()
            .unwrap_or(0)
    });
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    let patch = parts.next().unwrap_or(0);
    major * 10_000 + minor * 100 + patch
}

/// PostgreSQL's `pg_postmaster_start_time()` text (`2026-11-26 14:51:49.255275+00:00`, or
/// with `+00`) or RFC 3339, as epoch seconds.
fn epoch_seconds(text: &str) -> Option<f64> {
    Some(pgbaton_core::pg_text::timestamp_micros(text)? as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_seconds_only_counts_when_bytes_are_behind() {
        assert_eq!(lag_seconds(0, Some(1_000.0), 1_500_000), 0.0);
        assert_eq!(lag_seconds(4096, Some(1_000.0), 1_002_500), 2.5);
        assert_eq!(lag_seconds(4096, None, 1_002_500), 0.0);
    }

    #[test]
    fn logical_replication_metrics() {
        use crate::status::{LogicalStatus, PublicationRow, SubscriberSlotRow, SubscriptionRow};
        let mut status = NodeStatus::starting("s", "n", 30_000);
        status.logical = Some(LogicalStatus {
            publications: vec![PublicationRow {
                name: "app_pub".into(),
                database: "postgres".into(),
                state: "present".into(),
                subscribers: vec![SubscriberSlotRow {
                    slot: "app_sub".into(),
                    active: true,
                    lag_bytes: Some(128),
                    lag_seconds: Some(0.25),
                    permanent: true,
                }],
            }],
            subscriptions: vec![SubscriptionRow {
                name: "app_sub".into(),
                database: "postgres".into(),
                state: "error".into(),
                enabled: true,
                tables_syncing: 0,
                lag_bytes: Some(0),
                lag_seconds: Some(1.5),
                apply_error_count: 3,
                sync_error_count: 0,
                last_error: Some("duplicate key".into()),
            }],
            problems: vec![],
            checked_at: 0,
        });
        let text = render(&status).expect("render");
        for line in [
            "pgbaton_logical_subscription_streaming{scope=\"s\",name=\"n\",subscription=\"app_sub\"} 0",
            "pgbaton_logical_subscription_apply_errors_total{scope=\"s\",name=\"n\",subscription=\"app_sub\"} 3",
            "pgbaton_logical_subscriber_lag_bytes{scope=\"s\",name=\"n\",publication=\"app_pub\",slot=\"app_sub\"} 128",
            "pgbaton_logical_problems{scope=\"s\",name=\"n\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn version_and_start_time_encodings() {
        assert_eq!(version_number("3.0.2"), 30002);
        assert_eq!(version_number("0.1.0"), 100);
        assert_eq!(version_number("1.12.3-dev"), 11203);
        assert_eq!(
            epoch_seconds("2026-11-26 14:51:49.5+00:00"),
            Some(1795704709.5)
        );
        assert_eq!(
            epoch_seconds("2026-11-26 14:51:49.5+00"),
            Some(1795704709.5)
        );
        assert_eq!(epoch_seconds("2026-11-26T14:51:49.5Z"), Some(1795704709.5));
        assert_eq!(epoch_seconds("yesterday"), None);
    }
}
