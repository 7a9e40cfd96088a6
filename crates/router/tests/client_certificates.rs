//! Client certificates where the router terminates TLS (`tls: terminate`, `tls_cafile`), on
//! real PostgreSQL 15 and etcd through psql: the hba method `cert` lets in a client whose
//! certificate, signed by the CA, names the user; `clientcert=verify-ca` asks for such a
//! certificate besides the password; a missing certificate, one naming another user, and one
//! another CA signed are refused with PostgreSQL's messages; plain-text clients follow their
//! own (`hostnossl`) lines. The configuration check refuses certificate rules without a CA
//! and a CA without `tls: terminate`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::{RouterConfig, TlsMode};
use support::{conninfo, psql, psql_ok, Cluster, RunningRouter};

const RULES: [&str; 3] = [
    "hostssl all app 127.0.0.1/32 cert",
    "hostssl all postgres 127.0.0.1/32 scram-sha-256 clientcert=verify-ca",
    "hostnossl all app 127.0.0.1/32 trust",
];

/// The router's server certificate, a client CA with certificates for `app` and `postgres`,
/// another CA with its own `app` certificate, and the userlist with the superuser's password.
fn files(dir: &Path) {
    pgbaton_testkit::self_signed_cert(dir, "router");
    pgbaton_testkit::test_ca(dir, "clients");
    pgbaton_testkit::test_ca(dir, "rogue");
    for name in ["app", "postgres"] {
        pgbaton_testkit::signed_cert(dir, "clients", name, "basicConstraints=CA:FALSE");
    }
    std::fs::create_dir(dir.join("rogue")).expect("dir");
    std::fs::copy(dir.join("rogue.crt"), dir.join("rogue/rogue.crt")).expect("copy");
    std::fs::copy(dir.join("rogue.key"), dir.join("rogue/rogue.key")).expect("copy");
    pgbaton_testkit::signed_cert(
        &dir.join("rogue"),
        "rogue",
        "app",
        "basicConstraints=CA:FALSE",
    );
    for key in ["app.key", "postgres.key", "rogue/app.key"] {
        // libpq refuses a key others can read.
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"super secret\"\n").expect("userlist");
}

fn config(mut cfg: RouterConfig, dir: &Path) -> RouterConfig {
    cfg.tls = TlsMode::Terminate;
    cfg.tls_certfile = Some(dir.join("router.crt"));
    cfg.tls_keyfile = Some(dir.join("router.key"));
    cfg.tls_cafile = Some(dir.join("clients.crt"));
    cfg.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: RULES.iter().map(|l| l.to_string()).collect(),
        auth_file: Some(dir.join("userlist.txt")),
        ..AuthConfig::default()
    });
    cfg
}

/// TLS with the client certificate `cert` (a path stem in `dir`, or none).
fn tls(dir: &Path, cert: Option<&str>) -> String {
    match cert {
        None => "sslmode=require".into(),
        Some(stem) => format!(
            "sslmode=require sslcert={} sslkey={}",
            dir.join(format!("{stem}.crt")).display(),
            dir.join(format!("{stem}.key")).display()
        ),
    }
}

fn refused(out: &std::process::Output, what: &str, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: let in");
    assert!(stderr.contains(needle), "{what}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_signed_by_tls_cafile_authenticate_and_others_are_refused() {
    let cluster = Cluster::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    files(dir);
    let router = RunningRouter::start(config(cluster.router_config(), dir)).await;
    router
        .wait_status("the leader", |s| {
            support::leader_name(s).as_deref() == Some("node1")
        })
        .await;
    let who = "SELECT current_user";

    // `cert`: the certificate names the user, no password asked.
    let info = conninfo(router.write, "app", "postgres", &tls(dir, Some("app")));
    assert_eq!(
        psql_ok(&psql(&info, &[who]).await, "app with its certificate"),
        "app"
    );

    // No certificate, or one naming another user.
    let info = conninfo(router.write, "app", "postgres", &tls(dir, None));
    refused(
        &psql(&info, &[who]).await,
        "app without a certificate",
        "connection requires a valid client certificate",
    );
    let info = conninfo(router.write, "app", "postgres", &tls(dir, Some("postgres")));
    refused(
        &psql(&info, &[who]).await,
        "app with postgres's certificate",
        "certificate authentication failed for user \"app\"",
    );

    // A certificate another CA signed does not get past the TLS handshake.
    let info = conninfo(
        router.write,
        "app",
        "postgres",
        &tls(&dir.join("rogue"), Some("app")),
    );
    let out = psql(&info, &[who]).await;
    assert!(!out.status.success(), "a foreign CA's certificate let in");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("ssl") || stderr.contains("certificate"),
        "a TLS failure: {stderr}"
    );

    // `clientcert=verify-ca`: any certificate of the CA, and the password.
    let info = conninfo(router.write, "postgres", "postgres", &tls(dir, Some("app")));
    assert_eq!(
        psql_ok(&psql(&info, &[who]).await, "postgres with a CA certificate"),
        "postgres"
    );
    let info = conninfo(router.write, "postgres", "postgres", &tls(dir, None));
    refused(
        &psql(&info, &[who]).await,
        "postgres without a certificate",
        "connection requires a valid client certificate",
    );

    // Plain text follows the hostnossl line.
    let info = conninfo(router.write, "app", "postgres", "sslmode=disable");
    assert_eq!(psql_ok(&psql(&info, &[who]).await, "plain app"), "app");
}

#[test]
fn certificate_rules_need_a_ca_and_the_ca_needs_terminate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    files(dir);
    let base = || RouterConfig::new(vec!["127.0.0.1:2379".into()], "/service/", "routed");
    let mut no_ca = config(base(), dir);
    no_ca.tls_cafile = None;
    let e = no_ca
        .validate()
        .expect_err("cert rules without a CA")
        .to_string();
    assert!(e.contains("tls_cafile") && e.contains("clientcert"), "{e}");

    let mut not_terminating = config(base(), dir);
    not_terminating.tls = TlsMode::Passthrough;
    let e = not_terminating
        .validate()
        .expect_err("a CA without terminate")
        .to_string();
    assert!(e.contains("tls_cafile") && e.contains("terminate"), "{e}");

    let mut unreadable = config(base(), dir);
    unreadable.tls_cafile = Some(dir.join("missing.crt"));
    let e = unreadable
        .validate()
        .expect_err("a missing CA file")
        .to_string();
    assert!(e.contains("tls_cafile") && e.contains("missing.crt"), "{e}");
}
