//! Permanent logical slots on real PostgreSQL 15: created on the primary, copied to a replica
//! from the primary's state file, advanced there, and still at the consumer's position after
//! the primary is killed and the replica promoted (no change lost, none of the consumed ones
//! sent again).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{eventually, hba, sql, start, streaming, test_parameters, upstream, wal_lsn, Sandbox};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use pgbaton_postgres::{
    advance_slot, basebackup, ensure_logical_slots, ensure_users, feedback_catalog_xmin,
    format_lsn, initdb, install_slot_state, logical_slot_positions, oldest_wal_lsn,
    parse_slot_state, promote, query_status, read_slot_state, slot_name_for, sync_physical_slots,
    write_config, xid_precedes_or_equals, LogicalSlotSpec, PgError, PgSpec, Postmaster,
    StandbyConfig, StopMode,
};

const T: Duration = Duration::from_secs(10);
const SLOT: &str = "consumer";

/// The test parameters plus what logical slot copies need.
fn logical_parameters() -> BTreeMap<String, String> {
    let mut parameters = test_parameters();
    parameters.insert("wal_level".into(), "logical".into());
    parameters.insert("hot_standby_feedback".into(), "on".into());
    parameters
}

fn slot(name: &str, database: &str, plugin: &str) -> LogicalSlotSpec {
    LogicalSlotSpec {
        name: name.into(),
        database: database.into(),
        plugin: plugin.into(),
    }
}

async fn bootstrap(spec: &PgSpec, parameters: &BTreeMap<String, String>) -> Postmaster {
    initdb(spec, &[]).await.expect("initdb");
    write_config(spec, parameters, &hba(), None).expect("write_config");
    let postmaster = start(spec).await;
    ensure_users(spec, &[], T).await.expect("ensure_users");
    postmaster
}

async fn confirmed_flush(spec: &PgSpec) -> u64 {
    logical_slot_positions(spec, T)
        .await
        .expect("slot positions")
        .get(SLOT)
        .and_then(|p| p.confirmed_flush)
        .expect("the slot has a confirmed_flush_lsn")
}

/// Advances the replica's copy to `lsn`, calling again (as the agent does every cycle) while
/// it falls short: a standby stops at what it has replayed.
async fn advance_until(replica: &PgSpec, lsn: u64) {
    eventually("the copy to reach the primary's position", T, || async {
        let reached = advance_slot(replica, SLOT, "postgres", lsn, T)
            .await
            .expect("advance_slot on the replica");
        assert!(reached <= lsn, "never past the primary's position");
        (reached == lsn).then_some(())
    })
    .await;
}

/// Consumes the slot's changes (of the transactions committed before `upto`, if given) and
/// returns the values inserted into table t.
async fn consume(spec: &PgSpec, upto: Option<u64>) -> Vec<i32> {
    let client = pgbaton_postgres::connect(spec, T).await.expect("connect");
    let upto = upto.map(format_lsn);
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_changes($1, $2::text::pg_lsn, NULL)",
            &[&SLOT, &upto],
        )
        .await
        .expect("pg_logical_slot_get_changes");
    rows.iter()
        .filter_map(|row| {
            let data: String = row.get(0);
            data.strip_prefix("table public.t: INSERT: x[integer]:")
                .map(|x| x.parse().expect("an integer"))
        })
        .collect()
}

