//! WAL archive and replicas with pgBackRest (Debian's `pgbackrest`): every member archives
//! into one local repository (`archive_command` passes through), a replica is created by the
//! `pgbackrest` method of `create_replica_methods` (a restore from the last backup, then
//! streaming), and falls back to pg_basebackup when the repository cannot serve it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::config::Timing;
use common::{edit_member_yaml, Cluster, UP};

const PGBACKREST: &str = "/usr/bin/pgbackrest";

/// A longer ttl than the default 4 s: these tests run pgBackRest next to the agents on a
/// loaded machine.
const TIMING: Timing = Timing {
    ttl: 10.0,
    loop_wait: 1.0,
    retry_timeout: 3.0,
};

fn require_pgbackrest() {
    assert!(
        Path::new(PGBACKREST).exists(),
        "{PGBACKREST} is missing: install it with `apt-get install -y pgbackrest` (scripts/install-deps.sh)"
    );
}

/// `<root>/pgbackrest.conf` with a repository under `<root>/repo` and stanza `it`; repository,
/// logs and locks owned by postgres.
fn write_repository(cluster: &Cluster) -> PathBuf {
    write_repository_of(cluster, &["node1"])
}

/// The same, listing `servers` as pg1, pg2, ... (a file that describes the cluster).
fn write_repository_of(cluster: &Cluster, servers: &[&str]) -> PathBuf {
    let root = cluster.root();
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("password database")
        .expect("a postgres user");
    for dir in ["repo", "pgbackrest-log", "pgbackrest-lock"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).expect("creating a repository dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        nix::unistd::chown(&path, Some(postgres.uid), Some(postgres.gid)).expect("chown");
    }
    let pgpass = root.join("pgbackrest.pgpass");
    std::fs::write(&pgpass, "*:*:*:postgres:postgres\n").expect("writing the test's pgpass");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    nix::unistd::chown(&pgpass, Some(postgres.uid), Some(postgres.gid)).expect("chown");
    let conf = root.join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={root}/repo\nrepo1-retention-full=2\nlog-path={root}/pgbackrest-log\nlock-path={root}/pgbackrest-lock\nstart-fast=y\n\n[it]\n{servers}",
            root = root.display(),
            servers = servers
                .iter()
                .enumerate()
                .map(|(i, name)| format!(
                    "pg{k}-path={root}/{name}/data\npg{k}-port={port}\npg{k}-socket-path={root}/{name}/sock\n",
                    k = i + 1,
                    root = root.display(),
                    port = cluster.pg_port(name)
                ))
                .collect::<String>(),
        ),
    )
    .expect("writing pgbackrest.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    conf
}

/// pgbackrest's options for member `name` in archive-push, archive-get and restore: the
/// shared file, the stanza, its own data dir.
fn path_options(cluster: &Cluster, conf: &Path, stanza: &str, name: &str) -> String {
    format!(
        "--config={} --stanza={stanza} --pg1-path={}",
        conf.display(),
        cluster.data_dir(name).display(),
    )
}

/// [`path_options`] and how to connect to the member (stanza-create, check, backup).
fn options(cluster: &Cluster, conf: &Path, stanza: &str, name: &str) -> String {
    format!(
        "--config={} --stanza={stanza} --pg1-path={} --pg1-port={} --pg1-socket-path={}",
        conf.display(),
        cluster.data_dir(name).display(),
        cluster.pg_port(name),
        cluster.member_dir(name).join("sock").display()
    )
}

/// archive_mode/archive_command (and restore_command) in the member's parameters, and the
/// replica methods `[pgbackrest, basebackup]` restoring with `stanza`.
fn with_archive(yaml: String, cluster: &Cluster, conf: &Path, name: &str, stanza: &str) -> String {
    const ANCHOR: &str = "  parameters:\n    shared_buffers: 32MB\n";
    let yaml = format!(
        "{yaml}\npgbackrest:\n  stanza: {stanza}\n  config: {}\n",
        conf.display()
    );
    assert!(
        yaml.contains(ANCHOR),
        "no local parameters in the member YAML"
    );
    let archiving = path_options(cluster, conf, "it", name);
    let restoring = path_options(cluster, conf, stanza, name);
    yaml.replacen(
        ANCHOR,
        &format!(
            "  create_replica_methods: [pgbackrest, basebackup]\n  pgbackrest:\n    command: {PGBACKREST} {restoring} --delta restore\n    keep_data: true\n    no_params: true\n    type: standby\n{ANCHOR}    archive_mode: \"on\"\n    archive_command: '{PGBACKREST} {archiving} archive-push %p'\n    archive_timeout: 10s\n"
        ),
        1,
    )
}

