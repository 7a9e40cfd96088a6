//! The whole replication life cycle on real PostgreSQL 15: bootstrap a primary, clone and
//! stream a replica through a slot, promote it, rewind the diverged old primary and make it
//! stream from the new one.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, hba, sql, start, streaming, test_parameters, upstream, wal_lsn, Sandbox};
use pgbaton_postgres::{
    basebackup, checkpoint, data_dir_state, ensure_users, initdb, promote, query_status, rewind,
    slot_name_for, sync_physical_slots, write_config, DataDirState, PgSpec, RewindOutcome,
    StandbyConfig, StopMode,
};

const T: Duration = Duration::from_secs(10);

fn standby_of(spec: &PgSpec, member: &str) -> StandbyConfig {
    StandbyConfig {
        upstream: Some(upstream(spec)),
        slot_name: Some(slot_name_for(member)),
        apply_delay: None,
    }
}

#[tokio::test]
async fn primary_replica_promote_rewind_rejoin() {
    let sandbox = Sandbox::new();
    let node1 = sandbox.member("node1");
    let node2 = sandbox.member("node2");

    // Bootstrap the primary.
    initdb(&node1, &["--data-checksums".into()])
        .await
        .expect("initdb");
    write_config(&node1, &test_parameters(), &hba(), None).expect("write_config");
    assert!(node1.data_dir.join("postgresql.base.conf").exists());
    let mut pm1 = start(&node1).await;

    let status = query_status(&node1, T)
        .await
        .expect("status of the primary");
    assert!(!status.in_recovery);
    assert!(!status.read_only);
    assert_eq!(status.timeline, 1);
    assert!(status.wal_lsn.is_some());
    assert!(status.server_version >= 150000 && status.server_version < 160000);
    assert!(status.wal_receiver.is_none());

    let users = vec![(
        "admin".to_string(),
        Some("admin-pw".to_string()),
        vec!["createdb".to_string()],
    )];
    ensure_users(&node1, &users, T).await.expect("ensure_users");
    ensure_users(&node1, &users, T)
        .await
        .expect("ensure_users is idempotent");

    // Slots: create node2's, drop it when no longer wanted, then create it for the clone.
    let keep = BTreeSet::from(["permanent".to_string()]);
    sql(
        &node1,
        "SELECT pg_create_physical_replication_slot('permanent')",
    )
    .await;
    let wanted = BTreeSet::from([slot_name_for("node2")]);
    let changes = sync_physical_slots(&node1, &wanted, &keep, T)
        .await
        .expect("sync slots");
    assert_eq!(
        (changes.created, changes.dropped),
        (vec!["node2".to_string()], vec![])
    );
    let changes = sync_physical_slots(&node1, &BTreeSet::new(), &keep, T)
        .await
        .expect("sync slots");
    assert_eq!(
        (changes.created, changes.dropped),
        (vec![], vec!["node2".to_string()])
    );
    let changes = sync_physical_slots(&node1, &wanted, &keep, T)
        .await
        .expect("sync slots");
    assert_eq!(changes.created, vec!["node2".to_string()]);
    let slots = query_status(&node1, T).await.expect("status").slots;
    assert!(
        slots.iter().any(|s| s.slot_name == "permanent"),
        "kept slot survives"
    );

    // Clone node2 and stream.
    sql(&node1, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await;
    basebackup(&node2, &upstream(&node1), &[])
        .await
        .expect("basebackup");
    assert!(matches!(
        data_dir_state(&node2).expect("state"),
        DataDirState::Initialized(_)
    ));
    write_config(
        &node2,
        &test_parameters(),
        &hba(),
        Some(&standby_of(&node1, "node2")),
    )
    .expect("write_config");
    assert!(node2.data_dir.join("standby.signal").exists());
    let mut pm2 = start(&node2).await;
    let status = streaming(&node2).await;
    assert!(status.read_only);
    assert_eq!(status.timeline, 1);
    let receiver = status.wal_receiver.expect("wal receiver");
    assert_eq!(receiver.slot_name.as_deref(), Some("node2"));
    assert_eq!(receiver.sender_port, Some(node1.port));
    let before = status.receive_lsn.expect("receive_lsn");

    sql(&node1, "INSERT INTO t SELECT generate_series(1, 1000)").await;
    let target = wal_lsn(&node1).await;
    eventually(
        "receive_lsn to advance",
        Duration::from_secs(20),
        || async {
            let lsn = query_status(&node2, T).await.ok()?.receive_lsn?;
            (lsn >= target && lsn > before).then_some(())
        },
    )
    .await;
    let primary = query_status(&node1, T).await.expect("status");
    let row = primary
        .replication
        .iter()
        .find(|r| r.application_name == "node2")
        .expect("replication row");
    assert_eq!(row.usename, "replicator");
    assert_eq!(row.state, "streaming");
    assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
    let slot = primary
        .slots
        .iter()
        .find(|s| s.slot_name == "node2")
        .expect("slot row");
    assert!(slot.active && slot.retained_bytes.is_some());

    // Promote node2: timeline 2.
    promote(&node2, T).await.expect("promote");
    let status = query_status(&node2, T)
        .await
        .expect("status of the new primary");
    assert!(!status.in_recovery);
    assert_eq!(status.timeline, 2);

    // The old primary takes a write the new one never sees, then stops: it diverged.
    sql(&node1, "INSERT INTO t VALUES (-1)").await;
    checkpoint(&node1, T).await.expect("checkpoint");
    pm1.stop(StopMode::Fast, T).await.expect("stop fast");
    assert!(pm1.has_exited());

    // Rewind from the new primary (freshly promoted: rewind checkpoints it first) and rejoin.
    let outcome = rewind(&node1, &upstream(&node2)).await.expect("rewind");
    assert_eq!(outcome, RewindOutcome::Rewound);
    sync_physical_slots(
        &node2,
        &BTreeSet::from([slot_name_for("node1")]),
        &BTreeSet::new(),
        T,
    )
    .await
    .expect("slot for node1");
    write_config(
        &node1,
        &test_parameters(),
        &hba(),
        Some(&standby_of(&node2, "node1")),
    )
    .expect("write_config");
    let mut pm1 = start(&node1).await;
    let status = streaming(&node1).await;
    assert_eq!(status.timeline, 2);

    // The write only the old primary had is gone; new writes arrive.
    sql(&node2, "INSERT INTO t VALUES (1000000)").await;
    let target = wal_lsn(&node2).await;
    eventually(
        "node1 to replay node2's write",
        Duration::from_secs(20),
        || async { (query_status(&node1, T).await.ok()?.replay_lsn? >= target).then_some(()) },
    )
    .await;
    let client = pgbaton_postgres::connect(&node1, T).await.expect("connect");
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE x = -1), count(*) FILTER (WHERE x = 1000000) FROM t",
            &[],
        )
        .await
        .expect("query");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 1));

    pm1.stop(StopMode::Fast, T).await.expect("stop node1");
    pm2.stop(StopMode::Fast, T).await.expect("stop node2");
}
