//! Real drivers through the router's transaction pool on PostgreSQL 15, each with SCRAM
//! (the router's userlist holds the server's secret) and each running named prepared
//! statements from more clients than the pool has connections, a transaction, COPY in and
//! out, an error and a cancel: psql, node-postgres (npm `pg` and `pg-copy-streams`,
//! installed from the npm registry into the build's temp dir on first use), JDBC (Debian's
//! libpostgresql-jdbc-java on Java 17). Then 1,000 clients at once against a server with
//! fewer connections than that (max_connections 60, pool 20). A missing driver fails the
//! test, naming what to install (scripts/install-deps.sh installs them all).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, RouterConfig};
use support::{Cluster, RunningRouter, BIN_DIR, T};

/// A primary with role `drv` (SCRAM), its table, and a router pooling in transaction mode.
struct Drivers {
    cluster: Cluster,
    admin: tokio_postgres::Client,
    dir: tempfile::TempDir,
}

impl Drivers {
    async fn start() -> Drivers {
        let cluster = Cluster::start(false).await;
        let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
            .await
            .expect("direct connection");
        admin
            .batch_execute(
                "CREATE ROLE drv LOGIN PASSWORD 'drv pw';
                 CREATE TABLE drv_t (id serial PRIMARY KEY, who text, n int);
                 ALTER TABLE drv_t OWNER TO drv;
                 GRANT ALL ON TABLE drv_t TO app;
                 GRANT ALL ON SEQUENCE drv_t_id_seq TO app;",
            )
            .await
            .expect("role and table");
        let hba = cluster.primary.spec.data_dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        text.push_str("host all drv 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        let secret: String = admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'drv'",
                &[],
            )
            .await
            .expect("secret")
            .get(0);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"drv\" \"{secret}\"\n"),
        )
        .expect("userlist");
        Drivers {
            cluster,
            admin,
            dir,
        }
    }

    fn config(&self, size: usize) -> RouterConfig {
        let mut cfg = self.cluster.router_config();
        cfg.auth = Some(AuthConfig {
            auth_type: AuthType::Hba,
            hba: vec![
                "host all app 127.0.0.1/32 trust".into(),
                "host all all 127.0.0.1/32 scram-sha-256".into(),
            ],
            auth_file: Some(self.dir.path().join("userlist.txt")),
            ..AuthConfig::default()
        });
        cfg.pool = PoolSettings {
            pool_mode: PoolMode::Transaction,
            default_pool_size: size,
            max_client_conn: 2000,
            query_wait_timeout: Duration::from_secs(60),
            ..PoolSettings::default()
        };
        cfg.forwarding = Forwarding::Userspace;
        cfg
    }

    /// Server backends of `user` now.
    async fn backends(&self, user: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'",
                &[&user],
            )
            .await
            .expect("pg_stat_activity")
            .get(0)
    }

    async fn rows_of(&self, who: &str) -> i64 {
        self.admin
            .query_one("SELECT count(*) FROM drv_t WHERE who = $1", &[&who])
            .await
            .expect("count")
            .get(0)
    }
}

/// Run `program args` (env added) within `limit`; its output.
async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> std::process::Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {limit:?}"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (scripts/install-deps.sh installs it)")
        })
}

