//! Postmaster supervision (immediate stop, adoption after the agent lost its handle,
//! refusing a second start, reload) and the data-directory guards (clone refuses a non-empty
//! dir, a failed clone leaves nothing behind, move_aside renames).

mod common;

use std::time::Duration;

use common::{test_parameters, Sandbox};
use pgbaton_postgres::{
    basebackup, data_dir_state, initdb, move_aside, query_status, write_config, DataDirState,
    DbState, PgError, PgSpec, Postmaster, StopMode, Upstream,
};

const T: Duration = Duration::from_secs(10);

async fn bootstrap(spec: &PgSpec) -> Postmaster {
    initdb(spec, &[]).await.expect("initdb");
    write_config(spec, &test_parameters(), &[], None).expect("write_config");
    let mut postmaster = Postmaster::spawn(spec).expect("spawn");
    postmaster
        .wait_ready(spec, Duration::from_secs(30))
        .await
        .expect("ready");
    postmaster
}

#[tokio::test]
async fn immediate_stop_leaves_in_production_and_adopt_finds_a_running_postmaster() {
    let sandbox = Sandbox::new();
    let spec = sandbox.member("node1");
    assert!(
        Postmaster::adopt(&spec).expect("adopt").is_none(),
        "nothing runs yet"
    );
    let postmaster = bootstrap(&spec).await;
    let pid = postmaster.pid();

    // The agent loses its handle (e.g. restarts); PostgreSQL keeps running.
    drop(postmaster);
    let err = Postmaster::spawn(&spec).expect_err("a second postmaster must be refused");
    assert!(
        matches!(err, PgError::AlreadyRunning { pid: p, .. } if p == pid),
        "{err}"
    );
    let mut adopted = Postmaster::adopt(&spec)
        .expect("adopt")
        .expect("the running postmaster is found");
    assert_eq!(adopted.pid(), pid);
    assert!(!adopted.has_exited());
    adopted.reload().expect("reload");
    assert!(
        query_status(&spec, T).await.is_ok(),
        "still serving after reload"
    );

    adopted
        .stop(StopMode::Immediate, T)
        .await
        .expect("stop immediate");
    assert!(adopted.has_exited());
    let DataDirState::Initialized(control) = data_dir_state(&spec).expect("state") else {
        panic!("expected an initialized data dir");
    };
    assert_eq!(control.state, DbState::InProduction);
    assert!(control.state.was_primary());

    // A stale postmaster.pid (left by the immediate stop) is not a running postmaster; it
    // restarts (with crash recovery) and wait_exit sees the next stop.
    assert!(Postmaster::adopt(&spec).expect("adopt").is_none());
    let mut postmaster = Postmaster::spawn(&spec).expect("spawn after crash");
    postmaster
        .wait_ready(&spec, Duration::from_secs(30))
        .await
        .expect("ready after crash");
    postmaster
        .stop(StopMode::Smart, T)
        .await
        .expect("stop smart");
    tokio::time::timeout(T, postmaster.wait_exit())
        .await
        .expect("wait_exit returns after exit");
    let DataDirState::Initialized(control) = data_dir_state(&spec).expect("state") else {
        panic!("expected an initialized data dir");
    };
    assert_eq!(control.state, DbState::ShutDown);
}

#[tokio::test]
async fn failed_start_reports_the_log_tail() {
    let sandbox = Sandbox::new();
    let spec = sandbox.member("node1");
    initdb(&spec, &[]).await.expect("initdb");
    let mut bad = test_parameters();
    bad.insert("shared_buffers".into(), "not-a-size".into());
    write_config(&spec, &bad, &[], None).expect("write_config");
    let mut postmaster = Postmaster::spawn(&spec).expect("spawn");
    let err = postmaster
        .wait_ready(&spec, Duration::from_secs(30))
        .await
        .expect_err("must fail");
    let PgError::StartFailed { log_tail, .. } = &err else {
        panic!("expected StartFailed, got {err}");
    };
    assert!(
        log_tail.contains("shared_buffers"),
        "log tail names the bad setting: {log_tail}"
    );
}

#[tokio::test]
async fn clone_guards_and_move_aside() {
    let sandbox = Sandbox::new();
    let spec = sandbox.member("node2");
    // Nothing listens on this port: pg_basebackup fails.
    let nowhere = Upstream {
        host: "127.0.0.1".into(),
        port: common::free_port(),
    };

    // A missing data dir: the failed clone removes what it created.
    let err = basebackup(&spec, &nowhere, &[])
        .await
        .expect_err("no upstream");
    assert!(
        matches!(&err, PgError::CommandFailed { stderr_tail, .. } if !stderr_tail.is_empty()),
        "{err}"
    );
    assert!(!spec.data_dir.exists(), "partial clone removed");

    // A non-empty data dir is never cloned over.
    std::fs::create_dir_all(&spec.data_dir).expect("mkdir");
    std::fs::write(spec.data_dir.join("PG_VERSION"), "15\n").expect("write");
    let err = basebackup(&spec, &nowhere, &[])
        .await
        .expect_err("non-empty");
    assert!(matches!(err, PgError::NotEmpty { .. }), "{err}");
    assert!(
        spec.data_dir.join("PG_VERSION").exists(),
        "content untouched"
    );

    let moved = move_aside(&spec, "failed").expect("move_aside");
    assert!(!spec.data_dir.exists());
    assert!(moved.join("PG_VERSION").exists());
    let name = moved
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let stamp = name
        .strip_prefix("data.failed.")
        .expect("named <data_dir>.<reason>.<stamp>");
    assert_eq!(stamp.len(), "YYYYmmddTHHMMSS".len(), "{name}");
    assert_eq!(stamp.as_bytes()[8], b'T', "{name}");
    assert!(
        move_aside(&spec, "../escape").is_err(),
        "reason is validated"
    );
}
