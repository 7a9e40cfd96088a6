//! A member's timeline right after a timeline switch, on real PostgreSQL 15: a replica that
//! followed a newly promoted primary onto timeline 2 and then lost it (no WAL receiver any
//! more, no restartpoint yet) still reports timeline 2, from `IDENTIFY_SYSTEM`, while its
//! control file may still name timeline 1.

mod common;

use std::time::Duration;

use common::{eventually, hba, sql, start, streaming, test_parameters, upstream, wal_lsn, Sandbox};
use pgbaton_core::TimelineSource;
use pgbaton_postgres::{
    basebackup, ensure_users, identify_system, initdb, install_timeline_history, promote,
    query_status, read_timeline_history, slot_name_for, sync_physical_slots, write_config, PgSpec,
    Postmaster, StandbyConfig, StopMode,
};

const T: Duration = Duration::from_secs(10);

fn standby_of(spec: &PgSpec, member: &str) -> StandbyConfig {
    StandbyConfig {
        upstream: Some(upstream(spec)),
        slot_name: Some(slot_name_for(member)),
        apply_delay: None,
    }
}

/// `primary` created and started (replication roles, a slot per replica, a table `t` with
/// one row), each of `replicas` cloned from it and streaming: the postmasters.
async fn primary_and_streaming_replicas(
    primary: &PgSpec,
    replicas: &[(&PgSpec, &str)],
) -> (Postmaster, Vec<Postmaster>) {
    initdb(primary, &["--data-checksums".into()])
        .await
        .expect("initdb");
    write_config(primary, &test_parameters(), &hba(), None).expect("write_config");
    let pm = start(primary).await;
    // The replication and rewind roles.
    ensure_users(primary, &[], T).await.expect("ensure_users");
    let slots = replicas
        .iter()
        .map(|(_, name)| slot_name_for(name))
        .collect();
    sync_physical_slots(primary, &slots, &Default::default(), T)
        .await
        .expect("slots");
    sql(primary, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await;
    let mut started = Vec::new();
    for (spec, name) in replicas {
        basebackup(spec, &upstream(primary), &[])
            .await
            .expect("basebackup");
        write_config(
            spec,
            &test_parameters(),
            &hba(),
            Some(&standby_of(primary, name)),
        )
        .expect("write_config");
        started.push(start(spec).await);
        streaming(spec).await;
    }
    (pm, started)
}

async fn checkpoint_timeline(spec: &PgSpec) -> i64 {
    let client = pgbaton_postgres::connect(spec, T).await.expect("connect");
    client
        .query_one("SELECT timeline_id::int8 FROM pg_control_checkpoint()", &[])
        .await
        .expect("pg_control_checkpoint")
        .get(0)
}

#[tokio::test]
async fn a_replica_whose_new_leader_is_gone_reports_the_timeline_it_replayed() {
    let sandbox = Sandbox::new();
    let node1 = sandbox.member("node1");
    let node2 = sandbox.member("node2");
    let node3 = sandbox.member("node3");

    let (mut pm1, mut replicas) =
        primary_and_streaming_replicas(&node1, &[(&node2, "node2"), (&node3, "node3")]).await;
    let mut pm3 = replicas.pop().expect("node3");
    let mut pm2 = replicas.pop().expect("node2");

    // A switchover: node1 stops cleanly, node2 promotes onto timeline 2, node3 follows it.
    pm1.stop(StopMode::Fast, T).await.expect("stop node1");
    promote(&node2, T).await.expect("promote node2");
    sync_physical_slots(
        &node2,
        &[slot_name_for("node3")].into_iter().collect(),
        &Default::default(),
        T,
    )
    .await
    .expect("slot on node2");
    write_config(
        &node3,
        &test_parameters(),
        &hba(),
        Some(&standby_of(&node2, "node3")),
    )
    .expect("repoint node3");
    pm3.reload().expect("reload node3");
    sql(&node2, "INSERT INTO t VALUES (2)").await;
    let target = wal_lsn(&node2).await;
    eventually(
        "node3 to replay node2's write on timeline 2",
        Duration::from_secs(30),
        || async {
            let status = query_status(&node3, T).await.ok()?;
            (status.replay_lsn? >= target && status.timeline == 2).then_some(())
        },
    )
    .await;

    // The history file says where timeline 1 ended.
    let history = read_timeline_history(&node2.data_dir, 2).expect("00000002.history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].timeline, 1);

    // node2 is lost: node3's WAL receiver stops, and no restartpoint has run.
    pm2.stop(StopMode::Immediate, T).await.expect("stop node2");
    eventually(
        "node3's WAL receiver to stop streaming",
        Duration::from_secs(30),
        || async {
            let status = query_status(&node3, T).await.ok()?;
            let streaming = status
                .wal_receiver
                .as_ref()
                .is_some_and(|r| r.status == "streaming");
            (!streaming).then_some(())
        },
    )
    .await;
    let status = query_status(&node3, T).await.expect("status of node3");
    let control = checkpoint_timeline(&node3).await;
    eprintln!(
        "node3: timeline {} from {:?}; the control file's checkpoint says {control}",
        status.timeline, status.timeline_source
    );
    assert!(status.in_recovery);
    assert_eq!(status.timeline, 2, "the timeline of the WAL node3 replayed");
    assert_eq!(status.timeline_source, TimelineSource::Replay);
    let identity = identify_system(&node3, T).await.expect("IDENTIFY_SYSTEM");
    assert_eq!(identity.timeline, 2);
    assert!(identity.lsn >= target);
    assert!(
        identity.lsn > history[0].switch_lsn,
        "node3 replayed past the switch point"
    );

    pm3.stop(StopMode::Fast, T).await.expect("stop node3");
}

/// A leader promoted onto timeline 2 is lost before the other replicas follow it. Promoted
/// from timeline 1, PostgreSQL picks timeline 2 again (it never saw the lost leader's history
/// file): a second branch under the same id. With the history file put into `pg_wal` first
/// (`install_timeline_history`, from the DCS `history` key), it picks timeline 3.
#[tokio::test]
async fn a_promotion_after_a_lost_branch_takes_a_new_timeline_id_once_its_history_file_is_there() {
    let sandbox = Sandbox::new();
    let node1 = sandbox.member("node1");
    let node2 = sandbox.member("node2");
    let node3 = sandbox.member("node3");
    let node4 = sandbox.member("node4");

    let (mut pm1, mut replicas) = primary_and_streaming_replicas(
        &node1,
        &[(&node2, "node2"), (&node3, "node3"), (&node4, "node4")],
    )
    .await;
    let mut pm4 = replicas.pop().expect("node4");
    let mut pm3 = replicas.pop().expect("node3");
    let mut pm2 = replicas.pop().expect("node2");

    // node1 is lost; node2 promotes onto timeline 2 and is lost in turn, before anyone
    // streamed from it.
    pm1.stop(StopMode::Fast, T).await.expect("stop node1");
    promote(&node2, T).await.expect("promote node2");
    sql(&node2, "INSERT INTO t VALUES (2)").await;
    let lost_branch = read_timeline_history(&node2.data_dir, 2).expect("00000002.history");
    pm2.stop(StopMode::Immediate, T).await.expect("stop node2");
    let ended: Vec<(u32, u64)> = lost_branch
        .iter()
        .map(|l| (l.timeline, l.switch_lsn))
        .collect();

    // Without the history file, timeline 2 again (what the agent must prevent).
    promote(&node4, T).await.expect("promote node4");
    let reused = query_status(&node4, T).await.expect("status of node4");
    assert_eq!(reused.timeline, 2, "PostgreSQL reuses the lost branch's id");

    // With it, timeline 3, branching off timeline 1.
    assert!(install_timeline_history(&node3, 2, &ended).expect("install"));
    assert!(
        !install_timeline_history(&node3, 2, &ended).expect("install again"),
        "a history file already there is left alone"
    );
    assert_eq!(
        read_timeline_history(&node3.data_dir, 2).expect("read back"),
        lost_branch,
        "the file reads as the lost leader's own"
    );
    promote(&node3, T).await.expect("promote node3");
    let status = query_status(&node3, T).await.expect("status of node3");
    assert_eq!(status.timeline, 3, "a timeline id no branch used");
    let history = read_timeline_history(&node3.data_dir, 3).expect("00000003.history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].timeline, 1, "timeline 3 branched off timeline 1");
    sql(&node3, "INSERT INTO t VALUES (3)").await;

    pm3.stop(StopMode::Fast, T).await.expect("stop node3");
    pm4.stop(StopMode::Fast, T).await.expect("stop node4");
}