fn assert_ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_the_transaction_pool() {
    let drivers = Drivers::start().await;
    let router = RunningRouter::start(drivers.config(2)).await;
    let dir = drivers.dir.path();
    let rows: String = (1..=500).map(|i| format!("psql-copy\t{i}\n")).collect();
    std::fs::write(dir.join("rows.tsv"), rows).expect("rows");
    // psql speaks the simple protocol: its prepared statements are SQL PREPARE, which lives
    // on one server connection, so within a transaction (docs/CONFIGURATION.md).
    let script = format!(
        "\\set ON_ERROR_STOP 0
BEGIN;
PREPARE ins(text, int) AS INSERT INTO drv_t (who, n) VALUES ($1, $2);
EXECUTE ins('psql', 1);
EXECUTE ins('psql', 2);
DEALLOCATE ins;
COMMIT;
\\copy drv_t (who, n) from '{}'
\\copy (SELECT n FROM drv_t WHERE who = 'psql-copy' ORDER BY n) to '{}'
SELECT 1/0;
SELECT 'after the error: ' || count(*) FROM drv_t WHERE who = 'psql';
SELECT pg_sleep(30);
",
        dir.join("rows.tsv").display(),
        dir.join("out.txt").display()
    );
    std::fs::write(dir.join("script.sql"), script).expect("script");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=drv password='drv pw' dbname=postgres",
        router.write.port()
    );
    let child = tokio::process::Command::new(format!("{BIN_DIR}/psql"))
        .args(["-X", "-tA", "-f"])
        .arg(dir.join("script.sql"))
        .arg(&conninfo)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run psql (apt-get install -y postgresql-client-15)");
    let pid = child.id().expect("psql pid") as i32;
    // psql sends a CancelRequest on SIGINT while a query runs: wait for the sleep to start.
    support::eventually("psql's pg_sleep running", T, || async {
        let n: i64 = drivers
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'drv' AND query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT psql");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("psql finished after the cancel")
        .expect("psql output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(stdout.contains("after the error: 2"), "{stdout}\n{stderr}");
    // A script stops after a cancel (psql's rule); the client's next session goes on.
    let out = support::psql(&conninfo, &["SELECT 'after the cancel'"]).await;
    assert_eq!(
        support::psql_ok(&out, "psql after the cancel"),
        "after the cancel"
    );
    assert_eq!(drivers.rows_of("psql").await, 2);
    assert_eq!(drivers.rows_of("psql-copy").await, 500);
    let copied = std::fs::read_to_string(dir.join("out.txt")).expect("copied out");
    assert_eq!(copied.lines().count(), 500);
    assert!(drivers.backends("drv").await <= 2);
}

const NODE_SCRIPT: &str = r#"
const pg = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');
const config = JSON.parse(process.argv[1]); // node -e SCRIPT ARG: argv = [node, ARG]
const assert = (c, m) => { if (!c) { throw new Error(m); } };

async function worker(w) {
  const client = new pg.Client(config);
  await client.connect();
  // Named prepared statements, used many times while other clients take the connections.
  for (let i = 0; i < 25; i++) {
    const r = await client.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s', values: [w, i] });
    assert(r.rows[0].s === w + i, 'add');
    const t = await client.query({ name: 'twice', text: 'SELECT $1::int * 2 AS s', values: [i] });
    assert(t.rows[0].s === i * 2, 'twice');
  }
  // A transaction stays on one server connection.
  await client.query('BEGIN');
  await client.query({ name: 'ins', text: 'INSERT INTO drv_t (who, n) VALUES ($1, $2)', values: ['node', w] });
  const a = await client.query('SELECT pg_backend_pid() AS p');
  const b = await client.query('SELECT pg_backend_pid() AS p');
  assert(a.rows[0].p === b.rows[0].p, 'one connection per transaction');
  await client.query('COMMIT');
  // An error, then the client goes on.
  try { await client.query('SELECT 1/0'); throw new Error('no error'); }
  catch (e) { assert(e.code === '22012', 'division by zero: ' + e.code); }
  // COPY in and out.
  const lines = Array.from({ length: 200 }, (_, i) => `node-copy\t${i}\n`).join('');
  await pipeline(Readable.from([lines]), client.query(copyFrom('COPY drv_t (who, n) FROM STDIN')));
  let out = '';
  await pipeline(client.query(copyTo('COPY (SELECT 1 FROM generate_series(1, 300)) TO STDOUT')),
    new Writable({ write(chunk, _enc, cb) { out += chunk; cb(); } }));
  assert(out.split('\n').length - 1 === 300, 'copy out');
  await client.end();
}

async function cancel() {
  const client = new pg.Client(config);
  await client.connect();
  const query = new pg.Query('SELECT pg_sleep(30)');
  const started = Date.now();
  const running = new Promise((resolve) => {
    query.on('error', (e) => resolve(e));
    query.on('end', () => resolve(null));
  });
  client.query(query);
  await new Promise((r) => setTimeout(r, 700));
  new pg.Client(config).cancel(client, query);
  const err = await running;
  assert(err && err.code === '57014', 'cancelled: ' + (err && err.code));
  assert(Date.now() - started < 10000, 'cancelled in time');
  const r = await client.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s', values: [1, 2] });
  assert(r.rows[0].s === 3, 'after the cancel');
  await client.end();
}

Promise.all([0, 1, 2, 3, 4, 5].map(worker).concat([cancel()]))
  .then(() => console.log('node ok'))
  .catch((e) => { console.error(e); process.exit(1); });
"#;

/// npm `pg` and `pg-copy-streams`, installed once into the build's temp dir.
async fn node_modules() -> PathBuf {
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-pg");
    let modules = prefix.join("node_modules");
    if modules.join("pg/package.json").is_file()
        && modules.join("pg-copy-streams/package.json").is_file()
    {
        return modules;
    }
    std::fs::create_dir_all(&prefix).expect("npm prefix");
    let prefix_text = prefix.display().to_string();
    let out = run(
        "npm",
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "--prefix",
            &prefix_text,
            "pg@8",
            "pg-copy-streams@6",
        ],
        &[],
        Duration::from_secs(180),
    )
    .await;
    assert_ok(
        &out,
        "npm install pg pg-copy-streams (needs npm and the npm registry)",
    );
    modules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_through_the_transaction_pool() {
    let modules = node_modules().await;
    let drivers = Drivers::start().await;
    let router = RunningRouter::start(drivers.config(2)).await;
    let config = serde_json::json!({
        "host": "127.0.0.1",
        "port": router.write.port(),
        "user": "drv",
        "password": "drv pw",
        "database": "postgres",
    })
    .to_string();
    let modules_text = modules.display().to_string();
    let out = run(
        "node",
        &["-e", NODE_SCRIPT, &config],
        &[("NODE_PATH", &modules_text)],
        Duration::from_secs(90),
    )
    .await;
    assert!(assert_ok(&out, "node-postgres").contains("node ok"));
    assert_eq!(drivers.rows_of("node").await, 6);
    assert_eq!(drivers.rows_of("node-copy").await, 6 * 200);
    assert!(drivers.backends("drv").await <= 2);
}

const JAVA_SOURCE: &str = r#"
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class Drivers {
    static void check(boolean c, String m) { if (!c) throw new AssertionError(m); }

    static void work(String url, int w) throws Exception {
        try (Connection c = DriverManager.getConnection(url)) {
            // prepareThreshold=1: named server-side statements (S_1, S_2, ...) from the first use.
            try (PreparedStatement add = c.prepareStatement("SELECT ?::int + ?::int");
                 PreparedStatement twice = c.prepareStatement("SELECT ?::int * 2")) {
                for (int i = 0; i < 25; i++) {
                    add.setInt(1, w); add.setInt(2, i);
                    try (ResultSet r = add.executeQuery()) { r.next(); check(r.getInt(1) == w + i, "add"); }
                    twice.setInt(1, i);
                    try (ResultSet r = twice.executeQuery()) { r.next(); check(r.getInt(1) == 2 * i, "twice"); }
                }
            }
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO drv_t (who, n) VALUES ('jdbc', ?)");
                 Statement s = c.createStatement()) {
                ins.setInt(1, w);
                ins.executeUpdate();
                int a, b;
                try (ResultSet r = s.executeQuery("SELECT pg_backend_pid()")) { r.next(); a = r.getInt(1); }
                try (ResultSet r = s.executeQuery("SELECT pg_backend_pid()")) { r.next(); b = r.getInt(1); }
                check(a == b, "one connection per transaction");
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1/0");
                throw new AssertionError("no error");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "division by zero: " + e.getSQLState());
            }
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder rows = new StringBuilder();
            for (int i = 0; i < 200; i++) rows.append("jdbc-copy\t").append(i).append('\n');
            check(copy.copyIn("COPY drv_t (who, n) FROM STDIN", new StringReader(rows.toString())) == 200, "copy in");
            StringWriter out = new StringWriter();
            check(copy.copyOut("COPY (SELECT 1 FROM generate_series(1, 300)) TO STDOUT", out) == 300, "copy out");
        }
    }

    static void cancel(String url) throws Exception {
        try (Connection c = DriverManager.getConnection(url); Statement s = c.createStatement()) {
            ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();
            timer.schedule(() -> { try { s.cancel(); } catch (SQLException e) { throw new RuntimeException(e); } },
                700, TimeUnit.MILLISECONDS);
            long started = System.nanoTime();
            try {
                s.execute("SELECT pg_sleep(30)");
                throw new AssertionError("not cancelled");
            } catch (SQLException e) {
                check("57014".equals(e.getSQLState()), "cancelled: " + e.getSQLState());
            }
            check(System.nanoTime() - started < 10_000_000_000L, "cancelled in time");
            timer.shutdown();
            try (ResultSet r = s.executeQuery("SELECT 5")) { r.next(); check(r.getInt(1) == 5, "after the cancel"); }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        ExecutorService pool = Executors.newFixedThreadPool(7);
        List<Future<?>> jobs = new ArrayList<>();
        for (int w = 0; w < 6; w++) {
            final int n = w;
            jobs.add(pool.submit(() -> { work(url, n); return null; }));
        }
        jobs.add(pool.submit(() -> { cancel(url); return null; }));
        for (Future<?> f : jobs) f.get();
        pool.shutdown();
        System.out.println("jdbc ok");
    }
}
"#;

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// Run the Java program `source` (class `class`) against `port` as the `drv` role, with named
/// server-side statements from the first use (prepareThreshold=1); its standard output.
async fn run_java(drivers: &Drivers, class: &str, source: &str, port: u16) -> String {
    assert!(
        Path::new(JDBC_JAR).is_file(),
        "{JDBC_JAR} is missing: apt-get install -y libpostgresql-jdbc-java default-jre-headless"
    );
    let path = drivers.dir.path().join(format!("{class}.java"));
    std::fs::write(&path, source).expect("java source");
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{port}/postgres?user=drv&password=drv%20pw&prepareThreshold=1"
    );
    let path_text = path.display().to_string();
    let out = run(
        "java",
        &["-cp", JDBC_JAR, &path_text, &url],
        &[],
        Duration::from_secs(120),
    )
    .await;
    assert_ok(&out, class)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_through_the_transaction_pool() {
    let drivers = Drivers::start().await;
    let router = RunningRouter::start(drivers.config(2)).await;
    let out = run_java(&drivers, "Drivers", JAVA_SOURCE, router.write.port()).await;
    assert!(out.contains("jdbc ok"));
    assert_eq!(drivers.rows_of("jdbc").await, 6);
    assert_eq!(drivers.rows_of("jdbc-copy").await, 6 * 200);
    assert!(drivers.backends("drv").await <= 2);
}

const JAVA_TOKEN_SOURCE: &str = r#"
import java.sql.*;

public class Token {
    static void check(boolean c, String m) { if (!c) throw new AssertionError(m); }

    static long lsn(String t) {
        String[] p = t.split("/");
        return (Long.parseLong(p[0], 16) << 32) | Long.parseLong(p[1], 16);
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0]);
             PreparedStatement show = c.prepareStatement("SHOW pgbaton.last_commit_lsn");
             PreparedStatement ins = c.prepareStatement("INSERT INTO drv_t (who, n) VALUES ('jdbc-token', ?)")) {
            long last = 0;
            String text = "";
            for (int i = 0; i < 6; i++) {
                ins.setInt(1, i);
                check(ins.executeUpdate() == 1, "insert");
                long now;
                try (ResultSet r = show.executeQuery()) {
                    check(r.next(), "a row");
                    check(r.getMetaData().getColumnName(1).equals("pgbaton.last_commit_lsn"), "column name");
                    text = r.getString(1);
                    now = lsn(text);
                    check(!r.next(), "one row");
                }
                check(now > last, "the token moved on after insert " + i + ": " + text);
                last = now;
                try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW pgbaton.last_commit_lsn")) {
                    check(r.next() && lsn(r.getString(1)) == now, "the same token unprepared");
                }
            }
            System.out.println("token " + text);
        }
    }
}
"#;