#[tokio::test]
async fn logical_slot_survives_failover_without_losing_changes() {
    let sandbox = Sandbox::new();
    let node1 = sandbox.member("node1");
    let node2 = sandbox.member("node2");
    let mut pm1 = bootstrap(&node1, &logical_parameters()).await;

    // The leader keeps a physical slot for the replica and the permanent logical slot.
    let physical = slot_name_for("node2");
    sync_physical_slots(
        &node1,
        &BTreeSet::from([physical.clone()]),
        &BTreeSet::new(),
        T,
    )
    .await
    .expect("physical slot");
    sql(&node1, "CREATE TABLE t (x int PRIMARY KEY)").await;
    let wanted = [slot(SLOT, "postgres", "test_decoding")];
    let created = ensure_logical_slots(&node1, &wanted, T)
        .await
        .expect("ensure_logical_slots");
    assert_eq!(created, vec![SLOT.to_string()]);

    // The replica streams through its physical slot, with hot_standby_feedback.
    basebackup(&node2, &upstream(&node1), &[])
        .await
        .expect("basebackup");
    let standby = StandbyConfig {
        upstream: Some(upstream(&node1)),
        slot_name: Some(physical.clone()),
        apply_delay: None,
    };
    write_config(&node2, &logical_parameters(), &hba(), Some(&standby)).expect("write_config");
    let mut pm2 = start(&node2).await;
    streaming(&node2).await;

    // Rows 1..5 then 6..10 are written; the consumer has not read them yet.
    sql(&node1, "INSERT INTO t SELECT generate_series(1, 5)").await;
    let after_five = wal_lsn(&node1).await;
    sql(&node1, "INSERT INTO t SELECT generate_series(6, 10)").await;
    let rewinder = node1.rewind.clone().expect("rewind credentials");

    // A copy made now is useless: the slot's restart_lsn (its creation) is older than the
    // clone, whose pg_wal starts at a segment switched to after it.
    let stale = read_slot_state(&upstream(&node1), &rewinder, SLOT, T)
        .await
        .expect("read_slot_state");
    let parsed = parse_slot_state(SLOT, &stale).expect("a valid state file");
    assert_eq!(parsed.plugin, "test_decoding");
    assert!(parsed.confirmed_flush <= confirmed_flush(&node1).await);
    let oldest = oldest_wal_lsn(&node2).expect("pg_wal").expect("some WAL");
    assert!(
        parsed.restart_lsn < oldest,
        "the clone lacks the slot's WAL"
    );
    let err = install_slot_state(&node2, SLOT, &stale).expect_err("replica is running");
    assert!(matches!(err, PgError::AlreadyRunning { .. }), "{err}");
    pm2.stop(StopMode::Fast, T).await.expect("stop replica");
    let err = install_slot_state(&node2, SLOT, &stale).expect_err("WAL missing");
    assert!(matches!(err, PgError::SlotWalMissing { .. }), "{err}");
    assert!(!node2.data_dir.join("pg_replslot").join(SLOT).exists());

    // The consumer reads rows 1..5: the slot's restart_lsn moves (and is saved at once).
    assert_eq!(consume(&node1, Some(after_five)).await, vec![1, 2, 3, 4, 5]);

    // Copy the slot now: read its state file (as the rewind role, as Patroni does) and
    // install it while the replica is stopped.
    let state = read_slot_state(&upstream(&node1), &rewinder, SLOT, T)
        .await
        .expect("read_slot_state");
    assert!(parse_slot_state(SLOT, &state).expect("valid").restart_lsn >= oldest);
    install_slot_state(&node2, SLOT, &state).expect("install_slot_state");
    let slot_dir = node2.data_dir.join("pg_replslot").join(SLOT);
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::fs::metadata(&slot_dir).expect("slot dir");
        let file = std::fs::metadata(slot_dir.join("state")).expect("state file");
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        assert_eq!(file.permissions().mode() & 0o777, 0o600);
        let postgres = nix::unistd::User::from_name(common::OS_USER)
            .expect("lookup")
            .expect("postgres user");
        assert_eq!(
            (dir.uid(), file.uid()),
            (postgres.uid.as_raw(), postgres.uid.as_raw())
        );
    }
    let mut pm2 = start(&node2).await;
    streaming(&node2).await;
    let copy = logical_slot_positions(&node2, T)
        .await
        .expect("replica slots")
        .remove(SLOT)
        .expect("the replica loaded the copied slot");
    assert_eq!(
        (copy.database.as_str(), copy.plugin.as_str()),
        ("postgres", "test_decoding")
    );

    // The consumer reads rows 6..10 on the primary: its confirmed position moves past the
    // copy's, so without the advance below the new primary would send rows 6..10 again.
    assert_eq!(consume(&node1, None).await, vec![6, 7, 8, 9, 10]);
    let confirmed = confirmed_flush(&node1).await;
    assert!(copy.confirmed_flush.expect("copy position") < confirmed);

    // Advance the copy to what the consumer confirmed on the primary.
    advance_until(&node2, confirmed).await;
    assert_eq!(confirmed_flush(&node2).await, confirmed);

    // The primary now holds the catalog rows the copy needs, through the replica's feedback.
    let copy_xmin = copy.catalog_xmin.expect("the copy has a catalog_xmin");
    eventually("hot_standby_feedback to cover the copy", T, || async {
        let held = feedback_catalog_xmin(&upstream(&node1), &rewinder, &physical, T)
            .await
            .expect("feedback_catalog_xmin")?;
        xid_precedes_or_equals(held, copy_xmin).then_some(())
    })
    .await;

    // Rows 11..20 are written but not consumed; the replica replays them.
    sql(&node1, "INSERT INTO t SELECT generate_series(11, 20)").await;
    let target = wal_lsn(&node1).await;
    eventually(
        "the replica to replay rows 11..20",
        Duration::from_secs(20),
        || async { (query_status(&node2, T).await.ok()?.replay_lsn? >= target).then_some(()) },
    )
    .await;
    // Advancing again (as the agent does every cycle) keeps the copy at the consumer's
    // position: nothing more was consumed, so it stays put.
    let confirmed = confirmed_flush(&node1).await;
    advance_until(&node2, confirmed).await;

    // Failover: kill -9 the primary, promote the replica.
    killpg(Pid::from_raw(pm1.pid() as i32), Signal::SIGKILL).expect("kill -9 the primary");
    pm1.wait_exit().await;
    promote(&node2, T).await.expect("promote");

    // The consumer resumes on the new primary: every row it did not confirm, none it did.
    let after = confirmed_flush(&node2).await;
    assert!(
        after >= confirmed,
        "the promoted copy kept the advanced position"
    );
    assert_eq!(consume(&node2, None).await, (11..=20).collect::<Vec<_>>());

    pm2.stop(StopMode::Fast, T).await.expect("stop node2");
}

