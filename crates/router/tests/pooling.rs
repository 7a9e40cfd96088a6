//! The router as a connection pooler, on real PostgreSQL 15 and etcd: client authentication
//! (SCRAM with the router logging in to PostgreSQL from the client's proof, md5, trust,
//! auth_query through a SECURITY DEFINER function; wrong passwords and unknown users alike
//! get 28P01), and session and transaction pooling with real drivers (tokio-postgres,
//! psql, psycopg2, pgbench in its three protocols): prepared statements across server
//! connections, transactions, errors, COPY both ways, a cancel, a client that leaves in the
//! middle of a transaction, garbage on the wire, and the limits (max_client_conn,
//! query_wait_timeout).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, RouterConfig};
use support::{conninfo, psql, Cluster, RunningRouter, BIN_DIR, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

/// A primary with the roles of these tests, and a userlist.txt copied from `pg_authid` (the
/// SCRAM and md5 secrets exactly as the server stores them) plus auth_user's plain password.
struct Pooled {
    cluster: Cluster,
    admin: tokio_postgres::Client,
    dir: tempfile::TempDir,
}

const ROLES: &str = "
    CREATE ROLE alice LOGIN PASSWORD 'alice pw';
    SET password_encryption = 'md5';
    CREATE ROLE bob LOGIN PASSWORD 'bob pw';
    RESET password_encryption;
    CREATE ROLE carol LOGIN PASSWORD 'carol pw';
    CREATE ROLE pgbaton_auth LOGIN PASSWORD 'auth pw';
    GRANT ALL ON TABLE t TO alice, bob, carol;
    GRANT ALL ON SEQUENCE t_id_seq TO alice, bob, carol;
    -- What docs/CONFIGURATION.md tells operators to create for auth_query.
    CREATE FUNCTION public.pgbaton_lookup(p_user text, OUT username text, OUT password text)
        RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
        $$ SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
           FROM pg_authid WHERE rolname = p_user AND rolcanlogin $$;
    REVOKE ALL ON FUNCTION public.pgbaton_lookup(text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION public.pgbaton_lookup(text) TO pgbaton_auth;
";

impl Pooled {
    async fn start() -> Pooled {
        // RUST_LOG=pgbaton_router=debug shows the router's view when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cluster = Cluster::start(false).await;
        let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
            .await
            .expect("direct connection");
        admin.batch_execute(ROLES).await.expect("roles");
        let hba = cluster.primary.spec.data_dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        text.push_str(
            "host all bob 127.0.0.1/32 md5\nhost all alice,carol,pgbaton_auth 127.0.0.1/32 scram-sha-256\n",
        );
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = |role: &'static str| {
            let admin = &admin;
            async move {
                admin
                    .query_one(
                        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                        &[&role],
                    )
                    .await
                    .expect("secret")
                    .get::<_, String>(0)
            }
        };
        let userlist = format!(
            "; as PgBouncer reads it\n\"alice\" \"{}\"\n\"bob\" \"{}\"\n\"pgbaton_auth\" \"auth pw\"\n",
            secret("alice").await,
            secret("bob").await
        );
        std::fs::write(dir.path().join("userlist.txt"), userlist).expect("userlist");
        Pooled {
            cluster,
            admin,
            dir,
        }
    }

    fn userlist(&self) -> PathBuf {
        self.dir.path().join("userlist.txt")
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig {
            auth_type: AuthType::Hba,
            hba: vec![
                "host all app 127.0.0.1/32 trust".into(),
                "host all bob 127.0.0.1/32 md5".into(),
                "host all all 127.0.0.1/32 scram-sha-256".into(),
            ],
            auth_file: Some(self.userlist()),
            auth_user: Some("pgbaton_auth".into()),
            auth_query: "SELECT username, password FROM public.pgbaton_lookup($1)".into(),
            auth_dbname: Some("postgres".into()),
            ..AuthConfig::default()
        }
    }

    fn config(&self, mode: PoolMode, size: usize) -> RouterConfig {
        let mut cfg = self.cluster.router_config();
        cfg.auth = Some(self.auth());
        cfg.pool = PoolSettings {
            pool_mode: mode,
            default_pool_size: size,
            query_wait_timeout: Duration::from_secs(20),
            ..PoolSettings::default()
        };
        cfg.forwarding = Forwarding::Userspace;
        cfg
    }

    /// Server backends of `user` (not the router's own auth_query ones), by state.
    async fn backends(&self, user: &str) -> Vec<(i32, String)> {
        self.admin
            .query(
                "SELECT pid, coalesce(state, '') FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' ORDER BY pid",
                &[&user],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn user_config(router: &RunningRouter, user: &str, password: &str) -> tokio_postgres::Config {
    let mut config = support::app_config(router.write, None);
    config.user(user).password(password);
    config
}

async fn login(
    router: &RunningRouter,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    support::connect_config(&user_config(router, user, password)).await
}

fn assert_auth_failed(result: Result<tokio_postgres::Client, tokio_postgres::Error>, user: &str) {
    let err = result.expect_err("must be refused");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse: {err:?}"));
    assert_eq!(db.code().code(), "28P01", "{db:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{user}\"")
    );
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_authenticates_clients_and_logs_in_with_what_they_proved() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Transaction, 4)).await;

    // SCRAM: the router checks the proof against the secret from userlist.txt, then logs in
    // to PostgreSQL with the ClientKey recovered from it (no plain password anywhere).
    let alice = login(&router, "alice", "alice pw").await.expect("alice");
    assert_eq!(current_user(&alice).await, "alice");
    assert_auth_failed(login(&router, "alice", "wrong").await, "alice");
    // Unknown users get the very same answer.
    assert_auth_failed(login(&router, "mallory", "alice pw").await, "mallory");
    // md5 by the rules, with the md5 secret: the router answers the server's md5 too.
    let bob = login(&router, "bob", "bob pw").await.expect("bob");
    assert_eq!(current_user(&bob).await, "bob");
    assert_auth_failed(login(&router, "bob", "alice pw").await, "bob");
    // carol is not in the file: auth_query (as pgbaton_auth, through the SECURITY DEFINER
    // function) gives her SCRAM secret.
    let carol = login(&router, "carol", "carol pw").await.expect("carol");
    assert_eq!(current_user(&carol).await, "carol");
    assert_auth_failed(login(&router, "carol", "wrong").await, "carol");
    // trust by the rules.
    let app = support::connect(router.write, None).await;
    assert_eq!(current_user(&app).await, "app");

    // psql, as people type it.
    let info = conninfo(router.write, "alice", "postgres", "");
    let mut command = tokio::process::Command::new(format!("{BIN_DIR}/psql"));
    let out = command
        .args(["-X", "-tA", "-c", "SELECT current_user"])
        .arg(&info)
        .env("PGPASSWORD", "alice pw")
        .output()
        .await
        .expect("psql");
    assert_eq!(support::psql_ok(&out, "psql as alice"), "alice");
    let out = psql(
        &conninfo(router.write, "alice", "postgres", ""),
        &["SELECT 1"],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed for user \"alice\""),
        "{stderr}"
    );

    // auth_query failing (auth_user's password wrong): a clear error naming the cause.
    let mut broken = pooled.config(PoolMode::Transaction, 4);
    let bad_list = pooled.dir.path().join("bad-userlist.txt");
    std::fs::write(&bad_list, "\"pgbaton_auth\" \"not it\"\n").expect("write");
    if let Some(auth) = broken.auth.as_mut() {
        auth.auth_file = Some(bad_list);
    }
    let broken = RunningRouter::start(broken).await;
    let err = login(&broken, "carol", "carol pw")
        .await
        .expect_err("refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "58000", "{db:?}");
    assert!(
        db.message().contains("auth_query") && db.message().contains("pgbaton_auth"),
        "{db:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_serves_tokio_postgres() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Transaction, 2)).await;

    // Eight clients, two server connections: named prepared statements follow each client
    // to whichever server connection it gets, transactions stay on one.
    let mut tasks = Vec::new();
    for i in 0..8i32 {
        let config = user_config(&router, "alice", "alice pw");
        tasks.push(tokio::spawn(async move {
            let client = support::connect_config(&config).await.expect("connect");
            let add = client
                .prepare("SELECT $1::int + $2::int")
                .await
                .expect("prepare");
            let same_text = client.prepare("SELECT $1::int * 2").await.expect("prepare");
            for round in 0..30i32 {
                let row = client
                    .query_one(&add, &[&i, &round])
                    .await
                    .expect("execute");
                assert_eq!(row.get::<_, i32>(0), i + round);
                let row = client
                    .query_one(&same_text, &[&round])
                    .await
                    .expect("execute");
                assert_eq!(row.get::<_, i32>(0), round * 2);
                if round % 10 == 0 {
                    let mut client_tx = client.simple_query("BEGIN").await.expect("begin");
                    client_tx.clear();
                    client
                        .execute("INSERT INTO t (note) VALUES ($1)", &[&format!("c{i}")])
                        .await
                        .expect("insert");
                    let pid: i32 = client
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .expect("pid")
                        .get(0);
                    let again: i32 = client
                        .query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .expect("pid")
                        .get(0);
                    assert_eq!(pid, again, "a transaction stays on its server connection");
                    client.simple_query("COMMIT").await.expect("commit");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let alice = pooled.backends("alice").await;
    assert!(alice.len() <= 2, "pool_size 2, got {alice:?}");
    let rows: i64 = pooled
        .admin
        .query_one("SELECT count(*) FROM t WHERE note LIKE 'c%'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 8 * 3);

    let client = login(&router, "alice", "alice pw").await.expect("alice");
    // An error inside a transaction, then the transaction is rolled back and work goes on.
    client.batch_execute("BEGIN").await.expect("begin");
    let err = client
        .query_one("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    let err = client
        .query_one("SELECT 1", &[])
        .await
        .expect_err("aborted");
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(current_user(&client).await, "alice");

    // COPY in and out.
    use futures_util::SinkExt;
    let sink = client
        .copy_in("COPY t (note) FROM STDIN")
        .await
        .expect("copy in");
    let mut sink = Box::pin(sink);
    let data: String = (0..1000).map(|i| format!("copied {i}\n")).collect();
    sink.send(bytes::Bytes::from(data))
        .await
        .expect("send rows");
    let copied = sink.as_mut().finish().await.expect("finish copy");
    assert_eq!(copied, 1000);
    let stream = client
        .copy_out("COPY (SELECT note FROM t WHERE note LIKE 'copied %' ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    use futures_util::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    let text: Vec<u8> = chunks.concat();
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 1000);

    // A cancel reaches the server connection running this client's query.
    let cancel = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result, started.elapsed(), client)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel_query(NoTls).await.expect("send the cancel");
    let (result, took, client) = tokio::time::timeout(T, sleeper)
        .await
        .expect("cancelled in time")
        .expect("join");
    let err = result.expect_err("cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // LISTEN cannot work when server connections change hands: said so, naming session mode.
    let err = client.batch_execute("LISTEN x").await.expect_err("refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("pool_mode: session"), "{db:?}");
    assert_eq!(current_user(&client).await, "alice", "the client goes on");

    // A client that leaves in the middle of a transaction: rolled back before reuse.
    let quitter = login(&router, "alice", "alice pw").await.expect("alice");
    quitter
        .batch_execute("BEGIN; INSERT INTO t (note) VALUES ('never committed')")
        .await
        .expect("begin");
    drop(quitter);
    support::eventually("no transaction left open", T, || async {
        let states = pooled.backends("alice").await;
        states
            .iter()
            .all(|(_, s)| !s.starts_with("idle in transaction"))
            .then_some(())
    })
    .await;
    let never: i64 = pooled
        .admin
        .query_one("SELECT count(*) FROM t WHERE note = 'never committed'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(never, 0);
    assert!(pooled.backends("alice").await.len() <= 2);

    // /pools shows the pool with PgBouncer's columns.
    let pools: serde_json::Value =
        serde_json::from_str(&router.http_get("/pools").await).expect("/pools JSON");
    let alice_pool = pools
        .as_array()
        .and_then(|l| l.iter().find(|p| p["user"] == "alice"))
        .unwrap_or_else(|| panic!("alice's pool in {pools}"));
    assert_eq!(alice_pool["database"], "postgres");
    assert_eq!(alice_pool["pool_size"], 2);
    assert!(
        alice_pool["total_xact_count"].as_u64().unwrap_or(0) > 100,
        "{alice_pool}"
    );
}

/// A python3 (Debian's, with python3-psycopg2) script through the transaction pool.
/// Each client's own tracked parameters on a server connection the clients share: its
/// startup `application_name`, and a `SET TimeZone` it runs (carried to the next server
/// connection, as PgBouncer's tracked parameters are), never another client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_a_server_connection_keep_their_own_parameters() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Transaction, 1)).await;
    let mut clients = Vec::new();
    for name in ["first", "second", "third"] {
        let mut config = user_config(&router, "alice", "alice pw");
        config.application_name(name);
        clients.push((
            name,
            support::connect_config(&config).await.expect("connect"),
        ));
    }
    let default_zone: String = pooled
        .admin
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .expect("default zone")
        .get(0);
    assert_ne!(default_zone, "Asia/Tokyo");
    clients[1]
        .1
        .batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .expect("set");
    let mut pids = std::collections::BTreeSet::new();
    for round in 0..20 {
        for (name, client) in &clients {
            let row = client
                .query_one(
                    "SELECT current_setting('application_name'), current_setting('TimeZone'), pg_backend_pid()",
                    &[],
                )
                .await
                .expect("query");
            let (app, zone): (String, String) = (row.get(0), row.get(1));
            pids.insert(row.get::<_, i32>(2));
            assert_eq!(app, *name, "round {round}");
            let expected = if *name == "second" {
                "Asia/Tokyo"
            } else {
                default_zone.as_str()
            };
            assert_eq!(zone, expected, "{name}, round {round}");
        }
        if round == 10 {
            // A change back is seen as well.
            clients[1]
                .1
                .batch_execute(&format!("SET TimeZone = '{default_zone}'"))
                .await
                .expect("set");
            clients[1]
                .1
                .batch_execute("SET TimeZone = 'Asia/Tokyo'")
                .await
                .expect("set");
        }
    }
    assert_eq!(pids.len(), 1, "one server connection shared: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_serves_psycopg2() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Transaction, 2)).await;
    let script = r#"
import io, sys, threading, psycopg2
dsn = sys.argv[1]
def work(n):
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    for i in range(20):
        cur.execute("INSERT INTO t (note) VALUES (%s) RETURNING id", ("py%d" % n,))
        cur.fetchone()
        conn.commit()
    try:
        cur.execute("SELECT 1/0")
    except psycopg2.errors.DivisionByZero:
        conn.rollback()
    cur.copy_expert("COPY t (note) FROM STDIN", io.StringIO("".join("pycopy\n" for _ in range(50))))
    conn.commit()
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT 1 FROM generate_series(1, 100)) TO STDOUT", out)
    assert out.getvalue().count("\n") == 100
    conn.commit()
    conn.close()
threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
for t in threads: t.start()
for t in threads: t.join()
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("SELECT count(*) FROM t WHERE note LIKE 'py%%'")
print(cur.fetchone()[0])
"#;
    let dsn = format!(
        "host=127.0.0.1 port={} user=alice password='alice pw' dbname=postgres",
        router.write.port()
    );
    let run = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &dsn])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("psycopg2 in time")
        .expect("run /usr/bin/python3 (apt-get install -y python3-psycopg2)");
    assert!(
        out.status.success(),
        "psycopg2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (6 * 20 + 6 * 50).to_string()
    );
    assert!(pooled.backends("alice").await.len() <= 2);
}

async fn pgbench(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(format!("{BIN_DIR}/pgbench"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("pgbench in time")
        .expect("run pgbench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_transaction_pool_in_every_protocol() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Transaction, 4)).await;
    // pgbench -i through the pool too: DDL, COPY FROM STDIN of its rows, VACUUM.
    let port = router.write.port().to_string();
    let init = pgbench(&[
        "-i",
        "-q",
        "-s",
        "1",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "app",
        "postgres",
    ])
    .await;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let accounts: i64 = pooled
        .admin
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .expect("pgbench_accounts")
        .get(0);
    assert_eq!(
        accounts, 100_000,
        "pgbench -i copied its rows through the pool"
    );
    let router_port = router.write.port().to_string();
    let modes: Vec<String> = match std::env::var("PGBENCH_MODES") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => vec!["simple".into(), "extended".into(), "prepared".into()],
    };
    for mode in modes.iter().map(String::as_str) {
        // One thread per client: pgbench's PQprepare blocks its whole thread, so with
        // fewer threads a client waiting for a server connection would stall the clients
        // that hold them (see docs/CONFIGURATION.md).
        let out = pgbench(&[
            "-M",
            mode,
            "-c",
            "12",
            "-j",
            "12",
            "-T",
            "4",
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &router_port,
            "-U",
            "app",
            "postgres",
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pgbench -M {mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{stdout}"
        );
        let tps = stdout
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or_default()
            .to_string();
        eprintln!("pgbench -M {mode} -c 12 through a pool of 4: {tps}");
    }
    assert!(pooled.backends("app").await.len() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_resets_and_reuses_server_connections() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Session, 1)).await;
    let first = login(&router, "alice", "alice pw").await.expect("alice");
    first
        .batch_execute("SET work_mem = '7MB'; LISTEN news")
        .await
        .expect("session state");
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let shown: String = first
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "7MB", "session state lasts the session");
    drop(first);
    // The next client gets the same server connection, reset (DISCARD ALL).
    let second = support::eventually("the connection back in the pool", T, || async {
        let c = login(&router, "alice", "alice pw").await.ok()?;
        let pid_now: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?
            .get(0);
        (pid_now == pid).then_some(c)
    })
    .await;
    let shown: String = second
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "4MB", "server_reset_query ran");
    drop(second);

    // With kernel forwarding (as root on a recent kernel) a session-mode session goes to the
    // kernel after the router's own authentication.
    let mut kernel = pooled.config(PoolMode::Session, 2);
    kernel.forwarding = Forwarding::Auto;
    let kernel = RunningRouter::start(kernel).await;
    let client = login(&kernel, "alice", "alice pw").await.expect("alice");
    assert_eq!(current_user(&client).await, "alice");
    let metrics = kernel.http_get("/metrics").await;
    let status = kernel.status().await;
    if status["forwarding"] == "kernel" {
        assert!(
            metrics.contains("pgbaton_router_kernel_forwarded_sessions_total 1"),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_keeps_server_connections_open_once_a_client_logged_in() {
    let pooled = Pooled::start().await;
    let mut cfg = pooled.config(PoolMode::Transaction, 5);
    cfg.pool.min_pool_size = 3;
    let router = RunningRouter::start(cfg).await;
    // Until a client has logged in, the router does not know how to log in as alice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(pooled.backends("alice").await.is_empty());
    let client = login(&router, "alice", "alice pw").await.expect("alice");
    assert_eq!(current_user(&client).await, "alice");
    drop(client);
    support::eventually("three idle server connections of alice", T, || async {
        let backends = pooled.backends("alice").await;
        (backends.len() == 3 && backends.iter().all(|(_, state)| state == "idle")).then_some(())
    })
    .await;
    // The minimum, not more: the sweeps that follow open nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pooled.backends("alice").await.len(), 3);
    // The connections serve clients as any other.
    let client = login(&router, "alice", "alice pw")
        .await
        .expect("alice again");
    assert_eq!(current_user(&client).await, "alice");
    assert_eq!(pooled.backends("alice").await.len(), 3);
}

/// A raw protocol client: startup as `app` (trust), read to ReadyForQuery.
async fn raw_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0app\0database\0postgres\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.expect("startup");
    read_until_ready(&mut stream).await;
    stream
}

/// Messages up to ReadyForQuery: (tags seen, SQLSTATEs of errors).
async fn read_until_ready(stream: &mut TcpStream) -> (Vec<u8>, Vec<String>) {
    let mut tags = Vec::new();
    let mut codes = Vec::new();
    loop {
        let mut header = [0u8; 5];
        if stream.read_exact(&mut header).await.is_err() {
            return (tags, codes);
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await.expect("body");
        tags.push(header[0]);
        if header[0] == b'E' {
            for field in body.split(|b| *b == 0) {
                if let Some(code) = field.strip_prefix(b"C") {
                    codes.push(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        if header[0] == b'Z' {
            return (tags, codes);
        }
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_garbage_are_answered_and_never_leak_a_dirty_connection() {
    let pooled = Pooled::start().await;
    let mut cfg = pooled.config(PoolMode::Transaction, 1);
    cfg.pool.max_client_conn = 3;
    cfg.pool.query_wait_timeout = Duration::from_secs(1);
    let router = RunningRouter::start(cfg).await;

    // Garbage in the middle of a transaction: 08P01 to that client only, and its server
    // connection is not handed on with the transaction open.
    let mut dirty = raw_client(router.write).await;
    dirty
        .write_all(&query("BEGIN; INSERT INTO t (note) VALUES ('garbage')"))
        .await
        .expect("send");
    let (tags, _) = read_until_ready(&mut dirty).await;
    assert_eq!(tags.last(), Some(&b'Z'));
    dirty
        .write_all(b"\x01\x02garbage garbage")
        .await
        .expect("send garbage");
    let (_, codes) = read_until_ready(&mut dirty).await;
    assert_eq!(codes, vec!["08P01".to_string()]);
    let clean = support::connect(router.write, None).await;
    let row = clean
        .query_one("SELECT count(*) FROM t WHERE note = 'garbage'", &[])
        .await
        .expect("the next client works");
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the dirty transaction never reached anyone"
    );
    let states = pooled.backends("app").await;
    assert!(
        states
            .iter()
            .all(|(_, s)| !s.starts_with("idle in transaction")),
        "{states:?}"
    );

    // Pool of one, held by a transaction: the next client's query waits query_wait_timeout.
    let holder = support::connect(router.write, None).await;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("hold the connection");
    drop(clean);
    let waiter = support::connect(router.write, None).await;
    let started = std::time::Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("no connection in time");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert!(
        db.message().contains("query_wait_timeout") && db.message().contains("postgres/app"),
        "{db:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    holder.batch_execute("COMMIT").await.expect("commit");

    // max_client_conn 3: holder + two more, the fourth is refused with 53300.
    let _b = support::connect(router.write, None).await;
    let _c = support::connect(router.write, None).await;
    let err = support::connect_config(&support::app_config(router.write, None))
        .await
        .expect_err("too many");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("too many clients"), "{db:?}");
}

/// Random bytes on the wire of a running transaction pool: a seeded generator sends garbage
/// (random bytes, well-framed messages of every type with random bodies, valid messages
/// mangled) from 300 clients, some mid-transaction, while a well-behaved client runs
/// transactions. It never sees an error, no server connection is left dirty, and the router
/// serves new clients afterwards. `PGBATON_FUZZ_CLIENTS` for more clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_many_clients_leaves_other_clients_and_connections_clean() {
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};
    let pooled = Pooled::start().await;
    let mut cfg = pooled.config(PoolMode::Transaction, 3);
    cfg.pool.max_client_conn = 1000;
    cfg.pool.query_wait_timeout = Duration::from_secs(60);
    let router = RunningRouter::start(cfg).await;
    let clients: u64 = std::env::var("PGBATON_FUZZ_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);

    let good = support::connect(router.write, None).await;
    let addr = router.write;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_good = stop.clone();
    let good_task = tokio::spawn(async move {
        let mut done = 0u32;
        while !stop_good.load(std::sync::atomic::Ordering::Relaxed) || done < 20 {
            good.batch_execute(&format!(
                "BEGIN; INSERT INTO t (note) VALUES ('good {done}'); COMMIT"
            ))
            .await
            .expect("the well-behaved client never sees an error");
            let n: i32 = good
                .query_one("SELECT $1::int", &[&(done as i32)])
                .await
                .expect("prepared")
                .get(0);
            assert_eq!(n, done as i32);
            done += 1;
        }
        done
    });

    let valid: Vec<Vec<u8>> = vec![
        query("BEGIN; INSERT INTO t (note) VALUES ('fuzz')"),
        query("SELECT 1"),
        frontend(b'P', &[b"s1\0", b"SELECT $1\0", &[0, 1, 0, 0, 0, 23]]),
        frontend(b'B', &[b"\0s1\0", &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]]),
        frontend(b'E', &[b"\0", &[0, 0, 0, 0]]),
        frontend(b'S', &[]),
        frontend(b'd', &[b"row\n"]),
        frontend(b'c', &[]),
    ];
    let mut tasks = Vec::new();
    for seed in 0..clients {
        let valid = valid.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0xbad_5eed + seed);
            let mut stream = raw_client(addr).await;
            let mut bytes = Vec::new();
            // Often start a transaction first, so that garbage arrives holding a connection.
            if rng.random_range(0..2) == 0 {
                stream.write_all(&valid[0]).await.expect("begin");
                read_until_ready(&mut stream).await;
            }
            match seed % 3 {
                0 => {
                    bytes.resize(rng.random_range(1..200), 0);
                    rng.fill_bytes(&mut bytes);
                }
                1 => {
                    let tags = b"QPBDCESHXdcfFZp\0";
                    let mut body = vec![0u8; rng.random_range(0..64)];
                    rng.fill_bytes(&mut body);
                    bytes = frontend(tags[rng.random_range(0..tags.len())], &[&body]);
                }
                _ => {
                    for _ in 0..rng.random_range(1..4) {
                        bytes.extend_from_slice(&valid[rng.random_range(0..valid.len())]);
                    }
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..bytes.len());
                        match rng.random_range(0..3) {
                            0 => bytes[at] = rng.random(),
                            1 => bytes.truncate(at.max(1)),
                            _ => bytes.insert(at, rng.random()),
                        }
                    }
                }
            }
            let _ = stream.write_all(&bytes).await;
            // Whatever comes back within a moment (an error, results, or nothing while the
            // router waits for the rest of a message); then the client vanishes.
            let mut sink = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), async {
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }));
    }
    for task in tasks {
        task.await.expect("fuzz client");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = tokio::time::timeout(Duration::from_secs(60), good_task)
        .await
        .expect("the good client finished")
        .expect("the good client never failed");
    assert!(done >= 20);
    let good_rows: i64 = pooled
        .admin
        .query_one("SELECT count(*) FROM t WHERE note LIKE 'good %'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(good_rows, i64::from(done));
    // Nothing a fuzz client began was committed by anyone else, and no connection is left
    // in a transaction.
    support::eventually("no server connection left in a transaction", T, || async {
        let states = pooled.backends("app").await;
        states
            .iter()
            .all(|(_, s)| !s.starts_with("idle in transaction"))
            .then_some(())
    })
    .await;
    let fuzz_rows: i64 = pooled
        .admin
        .query_one("SELECT count(*) FROM t WHERE note = 'fuzz'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        fuzz_rows, 0,
        "an abandoned transaction was rolled back, never handed on"
    );
    assert!(pooled.backends("app").await.len() <= 3);
    let after = support::connect(router.write, None).await;
    let row = after
        .query_one("SELECT 2", &[])
        .await
        .expect("new clients are served");
    assert_eq!(row.get::<_, i32>(0), 2);
}

fn frontend(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![tag];
    out.extend_from_slice(&((len + 4) as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pool_waiters_get_connections_as_sessions_end() {
    let pooled = Pooled::start().await;
    let router = RunningRouter::start(pooled.config(PoolMode::Session, 2)).await;
    let holder = login(&router, "alice", "alice pw").await.expect("holder");
    holder.batch_execute("SELECT 1").await.expect("holder");
    // Three clients connect for each query through the one place left: each waits for the
    // place the previous session gives back.
    let started = std::time::Instant::now();
    let mut joins = Vec::new();
    for k in 0..3 {
        let write = router.write;
        joins.push(tokio::spawn(async move {
            for i in 0..20 {
                let mut cfg = tokio_postgres::Config::new();
                cfg.host("127.0.0.1")
                    .port(write.port())
                    .user("alice")
                    .password("alice pw")
                    .dbname("postgres");
                let (c, conn) = cfg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("client {k} op {i}: {e:?}"));
                tokio::spawn(conn);
                c.execute("SELECT 1", &[])
                    .await
                    .unwrap_or_else(|e| panic!("client {k} op {i}: {e:?}"));
            }
        }));
    }
    for j in joins {
        j.await.expect("client");
    }
    eprintln!(
        "60 connections through a session pool of 2 (1 held) in {:?}",
        started.elapsed()
    );
    drop(holder);
}
