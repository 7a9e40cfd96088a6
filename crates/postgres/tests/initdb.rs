//! initdb against the real PostgreSQL 15 binaries, run as the postgres OS user.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Sandbox;
use pgbaton_postgres::{data_dir_state, initdb, DataDirState, DbState, PgError};

#[tokio::test]
async fn initdb_with_checksums_reports_control_data() {
    let sandbox = Sandbox::new();
    let spec = sandbox.member("node1");
    assert_eq!(data_dir_state(&spec).expect("state"), DataDirState::Missing);

    initdb(
        &spec,
        &["--data-checksums".into(), "--encoding=UTF8".into()],
    )
    .await
    .expect("initdb");

    let meta = std::fs::metadata(&spec.data_dir).expect("data dir");
    let postgres = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("user");
    assert_eq!(
        meta.uid(),
        postgres.uid.as_raw(),
        "data dir owned by postgres"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    let DataDirState::Initialized(control) = data_dir_state(&spec).expect("state") else {
        panic!("expected an initialized data dir");
    };
    assert_eq!(control.state, DbState::ShutDown);
    assert!(control.state.was_primary());
    assert_eq!(control.timeline, 1);
    assert!(control.data_checksums);
    assert_ne!(control.system_identifier, 0);
    assert!(control.checkpoint_lsn > 0);
}

#[tokio::test]
async fn initdb_refuses_a_non_empty_dir_and_empty_dir_is_reported() {
    let sandbox = Sandbox::new();
    let spec = sandbox.member("node1");
    std::fs::create_dir_all(&spec.data_dir).expect("mkdir");
    assert_eq!(data_dir_state(&spec).expect("state"), DataDirState::Empty);

    std::fs::write(spec.data_dir.join("precious"), "do not overwrite").expect("write");
    let err = initdb(&spec, &[])
        .await
        .expect_err("non-empty dir must be refused");
    assert!(matches!(err, PgError::NotEmpty { .. }), "{err}");
    assert!(spec.data_dir.join("precious").exists());
    // Not a data directory at all: reported as foreign, not parsed.
    let err = data_dir_state(&spec).expect_err("no PG_VERSION");
    assert!(matches!(err, PgError::Foreign { .. }), "{err}");
}