/// Runs pgbackrest as postgres with the given arguments (the superuser's password from the
/// test's password file); its output.
fn pgbackrest(cluster: &Cluster, args: &str) -> std::process::Output {
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("password database")
        .expect("a postgres user");
    Command::new(PGBACKREST)
        .args(args.split_whitespace())
        .uid(postgres.uid.as_raw())
        .gid(postgres.gid.as_raw())
        .env("HOME", "/tmp")
        .env("PGPASSFILE", cluster.root().join("pgbackrest.pgpass"))
        .current_dir("/")
        .output()
        .expect("running pgbackrest")
}

fn pgbackrest_ok(cluster: &Cluster, args: &str) -> String {
    let out = pgbackrest(cluster, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbackrest {args} failed: {text}");
    text
}

async fn wait_for_log(cluster: &Cluster, name: &str, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !cluster.agent_log(name).contains(needle) {
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "{name}'s log has no {needle:?} within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET /patroni` of `name` until its `pgbackrest.check` is `want` (ok or failed).
async fn wait_for_check(cluster: &Cluster, name: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        if let Ok(doc) = cluster.patroni(name).await {
            let check = &doc["pgbackrest"];
            if check["check"] == want {
                return check.clone();
            }
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("{name}: pgbackrest check not {want} within 150 s"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_restored_from_the_repository_and_fall_back_to_basebackup() {
    require_pgbackrest();
    let mut cluster = Cluster::start_with(0, TIMING).await;
    let conf = write_repository(&cluster);
    cluster.add_member("node1");
    edit_member_yaml(&cluster, "node1", |y| {
        with_archive(y, &cluster, &conf, "node1", "it")
    });
    cluster.start_agent("node1");
    let leader = cluster.wait_for_leader(UP).await;
    assert_eq!(leader, "node1");
    // The leader's agent creates the stanza and checks the archive (pgbackrest.stanza).
    let check = wait_for_check(&cluster, "node1", "ok").await;
    assert_eq!(check["stanza"], "it", "{check}");
    cluster
        .query(
            "node1",
            "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)",
        )
        .await
        .expect("rows before the backup");
    let backup = pgbackrest_ok(
        &cluster,
        &format!(
            "{} --type=full backup",
            options(&cluster, &conf, "it", "node1")
        ),
    );
    eprintln!("backup: {backup}");
    cluster
        .query("node1", "INSERT INTO t SELECT generate_series(1001, 1500)")
        .await
        .expect("rows after the backup");

    // node2 restores from the repository, then streams from node1.
    cluster.add_member("node2");
    edit_member_yaml(&cluster, "node2", |y| {
        with_archive(y, &cluster, &conf, "node2", "it")
    });
    cluster.start_agent("node2");
    cluster
        .wait_until_streaming(&["node2".to_string()], UP)
        .await;
    let log2 = cluster.agent_log("node2");
    assert!(
        log2.contains("creating the replica with a command")
            && log2.contains("method=\"pgbackrest\""),
        "node2 did not run the pgbackrest method:\n{log2}"
    );
    assert!(
        !log2.contains("cloning with pg_basebackup"),
        "node2 fell back to pg_basebackup although the repository works:\n{log2}"
    );
    let restore_log = cluster.root().join("pgbackrest-log/it-restore.log");
    assert!(
        std::fs::read_to_string(&restore_log)
            .unwrap_or_default()
            .contains("restore command end: completed successfully"),
        "{} shows no completed restore",
        restore_log.display()
    );
    let count = cluster
        .query_one("node2", "SELECT count(*) FROM t")
        .await
        .expect("count on node2");
    assert_eq!(count, "1500");

    // node3's method names a stanza the repository does not have: pg_basebackup takes over,
    // and the error names the stanza.
    cluster.add_member("node3");
    edit_member_yaml(&cluster, "node3", |y| {
        with_archive(y, &cluster, &conf, "node3", "nosuchstanza")
    });
    cluster.start_agent("node3");
    cluster
        .wait_until_streaming(&["node3".to_string()], UP)
        .await;
    let log3 = cluster.agent_log("node3");
    assert!(
        log3.contains("creating the replica with this method failed; trying the next one")
            && log3.contains("nosuchstanza"),
        "node3's log does not name the failed pgbackrest method and its stanza:\n{log3}"
    );
    assert!(
        log3.contains("cloning with pg_basebackup"),
        "node3 did not fall back to pg_basebackup:\n{log3}"
    );
    wait_for_log(
        &cluster,
        "node3",
        "method=\"basebackup\"",
        Duration::from_secs(5),
    )
    .await;
    let count = cluster
        .query_one("node3", "SELECT count(*) FROM t")
        .await
        .expect("count on node3");
    assert_eq!(count, "1500");
    // Nothing was moved aside or deleted on the way.
    let aside: Vec<String> = std::fs::read_dir(cluster.member_dir("node3"))
        .expect("node3 dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data."))
        .collect();
    assert!(aside.is_empty(), "node3 moved data aside: {aside:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_stanza_or_unusable_repository_is_a_clear_error_and_the_leader_keeps_its_data() {
    require_pgbackrest();
    let mut cluster = Cluster::start_with(0, TIMING).await;
    let conf = write_repository(&cluster);
    cluster.add_member("node1");
    // The stanza the member's file names is not the repository's (its config has `[it]`).
    edit_member_yaml(&cluster, "node1", |y| {
        with_archive(y, &cluster, &conf, "node1", "it")
            .replace("  stanza: it\n", "  stanza: wrongstanza\n")
    });
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    let check = wait_for_check(&cluster, "node1", "failed").await;
    eprintln!("GET /patroni pgbackrest: {check}");
    let error = check["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("wrongstanza"),
        "the error does not name the stanza: {check}"
    );
    assert!(
        cluster
            .agent_log("node1")
            .contains("pgbackrest: the repository is not usable"),
        "no error in the log"
    );
    cluster
        .query(
            "node1",
            "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)",
        )
        .await
        .expect("the leader still takes writes");

    // An unusable repository (its path under a regular file): the agent restarted with it
    // checks at start, names the repository in the error, and keeps leading.
    let blocker = cluster.root().join("not-a-dir");
    std::fs::write(&blocker, "").expect("writing a file");
    let broken = cluster.root().join("broken.conf");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&conf)
            .expect("pgbackrest.conf")
            .replace(
                &format!("repo1-path={}/repo", cluster.root().display()),
                &format!("repo1-path={}/repo", blocker.display()),
            ),
    )
    .expect("writing broken.conf");
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    cluster.kill_agent("node1");
    edit_member_yaml(&cluster, "node1", |y| {
        y.replace("  stanza: wrongstanza\n", "  stanza: it\n")
            .replace(
                &format!("  config: {}\n", conf.display()),
                &format!("  config: {}\n", broken.display()),
            )
    });
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    let check = wait_for_check(&cluster, "node1", "failed").await;
    eprintln!("GET /patroni pgbackrest: {check}");
    let error = check["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("broken.conf") && error.contains("not-a-dir"),
        "the error names neither the configuration file nor the repository: {check}"
    );
    assert_eq!(
        cluster
            .query_one("node1", "SELECT count(*) FROM kept")
            .await
            .expect("the leader's data"),
        "1"
    );
    let entries: Vec<String> = std::fs::read_dir(cluster.member_dir("node1"))
        .expect("node1 dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data."))
        .collect();
    assert!(entries.is_empty(), "data moved aside: {entries:?}");
}

/// Stops the PostgreSQL running on a restored directory when the test ends, even by a panic.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = common::procs::postmaster_pid(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// Runs `program` as postgres from `/` (the superuser's password from the test's password
/// file); panics with its output when it fails.
fn as_postgres(cluster: &Cluster, program: &str, args: &[&str]) -> String {
    let postgres = nix::unistd::User::from_name("postgres")
        .expect("password database")
        .expect("a postgres user");
    let out = Command::new(program)
        .args(args)
        .uid(postgres.uid.as_raw())
        .gid(postgres.gid.as_raw())
        .env("HOME", "/tmp")
        .env("PGPASSFILE", cluster.root().join("pgbackrest.pgpass"))
        .current_dir("/")
        .output()
        .expect("running a command as postgres");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_the_latest_point_after_a_failover_holds_every_acknowledged_row() {
    require_pgbackrest();
    let mut cluster = Cluster::start_with(0, TIMING).await;
    let conf = write_repository(&cluster);
    for name in ["node1", "node2"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, |y| {
            with_archive(y, &cluster, &conf, name, "it")
        });
    }
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    wait_for_check(&cluster, "node1", "ok").await;
    cluster
        .query("node1", "CREATE TABLE acked (id int)")
        .await
        .expect("create table");
    pgbackrest_ok(
        &cluster,
        &format!(
            "{} --type=full backup",
            options(&cluster, &conf, "it", "node1")
        ),
    );
    cluster.start_agent("node2");
    cluster
        .wait_until_streaming(&["node2".to_string()], UP)
        .await;
    // Rows acknowledged by node1, over several WAL segments, replayed by node2.
    for i in 0..3 {
        cluster
            .query(
                "node1",
                &format!(
                    "INSERT INTO acked SELECT generate_series({}, {}); SELECT pg_switch_wal()",
                    i * 1000 + 1,
                    i * 1000 + 1000
                ),
            )
            .await
            .expect("rows on node1");
    }
    cluster
        .query(
            "node1",
            "INSERT INTO acked SELECT generate_series(3001, 3500)",
        )
        .await
        .expect("rows on node1 in an unfinished segment");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .query_one("node2", "SELECT count(*) FROM acked")
        .await
        .ok()
        .as_deref()
        != Some("3500")
    {
        assert!(Instant::now() < deadline, "node2 did not replay the rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The leader's host dies; node2 takes over on timeline 2 and archives from there.
    cluster.kill_node("node1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.in_recovery("node2").await.unwrap_or(true) {
        assert!(Instant::now() < deadline, "node2 was not promoted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster
        .query(
            "node2",
            "INSERT INTO acked SELECT generate_series(3501, 4000)",
        )
        .await
        .expect("rows on node2");
    // check switches WAL and waits until the segment is in the repository.
    pgbackrest_ok(
        &cluster,
        &format!("{} check", options(&cluster, &conf, "it", "node2")),
    );
    let archived = std::fs::read_dir(cluster.root().join("repo/archive/it"))
        .expect("archive dir")
        .filter_map(|e| e.ok())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("00000002.history")
        });
    assert!(
        archived,
        "timeline 2's history file is not in the repository"
    );

    // Restore to the latest point into a new directory and start it.
    let restored = cluster.root().join("restored");
    let sock = cluster.root().join("restored-sock");
    for dir in [&restored, &sock] {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(dir, Some(pg.uid), Some(pg.gid)).expect("chown");
    }
    pgbackrest_ok(
        &cluster,
        &format!(
            "--config={} --stanza=it --pg1-path={} restore",
            conf.display(),
            restored.display()
        ),
    );
    let port = common::ports::closed_port();
    let log = sock.join("restored.log");
    let pg_ctl = format!("{}/pg_ctl", common::cluster::PG_BIN);
    as_postgres(
        &cluster,
        &pg_ctl,
        &[
            "start",
            "-w",
            "-t",
            "120",
            "-D",
            &restored.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-o",
            &format!(
                "-p {port} -k {} -c listen_addresses='' -c archive_mode=off -c hot_standby=on",
                sock.display()
            ),
        ],
    );
    let _stop = StopOnDrop(restored.clone());
    let psql = format!("{}/psql", common::cluster::PG_BIN);
    let count = |sql: &str| {
        as_postgres(
            &cluster,
            &psql,
            &[
                "-X",
                "-A",
                "-t",
                "-h",
                &sock.to_string_lossy(),
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-c",
                sql,
            ],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while count("SELECT pg_is_in_recovery()").trim() != "f" {
        assert!(
            Instant::now() < deadline,
            "the restored server did not finish recovery: {}",
            common::procs::tail(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows = count("SELECT count(*), count(DISTINCT id), max(id) FROM acked");
    assert_eq!(rows.trim(), "4000|4000|4000", "restored rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_method_restores_a_new_cluster_to_a_point_in_time() {
    require_pgbackrest();
    // The source cluster archives and is backed up.
    let mut source = Cluster::start_with(0, TIMING).await;
    let conf = write_repository(&source);
    source.add_member("node1");
    edit_member_yaml(&source, "node1", |y| {
        with_archive(y, &source, &conf, "node1", "it")
    });
    source.start_agent("node1");
    assert_eq!(source.wait_for_leader(UP).await, "node1");
    wait_for_check(&source, "node1", "ok").await;
    source
        .query("node1", "CREATE TABLE events (id int)")
        .await
        .expect("create table");
    pgbackrest_ok(
        &source,
        &format!(
            "{} --type=full backup",
            options(&source, &conf, "it", "node1")
        ),
    );
    source
        .query("node1", "INSERT INTO events SELECT generate_series(1, 700)")
        .await
        .expect("rows before the target");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target = source
        .query_one("node1", "SELECT now()::text")
        .await
        .expect("the target time");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    source
        .query(
            "node1",
            "INSERT INTO events SELECT generate_series(701, 1000)",
        )
        .await
        .expect("rows after the target");
    // check switches WAL and waits until it is in the repository.
    pgbackrest_ok(
        &source,
        &format!("{} check", options(&source, &conf, "it", "node1")),
    );

    // A new cluster whose bootstrap.method restores the backup and recovers to the target.
    let mut pitr = Cluster::start_with(0, TIMING).await;
    pitr.add_member("node1");
    let data = pitr.data_dir("node1");
    let restore = format!(
        "{PGBACKREST} --config={} --stanza=it --pg1-path={} restore",
        conf.display(),
        data.display()
    );
    let restore_command = format!(
        "{PGBACKREST} --config={} --stanza=it --pg1-path={} archive-get %f \"%p\"",
        conf.display(),
        data.display()
    );
    edit_member_yaml(&pitr, "node1", |y| {
        y.replacen(
            "  initdb:\n",
            &format!(
                "  method: pitr\n  pitr:\n    command: {restore}\n    no_params: true\n    recovery_conf:\n      restore_command: '{restore_command}'\n      recovery_target_time: '{target}'\n      recovery_target_action: promote\n  initdb:\n"
            ),
            1,
        )
    });
    pitr.start_agent("node1");
    assert_eq!(
        pitr.wait_for_leader(Duration::from_secs(180)).await,
        "node1"
    );
    let log = pitr.agent_log("node1");
    assert!(
        log.contains("creating the new cluster with a command") && !log.contains("running initdb"),
        "the new cluster was not created by the method:\n{log}"
    );
    let rows = pitr
        .query_one("node1", "SELECT count(*) || '|' || max(id) FROM events")
        .await
        .expect("rows of the restored cluster");
    assert_eq!(rows, "700|700", "restored to {target}");
    assert!(
        !pitr.in_recovery("node1").await.expect("recovery state"),
        "the restored cluster was not promoted"
    );
    pitr.query("node1", "INSERT INTO events VALUES (701)")
        .await
        .expect("the restored cluster takes writes");
    drop(pitr);

    // A restore_command that fails: the bootstrap fails with PostgreSQL's reason, the
    // restored directory is moved aside (not deleted), nothing becomes leader.
    let mut bad = Cluster::start_with(0, TIMING).await;
    bad.add_member("node1");
    let data = bad.data_dir("node1");
    let restore = format!(
        "{PGBACKREST} --config={} --stanza=it --pg1-path={} restore",
        conf.display(),
        data.display()
    );
    edit_member_yaml(&bad, "node1", |y| {
        y.replacen(
            "  initdb:\n",
            &format!(
                "  method: pitr\n  pitr:\n    command: {restore}\n    no_params: true\n    recovery_conf:\n      restore_command: /bin/false\n      recovery_target_time: '{target}'\n  initdb:\n"
            ),
            1,
        )
    });
    bad.start_agent("node1");
    wait_for_log(&bad, "node1", "bootstrap-failed", Duration::from_secs(150)).await;
    let log = bad.agent_log("node1");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("bootstrap"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let aside: Vec<PathBuf> = std::fs::read_dir(bad.member_dir("node1"))
        .expect("member dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("data.bootstrap-failed."))
        .collect();
    assert!(
        aside.iter().any(|p| p.join("PG_VERSION").is_file()),
        "the restored directory was not kept: {aside:?}"
    );
    assert!(
        bad.state().await.expect("DCS").leader_name().is_none(),
        "a member led although its bootstrap failed"
    );
    // It tries three times, then stops (each failure kept a restored copy aside).
    wait_for_log(
        &bad,
        "node1",
        "attempt 3, the last: this member no longer tries to bootstrap",
        Duration::from_secs(300),
    )
    .await;
    wait_for_log(
        &bad,
        "node1",
        "does not try again until its agent restarts",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = std::fs::read_dir(bad.member_dir("node1"))
        .expect("member dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("data.bootstrap-failed.")
        })
        .count();
    assert_eq!(kept, 3, "one directory aside per attempt, three attempts");
    let state = bad.state().await.expect("DCS");
    assert!(
        state.leader_name().is_none() && state.initialize.is_none(),
        "the member gave up, so nobody claims initialize: {:?}",
        state.initialize
    );
}

/// `ctl backup` as an operator runs it: the leader's agent takes the backup, from the
/// standby the repository's file lists, before and after a switchover (the new leader must
/// not add itself as pg1 beside its own entry: pgBackRest would find two primaries), and
/// `ctl list -e` shows the newest backup. A member that does not lead refuses, naming the
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_backup_runs_on_the_leader_from_a_standby_before_and_after_a_switchover() {
    require_pgbackrest();
    let mut cluster = Cluster::start_with(0, TIMING).await;
    cluster.add_member("node1");
    cluster.add_member("node2");
    let conf = write_repository_of(&cluster, &["node1", "node2"]);
    for name in ["node1", "node2"] {
        edit_member_yaml(&cluster, name, |y| {
            with_archive(y, &cluster, &conf, name, "it")
        });
    }
    cluster.start_agent("node1");
    assert_eq!(cluster.wait_for_leader(UP).await, "node1");
    cluster.start_agent("node2");
    cluster
        .wait_until_streaming(&["node2".to_string()], UP)
        .await;
    wait_for_check(&cluster, "node1", "ok").await;

    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = cluster.ctl(&["backup", "--type", "full"]);
    let first = text(&out);
    assert!(out.status.success(), "ctl backup failed: {first}");
    assert!(
        first.contains("node1: started a backup of type full of stanza it from a standby")
            && first.contains("Success: backup finished"),
        "{first}"
    );
    let listed = text(&cluster.ctl(&["list", "-e"]));
    assert!(
        listed.contains("pgBackRest stanza it: check ok") && listed.contains("Last backup: "),
        "{listed}"
    );
    assert!(listed.contains("F (full, finished "), "{listed}");

    // A replica does not take backups: it names the leader.
    let refused = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/backup",
            cluster.api_port("node2")
        ))
        .body("{}")
        .send()
        .await
        .expect("POST /backup to node2");
    assert_eq!(refused.status().as_u16(), 503);
    let why = refused.text().await.unwrap_or_default();
    assert!(
        why.contains("not the leader") && why.contains("node1"),
        "{why}"
    );

    // After a switchover (no candidate named) node2 leads: its check and its backup work.
    // Right after the backup node2's member key may still show the WAL switch the backup made
    // as lag (the switch moves the leader to the next segment): retry while refused for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.ctl(&["switchover", "--force"]);
        if out.status.success() {
            break;
        }
        let why = text(&out);
        assert!(
            why.contains("no member other than node1 is a healthy candidate")
                && Instant::now() < deadline,
            "switchover failed: {why}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.wait_for_leader(UP).await != "node2" {
        assert!(Instant::now() < deadline, "node2 did not take over");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster
        .wait_until_streaming(&["node1".to_string()], UP)
        .await;
    let check = wait_for_check(&cluster, "node2", "ok").await;
    assert_eq!(check["check"], "ok", "{check}");
    let out = cluster.ctl(&["backup"]);
    let second = text(&out);
    assert!(
        out.status.success(),
        "ctl backup after the switchover failed: {second}"
    );
    assert!(
        second.contains("node2: started a backup of type incr of stanza it from a standby"),
        "{second}"
    );
    let info = pgbackrest_ok(
        &cluster,
        &format!("--config={} --stanza=it --output=json info", conf.display()),
    );
    let parsed: serde_json::Value = serde_json::from_str(info.trim()).expect("info JSON");
    let backups = parsed[0]["backup"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(backups, 2, "{info}");
}

/// A standby cluster fed by the archive alone: `standby_cluster` with `restore_command` and no
/// host, its first member copied by the `pgbackrest` method from the primary cluster's
/// repository, replaying what the primary archives; its second member cascades from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_follows_the_primary_clusters_archive() {
    require_pgbackrest();
    let mut a = Cluster::start_with(0, TIMING).await;
    let conf = write_repository(&a);
    a.add_member("node1");
    edit_member_yaml(&a, "node1", |y| with_archive(y, &a, &conf, "node1", "it"));
    a.start_agent("node1");
    assert_eq!(a.wait_for_leader(UP).await, "node1");
    wait_for_check(&a, "node1", "ok").await;
    a.query(
        "node1",
        "CREATE TABLE dr (v text); INSERT INTO dr VALUES ('before backup')",
    )
    .await
    .expect("rows before the backup");
    pgbackrest_ok(
        &a,
        &format!("{} --type=full backup", options(&a, &conf, "it", "node1")),
    );

    let mut b = Cluster::start_with(0, TIMING).await;
    for name in ["node1", "node2"] {
        b.add_member(name);
        let restoring = path_options(&b, &conf, "it", name);
        edit_member_yaml(&b, name, |y| {
            common::with_bootstrap_dcs(
                y,
                &format!(
                    "    standby_cluster:\n      restore_command: '{PGBACKREST} {restoring} archive-get %f \"%p\"'\n      create_replica_methods: [pgbackrest]\n"
                ),
            )
            .replacen(
                "  parameters:\n    shared_buffers: 32MB\n",
                &format!(
                    "  create_replica_methods: [pgbackrest, basebackup]\n  pgbackrest:\n    command: {PGBACKREST} {restoring} --delta restore\n    keep_data: true\n    no_params: true\n    type: standby\n  parameters:\n    shared_buffers: 32MB\n"
                ),
                1,
            )
        });
    }
    b.start_agent("node1");
    // node1 restores the backup and becomes the standby leader, replaying the archive.
    let deadline = Instant::now() + UP;
    loop {
        let state = b.state().await.expect("B's DCS");
        if state.leader_name() == Some("node1")
            && state
                .leader_member()
                .is_some_and(|d| d.state == "running" && d.is_standby_leader_role())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B has no standby leader:\n{}",
            b.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log1 = b.agent_log("node1");
    assert!(
        log1.contains("method=\"pgbackrest\"") && !log1.contains("cloning with pg_basebackup"),
        "node1 was not copied by the pgbackrest method:\n{log1}"
    );
    b.wait_for_value("node1", "dr", "before backup", Duration::from_secs(60))
        .await;
    // What A writes after the backup reaches B through the archive (a switched segment).
    a.query(
        "node1",
        "INSERT INTO dr VALUES ('after backup'); SELECT pg_switch_wal()",
    )
    .await
    .expect("write on A");
    b.wait_for_value("node1", "dr", "after backup", Duration::from_secs(90))
        .await;
    // node2 cascades from the standby leader.
    b.start_agent("node2");
    b.wait_until("node2 streams from node1", UP, || async {
        b.query_one("node2", "SELECT sender_port FROM pg_stat_wal_receiver")
            .await
            .is_ok_and(|port| port == b.pg_port("node1").to_string())
    })
    .await;
    b.wait_for_value("node2", "dr", "after backup", Duration::from_secs(60))
        .await;
    assert!(
        b.in_recovery("node1").await.expect("query"),
        "B's leader is a replica"
    );
}
