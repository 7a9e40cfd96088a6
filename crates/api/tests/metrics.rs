//! `/metrics`: Patroni's metric names labelled by scope and member, plus pgbaton's own.

mod common;

use common::*;
use pgbaton_api::SlotRow;

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn leader_metrics_use_patroni_names() {
    let mut s = leader();
    s.leader_changes = 2;
    s.slots = vec![SlotRow {
        slot_name: "node2".into(),
        slot_type: "physical".into(),
        active: true,
        restart_lsn: Some(OPTIME),
        retained_wal_bytes: Some(16 * MB),
        wal_status: Some("reserved".into()),
        safe_wal_size: Some(48 * MB as i64),
    }];
    let reply = get(&s, "/metrics").await;
    assert_eq!(reply.code.as_u16(), 200);
    assert!(reply
        .content_type
        .as_deref()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = reply.text();
    let l = r#"{scope="anchor",name="node1"}"#;
    for line in [
        format!("patroni_primary{l} 1"),
        format!("patroni_master{l} 1"),
        format!("patroni_replica{l} 0"),
        format!("patroni_postgres_running{l} 1"),
        format!("patroni_standby_leader{l} 0"),
        format!("patroni_sync_standby{l} 0"),
        format!("patroni_xlog_location{l} {OPTIME}"),
        format!("patroni_postgres_timeline{l} 3"),
        format!("patroni_postgres_server_version{l} 150008"),
        format!("patroni_cluster_unlocked{l} 0"),
        format!("patroni_failsafe_mode_is_active{l} 0"),
        format!("patroni_dcs_last_seen{l} 1795704730"),
        format!("patroni_postmaster_start_time{l} 1795704709.255275"),
        format!("pgbaton_leader_changes_total{l} 2"),
        format!("pgbaton_writable_leader{l} 1"),
        format!(
            r#"pgbaton_slot_retained_wal_bytes{{scope="anchor",name="node1",slot="node2"}} {}"#,
            16 * MB
        ),
        format!(
            r#"pgbaton_slot_safe_wal_size_bytes{{scope="anchor",name="node1",slot="node2"}} {}"#,
            48 * MB
        ),
        r#"pgbaton_slot_wal_status{scope="anchor",name="node1",slot="node2",wal_status="reserved"} 1"#.to_string(),
        "# TYPE patroni_primary gauge".to_string(),
        "# TYPE pgbaton_leader_changes counter".to_string(),
    ] {
        assert!(has_line(&text, &line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(r#"patroni_version{scope="anchor",name="node1"} "#));
    assert!(
        !text.contains("pgbaton_replication_lag_bytes{"),
        "a primary has no lag\n{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn replica_metrics_show_positions_and_lag() {
    let text = get(&replica("node3", 3 * MB), "/metrics").await.text();
    let l = r#"{scope="anchor",name="node3"}"#;
    for line in [
        format!("patroni_primary{l} 0"),
        format!("patroni_replica{l} 1"),
        format!("patroni_xlog_location{l} 0"),
        format!("patroni_xlog_received_location{l} {}", OPTIME - 3 * MB),
        format!("patroni_xlog_replayed_location{l} {}", OPTIME - 3 * MB),
        format!("patroni_xlog_paused{l} 0"),
        format!("pgbaton_replication_lag_bytes{l} {}", 3 * MB),
        format!("pgbaton_writable_leader{l} 0"),
        format!("patroni_postgres_streaming{l} 1"),
        format!("patroni_postgres_in_archive_recovery{l} 0"),
        format!("patroni_quorum_standby{l} 0"),
        format!("patroni_pending_restart{l} 0"),
        format!("patroni_is_paused{l} 0"),
        format!("patroni_postgres_state{l} 5"),
        format!("patroni_failover_priority{l} 1"),
        format!("patroni_failsafe_mode_enabled{l} 0"),
        format!("patroni_failsafe_member{l} 0"),
        format!("patroni_xlog_replayed_timestamp{l} 1795704662.232496"),
    ] {
        assert!(has_line(&text, &line), "missing {line:?} in\n{text}");
    }
    // 3 MB behind: the lag in seconds is the age of the last replayed transaction.
    let seconds: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("pgbaton_replication_lag_seconds{l} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pgbaton_replication_lag_seconds in\n{text}"));
    assert!(seconds > 0.0, "{seconds}");
}

#[tokio::test]
async fn unlocked_cluster_metric() {
    let mut s = stopped("node3");
    s.cluster.as_mut().unwrap().leader = None;
    let text = get(&s, "/metrics").await.text();
    assert!(
        has_line(
            &text,
            r#"patroni_cluster_unlocked{scope="anchor",name="node3"} 1"#
        ),
        "{text}"
    );
    assert!(
        has_line(
            &text,
            r#"patroni_postgres_running{scope="anchor",name="node3"} 0"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_replica_not_streaming_is_in_archive_recovery() {
    let mut s = replica("node3", 3 * MB);
    s.replication_state = None;
    let text = get(&s, "/metrics").await.text();
    let l = r#"{scope="anchor",name="node3"}"#;
    for line in [
        format!("patroni_postgres_streaming{l} 0"),
        format!("patroni_postgres_in_archive_recovery{l} 1"),
    ] {
        assert!(has_line(&text, &line), "missing {line:?} in\n{text}");
    }
}
