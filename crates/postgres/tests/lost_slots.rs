//! A physical slot PostgreSQL invalidated (`max_slot_wal_keep_size`: `wal_status = 'lost'`)
//! is shown as such, then dropped and created again by slot maintenance, on real PostgreSQL 15.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{hba, sql, start, test_parameters, Sandbox};
use pgbaton_postgres::{
    initdb, query_status, slot_name_for, sync_physical_slots, write_config, SlotRow,
};

const T: Duration = Duration::from_secs(10);

fn slot<'a>(slots: &'a [SlotRow], name: &str) -> &'a SlotRow {
    slots
        .iter()
        .find(|s| s.slot_name == name)
        .unwrap_or_else(|| panic!("no slot {name} in {slots:?}"))
}

#[tokio::test]
async fn a_lost_slot_is_reported_then_dropped_and_created_again() {
    let sandbox = Sandbox::new();
    let node1 = sandbox.member("node1");
    initdb(&node1, &[]).await.expect("initdb");
    let mut params = test_parameters();
    params.insert("wal_keep_size".into(), "0".into());
    params.insert("max_wal_size".into(), "32MB".into());
    params.insert("min_wal_size".into(), "32MB".into());
    params.insert("max_slot_wal_keep_size".into(), "16MB".into());
    write_config(&node1, &params, &hba(), None).expect("write_config");
    let _pm = start(&node1).await;

    let name = slot_name_for("node2");
    let wanted = BTreeSet::from([name.clone()]);
    let changes = sync_physical_slots(&node1, &wanted, &BTreeSet::new(), T)
        .await
        .expect("create the slot");
    assert_eq!(changes.created, vec![name.clone()]);
    let status = query_status(&node1, T).await.expect("status");
    let row = slot(&status.slots, &name);
    assert_eq!(row.wal_status.as_deref(), Some("reserved"));
    assert!(
        row.safe_wal_size.is_some_and(|b| b > 0),
        "max_slot_wal_keep_size is set: {row:?}"
    );

    // Nobody consumes it: past max_slot_wal_keep_size, a checkpoint invalidates it.
    for _ in 0..4 {
        sql(
            &node1,
            "CREATE TABLE IF NOT EXISTS f (x int); INSERT INTO f SELECT generate_series(1, 1000); SELECT pg_switch_wal();",
        )
        .await;
    }
    sql(&node1, "CHECKPOINT").await;
    let status = query_status(&node1, T).await.expect("status");
    let row = slot(&status.slots, &name);
    assert_eq!(row.wal_status.as_deref(), Some("lost"), "{row:?}");
    assert_eq!(row.safe_wal_size, None);

    // Maintenance drops and creates it again: it reserves WAL from now on.
    let changes = sync_physical_slots(&node1, &wanted, &BTreeSet::new(), T)
        .await
        .expect("recreate the slot");
    assert_eq!(changes.recreated, vec![name.clone()]);
    assert!(changes.created.is_empty() && changes.dropped.is_empty());
    let status = query_status(&node1, T).await.expect("status");
    let row = slot(&status.slots, &name);
    assert_eq!(row.wal_status.as_deref(), Some("reserved"), "{row:?}");
    assert!(row.restart_lsn.is_some());

    // A healthy slot is left alone.
    let changes = sync_physical_slots(&node1, &wanted, &BTreeSet::new(), T)
        .await
        .expect("nothing to do");
    assert_eq!(changes, Default::default());
}
