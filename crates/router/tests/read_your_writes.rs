//! Read-your-writes through the auto listener, on real PostgreSQL 15 (a primary and a
//! streaming replica) and etcd: transactions a client declares read-only go to the replica
//! once it has replayed that client's last commit, else to the leader — never a read that
//! misses the client's own write, even with the replica's replay held back by
//! `recovery_min_apply_delay`; everything else goes to the leader. The token a client reads
//! (`SHOW pgbaton.last_commit_lsn`, the ParameterStatus) carries causality to a new
//! connection on the read listener (`pgbaton.min_lsn`); a malformed token is refused.

mod support;

use std::time::Duration;

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, RouterConfig};
use support::{connect, connect_config, psql, psql_ok, Cluster, RunningRouter, T};

fn auto_config(cluster: &Cluster) -> RouterConfig {
    // RUST_LOG=pgbaton_router=debug shows the router's view when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cfg = cluster.router_config();
    cfg.auto_listen = Some("127.0.0.1:0".into());
    cfg.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: vec!["host all app 127.0.0.1/32 trust".into()],
        ..AuthConfig::default()
    });
    cfg.pool = PoolSettings {
        pool_mode: PoolMode::Transaction,
        default_pool_size: 4,
        query_wait_timeout: Duration::from_secs(30),
        ..PoolSettings::default()
    };
    cfg.forwarding = Forwarding::Userspace;
    cfg
}

/// A primary, a streaming replica and a router with an auto listener, once the router
/// counts the replica readable.
async fn start_auto() -> (Cluster, RunningRouter, std::net::SocketAddr) {
    let cluster = Cluster::start(true).await;
    let router = RunningRouter::start(auto_config(&cluster)).await;
    let auto = router.auto.expect("auto listener");
    router
        .wait_status("the replica to be readable", |s| {
            support::readable_names(s).contains(&"node2".to_string())
        })
        .await;
    (cluster, router, auto)
}

/// Set (or with None, reset) the replica's `recovery_min_apply_delay` and wait until it
/// applies.
async fn apply_delay(cluster: &Cluster, delay: Option<&str>) {
    let replica = pgbaton_postgres::connect(&cluster.replica().spec, T)
        .await
        .expect("direct connection to the replica");
    let sql = match delay {
        Some(d) => format!("ALTER SYSTEM SET recovery_min_apply_delay = '{d}'"),
        None => "ALTER SYSTEM RESET recovery_min_apply_delay".to_string(),
    };
    replica.batch_execute(&sql).await.expect("alter system");
    replica
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    let want = delay.unwrap_or("0").to_string();
    support::eventually("the apply delay to apply", T, || async {
        let row = replica
            .query_one("SELECT current_setting('recovery_min_apply_delay')", &[])
            .await
            .ok()?;
        let now: String = row.get(0);
        (now == want || (want == "0" && now == "0")).then_some(())
    })
    .await;
}

/// Write a row, then read it back in a read-only transaction: (seen, served by a replica).
async fn write_then_read(client: &tokio_postgres::Client, note: &str) -> (bool, bool) {
    client
        .execute("INSERT INTO t (note) VALUES ($1)", &[&note])
        .await
        .expect("insert through the auto listener");
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin read only");
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE note = $1), pg_is_in_recovery() FROM t",
            &[&note],
        )
        .await
        .expect("read back");
    client.batch_execute("COMMIT").await.expect("commit");
    let seen: i64 = row.get(0);
    (seen == 1, row.get(1))
}

