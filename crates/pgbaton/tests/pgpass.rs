//! `postgresql.pgpass` on a real cluster with passwords required (scram-sha-256 in
//! pg_hba.conf): the replica is cloned and streams with its password read from the password
//! file, which is 0600 and owned by the postgres user; no password sits in primary_conninfo,
//! postgresql.conf or postgresql.auto.conf, which name the file instead (`passfile=`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{edit_member_yaml, Cluster, UP};

/// A replication password that needs escaping in a password file (`:` and `\`).
const REPLICATION_PASSWORD: &str = r"Repl:S3cret\x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_read_their_passwords_from_the_pgpass_file() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for name in ["node1", "node2"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, |yaml| {
            let yaml = yaml.replacen(
                "      username: replicator\n      password: replicator\n",
                &format!("      username: replicator\n      password: '{REPLICATION_PASSWORD}'\n"),
                1,
            );
            assert!(yaml.contains(REPLICATION_PASSWORD), "{yaml}");
            // Nothing but scram-sha-256 for replication connections.
            assert!(yaml.contains("host replication replicator 127.0.0.1/32 scram-sha-256"));
            yaml
        });
    }
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    cluster.start_agent("node2");
    cluster.wait_until_all_streaming(UP).await;

    // The replica streams, authenticated by scram with the password from the file.
    let receiver = cluster
        .query_one("node2", "SELECT status FROM pg_stat_wal_receiver")
        .await
        .expect("pg_stat_wal_receiver");
    assert_eq!(receiver, "streaming");
    let hba = cluster
        .query(
            "node1",
            "SELECT auth_method FROM pg_hba_file_rules WHERE 'replication' = ANY(database)",
        )
        .await
        .expect("pg_hba_file_rules");
    assert!(
        !hba.is_empty() && hba.iter().all(|m| m == "scram-sha-256"),
        "replication rules: {hba:?}"
    );

    let pgpass = cluster.member_dir("node2").join("pgpass");
    let conninfo = cluster
        .query_one("node2", "SHOW primary_conninfo")
        .await
        .expect("primary_conninfo");
    assert!(
        conninfo.contains(&format!("passfile='{}'", pgpass.display())),
        "{conninfo}"
    );
    assert!(!conninfo.contains("password"), "{conninfo}");

    // No password anywhere in the replica's configuration files.
    let data = cluster.data_dir("node2");
    for file in [
        "postgresql.conf",
        "postgresql.auto.conf",
        "postgresql.base.conf",
    ] {
        let text = std::fs::read_to_string(data.join(file)).unwrap_or_default();
        assert!(
            !text.contains("S3cret") && !text.contains("password="),
            "{file} holds a password:\n{text}"
        );
    }
    let conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
    assert!(conf.contains("passfile="), "{conf}");

    // The file: 0600, owned by postgres, one line per role with its password escaped.
    let meta = std::fs::metadata(&pgpass).expect("the pgpass file exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("passwd")
        .expect("a postgres user");
    assert_eq!(
        meta.uid(),
        postgres.uid.as_raw(),
        "owner of {}",
        pgpass.display()
    );
    let text = std::fs::read_to_string(&pgpass).expect("read pgpass");
    assert_eq!(
        text,
        "*:*:*:replicator:Repl\\:S3cret\\\\x\n*:*:*:postgres:postgres\n",
        "{}",
        pgpass.display()
    );

    // The old leader's node dies and comes back: pg_rewind authenticates with the rewind
    // role's line of its own password file (the superuser here), then it streams again.
    cluster.kill_node("node1");
    let deadline = std::time::Instant::now() + UP;
    while cluster
        .state()
        .await
        .ok()
        .and_then(|s| s.leader_name().map(str::to_string))
        != Some("node2".to_string())
    {
        if std::time::Instant::now() > deadline {
            cluster.fail("node2 did not take over");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.wait_for_leader(UP).await, "node2");
    cluster.start_agent("node1");
    cluster.wait_until_all_streaming(UP).await;
    let log = cluster.agent_log("node1");
    assert!(
        log.contains("running pg_rewind") && log.contains("pg_rewind done"),
        "node1 did not rewind:\n{}",
        common::procs::tail(&cluster.member_dir("node1").join("agent.log"), 40)
    );
    assert!(!log.contains("rewind-failed"), "the rewind failed");
    let pgpass1 = cluster.member_dir("node1").join("pgpass");
    let meta = std::fs::metadata(&pgpass1).expect("node1's pgpass file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&pgpass1).expect("read"), text);
    let conninfo = cluster
        .query_one("node1", "SHOW primary_conninfo")
        .await
        .expect("primary_conninfo");
    assert!(
        conninfo.contains("passfile=") && !conninfo.contains("password"),
        "{conninfo}"
    );
}
