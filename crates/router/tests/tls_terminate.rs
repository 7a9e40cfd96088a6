//! `tls: terminate` on real PostgreSQL 15 (a primary and a streaming replica, no TLS of
//! their own) and etcd, through psql: the client negotiates TLS 1.3 with the router's
//! certificate, the server sees a plain connection, and every routing rule still applies
//! inside TLS (write listener → leader, read listener → replica, `pgbaton.target` in the
//! startup). A plain-text client still works, unless `tls_required` is on: then it gets a
//! FATAL 08P01 "TLS required".

mod support;

use std::path::{Path, PathBuf};

use pgbaton_router::{RouterConfig, TlsMode};
use support::{conninfo, psql, psql_ok, Cluster, RunningRouter};

const SSL_QUERY: &str =
    "SELECT pg_is_in_recovery(), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())";

/// The router's test certificate for 127.0.0.1.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    pgbaton_testkit::self_signed_cert(dir, "router")
}

fn terminating(cluster: &Cluster, dir: &Path) -> RouterConfig {
    let (cert, key) = certificate(dir);
    let mut cfg = cluster.router_config();
    cfg.tls = TlsMode::Terminate;
    cfg.tls_certfile = Some(cert);
    cfg.tls_keyfile = Some(key);
    cfg
}

async fn ready(router: &RunningRouter) {
    router
        .wait_status("the leader and the readable replica", |s| {
            support::leader_name(s).as_deref() == Some("node1")
                && support::readable_names(s) == ["node2"]
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_runs_tls_at_the_router_and_keeps_every_routing_rule() {
    let cluster = Cluster::start(true).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let router = RunningRouter::start(terminating(&cluster, dir.path())).await;
    ready(&router).await;
    let status = router.status().await;
    assert_eq!(status["tls"], "terminate", "{status}");

    // Write listener, SCRAM inside TLS: TLS 1.3 to the router, plain on the server, leader.
    let info = conninfo(router.write, "postgres", "postgres", "sslmode=require");
    let out = psql_ok(&psql(&info, &["\\conninfo", SSL_QUERY]).await, "write");
    assert!(
        out.contains("SSL connection (protocol: TLSv1.3"),
        "the client reports TLS: {out}"
    );
    assert!(out.ends_with("f|f"), "the leader, over plain TCP: {out}");

    // Read listener: a replica.
    let info = conninfo(router.read, "postgres", "postgres", "sslmode=require");
    let out = psql_ok(&psql(&info, &["\\conninfo", SSL_QUERY]).await, "read");
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    assert!(out.ends_with("t|f"), "a replica: {out}");

    // The role option is read from the startup inside TLS.
    let info = conninfo(
        router.write,
        "app",
        "postgres",
        "sslmode=require options='-c pgbaton.target=read'",
    );
    let out = psql_ok(&psql(&info, &[SSL_QUERY]).await, "pgbaton.target=read");
    assert_eq!(out, "t|f", "routed to the replica by the option");

    // A plain-text client on the same listener still works.
    let info = conninfo(router.write, "app", "postgres", "sslmode=disable");
    let out = psql_ok(&psql(&info, &["\\conninfo", SSL_QUERY]).await, "plain");
    assert!(!out.contains("SSL connection"), "{out}");
    assert!(out.ends_with("f|f"), "{out}");

    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"pgbaton_router_tls_handshakes_total{outcome="ok"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_text_startups() {
    let cluster = Cluster::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = terminating(&cluster, dir.path());
    cfg.tls_required = true;
    let router = RunningRouter::start(cfg).await;
    router
        .wait_status("the router to see the leader", |s| {
            support::leader_name(s).as_deref() == Some("node1")
        })
        .await;

    let info = conninfo(router.write, "app", "postgres", "sslmode=disable");
    let out = psql(&info, &["SELECT 1"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a plain startup must be refused");
    assert!(stderr.contains("TLS required"), "{stderr}");
    // sslmode=prefer negotiates TLS and gets through.
    let info = conninfo(router.write, "app", "postgres", "sslmode=prefer");
    let out = psql_ok(&psql(&info, &[SSL_QUERY]).await, "prefer");
    assert_eq!(out, "f|f");
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"pgbaton_router_refusals_total{reason="tls_required"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_terminate_router_without_its_certificate_does_not_start() {
    let mut cfg = RouterConfig::new(vec!["127.0.0.1:1".into()], "/service/", "c");
    cfg.write_listen = "127.0.0.1:0".into();
    cfg.read_listen = "127.0.0.1:0".into();
    cfg.tls = TlsMode::Terminate;
    cfg.tls_certfile = Some("/nonexistent/router.crt".into());
    cfg.tls_keyfile = Some("/nonexistent/router.key".into());
    let err = match pgbaton_router::Router::bind(cfg).await {
        Ok(_) => panic!("must not start"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("tls_certfile") && err.contains("/nonexistent/router.crt"),
        "{err}"
    );
}