/// The value of a one-row, one-column simple query.
async fn simple_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.expect(sql);
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    simple_value(client, "SELECT pg_is_in_recovery()").await == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_on_the_replica_when_it_has_them_and_on_the_leader_otherwise()
{
    let (cluster, router, auto) = start_auto().await;
    let status = router.status().await;
    let listeners = status["listeners"].as_array().expect("listeners");
    assert!(
        listeners.iter().any(|l| l["name"] == "auto"),
        "/status lists the auto listener: {status}"
    );

    // The replica's replay held back 2 s: every read after a write runs on the leader.
    apply_delay(&cluster, Some("2s")).await;
    let mut client = connect(auto, None).await;
    for i in 0..10 {
        let (seen, on_replica) = write_then_read(&client, &format!("delayed {i}")).await;
        assert!(seen, "read {i} after the client's own write missed it");
        assert!(
            !on_replica,
            "read {i} ran on a replica that had not replayed the write"
        );
    }
    // A client that has written nothing reads on the replica, delay or not.
    let mut fresh = connect(auto, None).await;
    let tx = fresh
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .expect("start transaction read only");
    let row = tx
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read");
    tx.commit().await.expect("commit");
    assert!(
        row.get::<_, bool>(0),
        "a client without writes reads on the replica"
    );

    // Replay as usual: reads after writes run on the replica, and still see the write.
    apply_delay(&cluster, None).await;
    let mut on_replica = 0;
    for i in 0..50 {
        let (seen, replica) = write_then_read(&client, &format!("live {i}")).await;
        assert!(seen, "read {i} after the client's own write missed it");
        on_replica += usize::from(replica);
    }
    assert!(
        on_replica >= 40,
        "only {on_replica} of 50 reads after a write ran on the caught-up replica"
    );

    // An asynchronous commit (SET LOCAL synchronous_commit = off) is read back too.
    for i in 0..5 {
        let note = format!("async {i}");
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit = off; INSERT INTO t (note) VALUES ('{note}'); COMMIT"
            ))
            .await
            .expect("asynchronous commit");
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .expect("start transaction read only");
        let row = tx
            .query_one("SELECT count(*) FROM t WHERE note = $1", &[&note])
            .await
            .expect("read back");
        tx.commit().await.expect("commit");
        assert_eq!(row.get::<_, i64>(0), 1, "{note} was missed");
    }

    // What is not declared read-only goes to the leader.
    assert!(
        !in_recovery(&client).await,
        "an undeclared SELECT runs on the leader"
    );
    client
        .batch_execute("BEGIN READ WRITE")
        .await
        .expect("begin read write");
    assert!(
        !in_recovery(&client).await,
        "BEGIN READ WRITE runs on the leader"
    );
    client.batch_execute("COMMIT").await.expect("commit");

    // A lone BEGIN (as psycopg2 sends it), then SET TRANSACTION READ ONLY: the replica.
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .expect("set transaction read only");
    assert!(
        in_recovery(&client).await,
        "BEGIN; SET TRANSACTION READ ONLY runs on a replica"
    );
    client.batch_execute("COMMIT").await.expect("commit");
    // A lone BEGIN followed by a write: the leader, in one transaction.
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute("INSERT INTO t (note) VALUES ('in a transaction')", &[])
        .await
        .expect("insert after a lone BEGIN");
    assert!(!in_recovery(&client).await);
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let rolled_back = simple_value(
        &client,
        "SELECT count(*) FROM t WHERE note = 'in a transaction'",
    )
    .await;
    assert_eq!(
        rolled_back, "0",
        "the BEGIN the router held ran: ROLLBACK undid the insert"
    );

    // The session default: every transaction is read-only, so every one goes to a replica.
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .expect("set default_transaction_read_only");
    for _ in 0..3 {
        assert!(
            in_recovery(&client).await,
            "default_transaction_read_only on: a replica"
        );
    }
    client
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .expect("reset default_transaction_read_only");
    assert!(
        !in_recovery(&client).await,
        "default_transaction_read_only off: the leader"
    );

    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains("read_your_writes_total{outcome=\"leader\"}"),
        "the fallbacks to the leader are counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_carries_causality_to_a_new_connection_and_a_bad_one_is_refused() {
    let (cluster, router, auto) = start_auto().await;
    apply_delay(&cluster, Some("2s")).await;

    // psql (libpq): the write and the token in one session.
    let conninfo = support::conninfo(auto, "app", "postgres", "");
    let out = psql(
        &conninfo,
        &[
            "INSERT INTO t (note) VALUES ('token')",
            "SHOW pgbaton.last_commit_lsn",
        ],
    )
    .await;
    let token = psql_ok(&out, "write and read the token");
    let token = token.lines().last().unwrap_or_default().to_string();
    assert!(
        token.contains('/') && token != "0/0",
        "SHOW pgbaton.last_commit_lsn gives a WAL position: {token:?}"
    );
    let leader = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("direct connection");
    let row = leader
        .query_one(
            "SELECT $1::text::pg_lsn <= pg_current_wal_insert_lsn()",
            &[&token],
        )
        .await
        .expect("compare");
    assert!(
        row.get::<_, bool>(0),
        "the token is a position the leader has written"
    );

    // A new connection on the read listener with the token: never the delayed replica.
    let options = format!("-c pgbaton.min_lsn={token}");
    let reader = connect(router.read, Some(&options)).await;
    let seen = simple_value(&reader, "SELECT count(*) FROM t WHERE note = 'token'").await;
    assert_eq!(seen, "1", "a read with the token sees the write");
    assert!(
        !in_recovery(&reader).await,
        "the delayed replica has not replayed the token: the leader serves it"
    );
    // Once the replica has replayed it, the replica serves the same token.
    apply_delay(&cluster, None).await;
    let reader = connect(router.read, Some(&options)).await;
    support::eventually("the replica to serve the token", T, || async {
        in_recovery(&reader).await.then_some(())
    })
    .await;
    let seen = simple_value(&reader, "SELECT count(*) FROM t WHERE note = 'token'").await;
    assert_eq!(seen, "1");

    // The ParameterStatus after a commit: the same token a SHOW gives.
    let client = connect(auto, None).await;
    client
        .execute("INSERT INTO t (note) VALUES ('status')", &[])
        .await
        .expect("insert");
    let shown = simple_value(&client, "SHOW pgbaton.last_commit_lsn").await;
    assert_ne!(shown, "0/0");

    // A malformed token: a clear error, nothing routed.
    let bad = support::app_config(router.read, Some("-c pgbaton.min_lsn=yesterday"));
    let Err(error) = connect_config(&bad).await else {
        panic!("a malformed token is refused");
    };
    let text = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(
        text.contains("pgbaton.min_lsn") && text.contains("yesterday"),
        "the error names the parameter and the value: {text}"
    );
}

