//! `tls: passthrough` and `tls: refuse` on real PostgreSQL 15 (with `ssl=on` and a
//! self-signed certificate) and etcd, through psql: with passthrough the TLS session runs
//! end to end to the server picked by the listener's role and is still closed when the
//! leader changes; with refuse `sslmode=require` fails at the router and `sslmode=prefer`
//! falls back to plain text.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use nix::unistd::User;
use pgbaton_router::TlsMode;
use support::{eventually, Cluster, RunningRouter, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SSL_QUERY: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// Give the primary a self-signed certificate and turn `ssl` on (a reload suffices).
async fn enable_ssl(cluster: &Cluster) {
    let data = &cluster.primary.spec.data_dir;
    let (crt, key) = pgbaton_testkit::self_signed_cert(data, "server");
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .expect("postgres user");
    for file in [&crt, &key] {
        nix::unistd::chown(file, Some(user.uid), Some(user.gid)).expect("chown");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("connect");
    for statement in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
        admin.batch_execute(statement).await.expect(statement);
    }
    eventually("ssl to be on after the reload", T, || async {
        let client = pgbaton_postgres::connect(&cluster.primary.spec, T)
            .await
            .ok()?;
        let row = client.query_one("SHOW ssl", &[]).await.ok()?;
        (row.get::<_, String>(0) == "on").then_some(())
    })
    .await;
}

/// psql through `addr` as `postgres` (SCRAM) with `sslmode`, running `SSL_QUERY`.
async fn psql(addr: std::net::SocketAddr, sslmode: &str) -> Output {
    let conninfo = support::conninfo(addr, "postgres", "postgres", &format!("sslmode={sslmode}"));
    support::psql(&conninfo, &[SSL_QUERY]).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_ssl(out: &Output, expected: &str, what: &str) {
    assert!(
        out.status.success(),
        "{what}: psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(out), expected, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_runs_tls_end_to_end_and_closes_on_leader_change() {
    let cluster = Cluster::start(false).await;
    enable_ssl(&cluster).await;
    let mut cfg = cluster.router_config();
    cfg.tls = TlsMode::Passthrough;
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the router to see the leader", |s| {
            support::leader_name(s).as_deref() == Some("node1")
        })
        .await;

    let out = psql(router.write, "require").await;
    assert_ssl(&out, "t", "write listener, sslmode=require");
    // The read listener: no replica, so the leader by the default fallback.
    let out = psql(router.read, "require").await;
    assert_ssl(&out, "t", "read listener, sslmode=require");
    // A plain-text client still gets the normal path.
    let out = psql(router.write, "disable").await;
    assert_ssl(&out, "f", "write listener, sslmode=disable");
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(
            r#"pgbaton_router_routing_decisions_total{target="read",decision="leader_fallback"} 1"#
        ),
        "{metrics}"
    );

    // A raw SSLRequest gets the server's `S`; the (idle) session is then closed by the
    // router when the leader key goes away.
    let mut raw = tokio::net::TcpStream::connect(router.write)
        .await
        .expect("connect");
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("SSLRequest");
    let mut answer = [0u8; 1];
    tokio::time::timeout(T, raw.read_exact(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&answer, b"S", "the server's answer is relayed");
    router
        .wait_status("the passed-through session to count as active", |s| {
            s["active_connections"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|c| c["member"] == "node1" && c["role"] == "write")
            })
        })
        .await;
    cluster.primary.release_leader().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(T, raw.read_to_end(&mut rest))
        .await
        .expect("the router closed the session when the leader went away");
    assert!(
        rest.is_empty(),
        "no bytes after the answer ({read:?}): {rest:?}"
    );
    // At least this session (psql's own, if it had not ended yet, may be closed as well).
    let metrics = router.http_get("/metrics").await;
    let closed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pgbaton_router_closed_on_leader_change_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(closed >= 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_answers_n_so_require_fails_and_prefer_falls_back() {
    let cluster = Cluster::start(false).await;
    enable_ssl(&cluster).await;
    let cfg = cluster.router_config();
    assert_eq!(cfg.tls, TlsMode::Refuse, "refuse is the default");
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the router to see the leader", |s| {
            support::leader_name(s).as_deref() == Some("node1")
        })
        .await;

    let out = psql(router.write, "require").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sslmode=require must fail: {out:?}");
    assert!(stderr.contains("does not support SSL"), "{stderr}");
    let out = psql(router.write, "prefer").await;
    assert_ssl(&out, "f", "write listener, sslmode=prefer");
    // The server itself does TLS: only the router refused it.
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.primary.spec.port));
    let out = psql(direct, "require").await;
    assert_ssl(&out, "t", "direct to the server, sslmode=require");
}
