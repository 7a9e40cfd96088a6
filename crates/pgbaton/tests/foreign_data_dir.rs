//! A member whose data directory belongs to another cluster (another system identifier)
//! must refuse it: halt, leave the directory untouched, and not disturb the cluster.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, UP};
use pgbaton_postgres::{data_dir_state, Credentials, DataDirState, PgSpec};

fn spec_for(data_dir: &Path, port: u16) -> PgSpec {
    let creds = |user: &str| Credentials {
        username: user.to_string(),
        password: Some(user.to_string()),
    };
    PgSpec {
        bin_dir: common::cluster::PG_BIN.into(),
        data_dir: data_dir.to_path_buf(),
        listen_host: "127.0.0.1".into(),
        port,
        socket_dir: data_dir.with_file_name("sock"),
        run_as: Some("postgres".into()),
        superuser: creds("postgres"),
        replication: creds("replicator"),
        rewind: None,
        log_file: data_dir.with_file_name("postgresql.log"),
        application_name: "foreign".into(),
        replication_tls: Vec::new(),
        rewind_tls: Vec::new(),
    }
}

fn system_id(spec: &PgSpec) -> u64 {
    match data_dir_state(spec).expect("reading the control file") {
        DataDirState::Initialized(cd) => cd.system_identifier,
        other => panic!(
            "{} is not an initialized data dir: {other:?}",
            spec.data_dir.display()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_data_directory_of_another_cluster() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let cluster_id: u64 = cluster
        .query_one(&leader, "SELECT system_identifier FROM pg_control_system()")
        .await
        .expect("system identifier")
        .parse()
        .expect("a number");

    // node4's data dir is a fresh initdb: another cluster.
    cluster.add_member("node4");
    let data_dir = cluster.data_dir("node4");
    let spec = spec_for(&data_dir, cluster.pg_port("node4"));
    pgbaton_postgres::initdb(&spec, &["--encoding=UTF8".to_string()])
        .await
        .expect("initdb of the foreign data dir");
    let foreign_id = system_id(&spec);
    assert_ne!(foreign_id, cluster_id);
    let files_before = std::fs::read_dir(&data_dir).expect("listing").count();

    cluster.start_agent("node4");

    // The agent says it is halted (REST /patroni), and its log names the mismatch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = cluster
            .patroni("node4")
            .await
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_string));
        if state.as_deref() == Some("halted") {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "node4 did not report state halted (last: {state:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = cluster.agent_log("node4");
    assert!(
        log.contains(&foreign_id.to_string()) && log.contains(&cluster_id.to_string()),
        "agent.log names both system identifiers:\n{log}"
    );

    // Give it a few more loops to do something wrong, then check nothing happened.
    tokio::time::sleep(Duration::from_secs_f64(cluster.timing.loop_wait * 3.0)).await;
    assert_eq!(system_id(&spec), foreign_id, "the data dir was replaced");
    assert_eq!(
        std::fs::read_dir(&data_dir).expect("listing").count(),
        files_before,
        "files in the data dir changed"
    );
    assert!(
        common::procs::postmaster_pid(&data_dir).is_none(),
        "PostgreSQL was started on the foreign data dir"
    );
    let siblings: Vec<String> = std::fs::read_dir(cluster.member_dir("node4"))
        .expect("listing node4")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("data."))
        .collect();
    assert!(siblings.is_empty(), "data dir moved aside: {siblings:?}");

    // The cluster is unaffected.
    let original = ["node1", "node2", "node3"].map(String::from);
    let still = cluster
        .wait_until_streaming(&original, Duration::from_secs(10))
        .await;
    assert_eq!(still, leader);
    cluster
        .write(&leader, "foreign_check", "ok")
        .await
        .expect("write on the leader");
    let state = cluster.state().await.expect("reading the cluster");
    assert_eq!(
        state.initialize.as_deref(),
        Some(cluster_id.to_string().as_str())
    );
    assert!(
        !matches!(state.members.get("node4"), Some(d) if d.is_primary_role()),
        "node4 never claims to be a primary"
    );
}