/// psycopg2 (Debian's python3-psycopg2) on the auto listener: its default mode sends a lone
/// `BEGIN` before every transaction (the router holds it and sends it with the statement
/// after it, to the leader here); `set_session(readonly=True)` sends `BEGIN READ ONLY`, which
/// goes to the replica once it has the client's commit. Writes, errors, rollbacks and COPY
/// keep working; every read-only transaction sees the write before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_reads_its_writes_through_the_auto_listener() {
    let (_cluster, _router, auto) = start_auto().await;
    let script = r#"
import io, sys, psycopg2
dsn = sys.argv[1]
conn = psycopg2.connect(dsn)
cur = conn.cursor()
seen = on_replica = 0
for i in range(30):
    cur.execute("INSERT INTO t (note) VALUES (%s) RETURNING id", ("psy%d" % i,))
    (row_id,) = cur.fetchone()
    conn.commit()
    conn.set_session(readonly=True)
    cur.execute("SELECT count(*), pg_is_in_recovery() FROM t WHERE id = %s", (row_id,))
    count, replica = cur.fetchone()
    conn.commit()
    conn.set_session(readonly=False)
    seen += count
    on_replica += replica
# An error after the held BEGIN, then a rollback, then COPY in a transaction.
try:
    cur.execute("SELECT 1/0")
except psycopg2.errors.DivisionByZero:
    conn.rollback()
cur.copy_expert("COPY t (note) FROM STDIN", io.StringIO("psycopy\n" * 20))
conn.commit()
cur.execute("SELECT count(*) FROM t WHERE note = 'psycopy'")
copied = cur.fetchone()[0]
conn.commit()
print(seen, on_replica, copied)
"#;
    let dsn = format!(
        "host=127.0.0.1 port={} user=app dbname=postgres",
        auto.port()
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(
        fields.first(),
        Some(&"30"),
        "every read saw its write: {stdout}"
    );
    let on_replica: usize = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
    assert!(on_replica >= 1, "no read ran on the replica: {stdout}");
    assert_eq!(
        fields.get(2),
        Some(&"20"),
        "COPY after a held BEGIN: {stdout}"
    );
}

/// The token through the extended protocol (tokio-postgres prepares every query: a named
/// statement, binary results): the router answers the SHOW's Parse, Describe, Bind, Execute
/// and Sync itself, each Execute with the token of that moment; pipelined behind a write, it
/// is answered after the write's commit. JDBC: `drivers.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_shown_to_drivers_that_prepare() {
    let (cluster, _router, auto) = start_auto().await;
    let client = connect(auto, None).await;
    let lsn = |text: String| {
        pgbaton_router_test_lsn(&text).unwrap_or_else(|| panic!("a WAL position: {text:?}"))
    };
    let show = client
        .prepare("SHOW pgbaton.last_commit_lsn")
        .await
        .expect("prepare the SHOW");
    assert_eq!(show.columns().len(), 1);
    assert_eq!(show.columns()[0].name(), "pgbaton.last_commit_lsn");
    let before = lsn(client.query_one(&show, &[]).await.expect("show").get(0));
    let mut last = before;
    for round in 0..3 {
        client
            .execute(
                "INSERT INTO t (note) VALUES ($1)",
                &[&format!("ext{round}")],
            )
            .await
            .expect("insert");
        // The same prepared statement, executed again: the token of now.
        let now = lsn(client.query_one(&show, &[]).await.expect("show").get(0));
        assert!(
            now > last,
            "round {round}: the token moved on ({now:X} > {last:X})"
        );
        last = now;
        // An unnamed statement each time (query_one with a text), same value.
        let again = lsn(client
            .query_one("SHOW pgbaton.last_commit_lsn", &[])
            .await
            .expect("show")
            .get(0));
        assert_eq!(again, now);
    }
    // Pipelined: the SHOW's batch (Bind, Execute, Sync) right behind a write's.
    let write = client
        .prepare("INSERT INTO t (note) VALUES ('pipelined')")
        .await
        .expect("prepare the write");
    let insert = client.execute(&write, &[]);
    let shown = client.query_one(&show, &[]);
    let (inserted, shown) = tokio::join!(insert, shown);
    inserted.expect("insert");
    let shown = lsn(shown.expect("show").get(0));
    assert!(shown > last, "answered after the write committed");
    // The leader has written every token it was shown.
    let leader = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("direct connection");
    let written: String = leader
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("insert position")
        .get(0);
    assert!(shown <= lsn(written));
    // The simple protocol still gives the same.
    assert_eq!(
        lsn(simple_value(&client, "SHOW pgbaton.last_commit_lsn").await),
        shown
    );
    // Closing the statement (dropping it) is answered too, and the connection goes on.
    drop(show);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("after")
        .get(0);
    assert_eq!(one, 1);
}

/// `X/Y` as PostgreSQL writes a WAL position.
fn pgbaton_router_test_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}
