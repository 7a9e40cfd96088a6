//! Replication over TLS with the replica checking the primary's certificate
//! (`authentication.replication.sslmode: verify-full`, `sslrootcert`), on real PostgreSQL 15:
//! certificates made with openssl, a primary that accepts replication over TLS only, a clone
//! refused against a CA that did not sign the primary's certificate, then a clone that
//! streams with the settings in `primary_conninfo`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{start, streaming, test_parameters, upstream, Sandbox};
use pgbaton_postgres::{basebackup, ensure_users, initdb, write_config, StandbyConfig, StopMode};

const T: Duration = Duration::from_secs(10);

/// ca.crt (signs server.crt for 127.0.0.1), other-ca.crt (signs nothing here); the files
/// owned by the postgres user, keys 0600.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).expect("pki dir");
    pgbaton_testkit::test_ca(dir, "ca");
    pgbaton_testkit::test_ca(dir, "other-ca");
    pgbaton_testkit::signed_cert(dir, "ca", "server", "subjectAltName=IP:127.0.0.1");
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("postgres user");
    for entry in std::fs::read_dir(dir).expect("pki dir") {
        let path = entry.expect("entry").path();
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).expect("chown");
        let mode = if path.extension().is_some_and(|e| e == "key") {
            0o600
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).expect("chown");
}

fn tls(mode: &str, rootcert: &Path) -> Vec<(String, String)> {
    vec![
        ("sslmode".into(), mode.into()),
        (
            "sslrootcert".into(),
            rootcert.to_string_lossy().into_owned(),
        ),
    ]
}

#[tokio::test]
async fn a_replica_verifies_the_primary_certificate_and_streams_over_tls() {
    let sandbox = Sandbox::new();
    let pki = sandbox.path().join("pki");
    make_certificates(&pki);
    let node1 = sandbox.member("node1");

    // The primary: TLS on, replication accepted over TLS only.
    initdb(&node1, &[]).await.expect("initdb");
    let mut parameters = test_parameters();
    parameters.insert("ssl".into(), "on".into());
    parameters.insert(
        "ssl_cert_file".into(),
        pki.join("server.crt").to_string_lossy().into_owned(),
    );
    parameters.insert(
        "ssl_key_file".into(),
        pki.join("server.key").to_string_lossy().into_owned(),
    );
    let hba = vec!["hostssl replication replicator 127.0.0.1/32 scram-sha-256".to_string()];
    write_config(&node1, &parameters, &hba, None).expect("write_config");
    let mut pm1 = start(&node1).await;
    ensure_users(&node1, &[], T)
        .await
        .expect("replication role");

    // A CA that did not sign the primary's certificate: the clone is refused, and says why.
    let mut wrong = sandbox.member("node2");
    wrong.replication_tls = tls("verify-full", &pki.join("other-ca.crt"));
    let err = basebackup(&wrong, &upstream(&node1), &[])
        .await
        .expect_err("a clone against the wrong CA must fail");
    let text = err.to_string();
    assert!(
        text.contains("certificate verify failed"),
        "the error names the certificate check: {text}"
    );
    assert!(
        !wrong.data_dir.join("PG_VERSION").exists(),
        "nothing is left of the refused clone"
    );

    // Without TLS settings the default (prefer) would encrypt but not check; with
    // verify-full and the right CA the clone works and the replica streams over TLS.
    let mut node3 = sandbox.member("node3");
    node3.replication_tls = tls("verify-full", &pki.join("ca.crt"));
    basebackup(&node3, &upstream(&node1), &[])
        .await
        .expect("basebackup over TLS with verify-full");
    let standby = StandbyConfig {
        upstream: Some(upstream(&node1)),
        slot_name: None,
        apply_delay: None,
    };
    write_config(&node3, &parameters, &hba, Some(&standby)).expect("write_config");
    let conf = std::fs::read_to_string(node3.data_dir.join("postgresql.conf")).expect("conf");
    let conninfo = conf
        .lines()
        .find(|l| l.starts_with("primary_conninfo"))
        .unwrap_or_else(|| panic!("no primary_conninfo in {conf}"));
    assert!(
        conninfo.contains("sslmode=''verify-full''") && conninfo.contains("ca.crt"),
        "{conninfo}"
    );
    let mut pm3 = start(&node3).await;
    streaming(&node3).await;

    let client = pgbaton_postgres::connect(&node1, T).await.expect("connect");
    let row = client
        .query_one(
            "SELECT s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
             WHERE r.application_name = 'node3'",
            &[],
        )
        .await
        .expect("node3's walsender");
    let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
    eprintln!("node3 streams with ssl={ssl} version={version:?}");
    assert!(ssl, "the walsender of node3 uses TLS");

    pm3.stop(StopMode::Fast, T).await.expect("stop node3");
    pm1.stop(StopMode::Fast, T).await.expect("stop node1");
}