/// JDBC reads its token on the auto listener: `SHOW pgbaton.last_commit_lsn` as a prepared
/// statement (named on the server side from the first use with prepareThreshold=1) and as a
/// plain Statement (pgjdbc sends both through the extended protocol), after each write a
/// position past the one before, which the leader has written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_reads_its_token_on_the_auto_listener() {
    let drivers = Drivers::start().await;
    let mut cfg = drivers.config(2);
    cfg.auto_listen = Some("127.0.0.1:0".into());
    let router = RunningRouter::start(cfg).await;
    let auto = router.auto.expect("auto listener");
    let stdout = run_java(&drivers, "Token", JAVA_TOKEN_SOURCE, auto.port()).await;
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .unwrap_or_else(|| panic!("the token printed: {stdout}"))
        .to_string();
    assert_eq!(drivers.rows_of("jdbc-token").await, 6);
    let written: bool = drivers
        .admin
        .query_one(
            "SELECT $1::text::pg_lsn <= pg_current_wal_insert_lsn()",
            &[&token],
        )
        .await
        .expect("compare")
        .get(0);
    assert!(written, "{token} is a position the leader has written");
}

/// 1,000 clients connected at once, each running a prepared statement and a transaction,
/// against a server allowing 60 connections: a pool of 20 serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_twenty_server_connections() {
    let drivers = Drivers::start().await;
    let router = RunningRouter::start(drivers.config(20)).await;
    let clients: usize = std::env::var("PGBATON_POOL_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let config = support::app_config(router.write, None);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut config = config;
            config.connect_timeout(Duration::from_secs(60));
            let client = support::connect_config(&config)
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e:?}"));
            // Everyone connected before anyone works.
            barrier.wait().await;
            let statement = client.prepare("SELECT $1::int + 1").await.expect("prepare");
            let row = client
                .query_one(&statement, &[&(i as i32)])
                .await
                .expect("execute");
            assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
            client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO drv_t (who, n) VALUES ('many', {i}); COMMIT"
                ))
                .await
                .expect("transaction");
        }));
    }
    let all = async {
        for task in tasks {
            task.await.expect("client task");
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("every client finished");
    assert_eq!(drivers.rows_of("many").await, clients as i64);
    let servers = drivers.backends("app").await;
    assert!(servers <= 20, "pool of 20, {servers} server connections");
}