#[tokio::test]
async fn ensure_logical_slots_is_idempotent_and_reports_mismatches() {
    let sandbox = Sandbox::new();
    let node = sandbox.member("node1");
    let mut pm = bootstrap(&node, &logical_parameters()).await;
    sql(&node, "CREATE DATABASE app").await;

    let wanted = [
        slot("in_postgres", "postgres", "test_decoding"),
        slot("in_app", "app", "test_decoding"),
    ];
    let created = ensure_logical_slots(&node, &wanted, T)
        .await
        .expect("create");
    assert_eq!(
        created,
        vec!["in_postgres".to_string(), "in_app".to_string()]
    );
    let created = ensure_logical_slots(&node, &wanted, T)
        .await
        .expect("again");
    assert!(created.is_empty(), "idempotent: {created:?}");
    let positions = logical_slot_positions(&node, T).await.expect("positions");
    assert_eq!(positions.len(), 2);
    assert_eq!(positions["in_app"].database, "app");
    assert_eq!(positions["in_app"].plugin, "test_decoding");
    assert!(positions["in_app"].confirmed_flush.is_some());

    // Another plugin: reported, never dropped; the other wanted slots are still created.
    let err = ensure_logical_slots(
        &node,
        &[
            slot("in_postgres", "postgres", "pgoutput"),
            slot("also_new", "postgres", "test_decoding"),
        ],
        T,
    )
    .await
    .expect_err("mismatched plugin");
    let message = err.to_string();
    assert!(matches!(err, PgError::SlotMismatch { ref slot, .. } if slot == "in_postgres"));
    assert!(
        message.contains("pgoutput") && message.contains("test_decoding"),
        "{message}"
    );
    let positions = logical_slot_positions(&node, T).await.expect("positions");
    assert_eq!(
        positions["in_postgres"].plugin, "test_decoding",
        "kept as it was"
    );
    assert!(positions.contains_key("also_new"));

    // Another database, a physical slot of that name, a missing database.
    let err = ensure_logical_slots(&node, &[slot("in_app", "postgres", "test_decoding")], T)
        .await
        .expect_err("mismatched database");
    assert!(err.to_string().contains("database \"app\""), "{err}");
    sql(&node, "SELECT pg_create_physical_replication_slot('phys')").await;
    let err = ensure_logical_slots(&node, &[slot("phys", "postgres", "test_decoding")], T)
        .await
        .expect_err("physical slot");
    assert!(err.to_string().contains("a physical slot"), "{err}");
    let err = ensure_logical_slots(&node, &[slot("nodb", "missing", "test_decoding")], T)
        .await
        .expect_err("missing database");
    assert!(
        matches!(err, PgError::SlotDatabaseMissing { ref slot, ref database } if slot == "nodb" && database == "missing"),
        "{err}"
    );
    let err = ensure_logical_slots(&node, &[slot("Bad-Name", "postgres", "test_decoding")], T)
        .await
        .expect_err("invalid name");
    assert!(matches!(err, PgError::Invalid { .. }), "{err}");

    // Slots that do not exist are named as such.
    let err = advance_slot(&node, "nope", "postgres", 1, T)
        .await
        .expect_err("no such slot");
    assert!(matches!(err, PgError::SlotMissing { .. }), "{err}");
    let superuser = node.superuser.clone();
    let err = read_slot_state(&upstream(&node), &superuser, "nope", T)
        .await
        .expect_err("no such slot");
    assert!(matches!(err, PgError::SlotMissing { .. }), "{err}");

    pm.stop(StopMode::Fast, T).await.expect("stop");
}

#[tokio::test]
async fn wal_level_replica_is_reported() {
    let sandbox = Sandbox::new();
    let node = sandbox.member("node1");
    let mut pm = bootstrap(&node, &test_parameters()).await;
    let err = ensure_logical_slots(&node, &[slot("s", "postgres", "test_decoding")], T)
        .await
        .expect_err("wal_level replica");
    assert!(matches!(err, PgError::WalLevelNotLogical { .. }), "{err}");
    assert!(err.to_string().contains("wal_level = logical"), "{err}");
    pm.stop(StopMode::Fast, T).await.expect("stop");
}
