//! etcd over TLS with client certificates and user/password authentication, as production
//! etcd runs (Patroni's `etcd3: protocol: https, cacert, cert, key, username, password`), on a
//! real etcd 3.4: the right settings read and write; a wrong CA, an expired server
//! certificate, a missing client certificate and a wrong password each fail with an error
//! that names the cause.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgbaton_dcs::{load_cluster_with, ClusterPath, Dcs, EtcdAccess, EtcdDcs, EtcdTls, ETCD_BIN};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

const TIMEOUT: Duration = Duration::from_secs(3);

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("writing a PEM file");
        path
    }

    /// A CA; returns its issuer and writes `<name>.crt`.
    fn ca(&self, name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("self-signed CA");
        self.write(&format!("{name}.crt"), &ca.pem());
        ca
    }

    /// A leaf certificate for 127.0.0.1 signed by `ca`; writes `<name>.crt` and `<name>.key`.
    fn leaf(
        &self,
        name: &str,
        ca: &CertifiedIssuer<'static, KeyPair>,
        client: bool,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("signing");
        (
            self.write(&format!("{name}.crt"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Etcd {
    child: Child,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd with TLS on its client port, requiring client certificates signed by `ca`.
fn start_etcd(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> Etcd {
    assert!(
        Path::new(ETCD_BIN).exists(),
        "{ETCD_BIN} is missing: apt-get install etcd-server (scripts/install-deps.sh)"
    );
    std::fs::create_dir_all(dir).expect("etcd dir");
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
    let child = Command::new(ETCD_BIN)
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .arg("--cert-file")
        .arg(cert)
        .arg("--key-file")
        .arg(key)
        .arg("--trusted-ca-file")
        .arg(ca)
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting etcd");
    Etcd {
        child,
        endpoint: format!("127.0.0.1:{client}"),
    }
}

/// etcdctl against the TLS endpoint, as root (before authentication is on) or as `user`.
fn etcdctl(etcd: &Etcd, pki: &Pki, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", etcd.endpoint))
        .arg(format!("--cacert={}", pki.dir.join("ca.crt").display()))
        .arg(format!("--cert={}", pki.dir.join("client.crt").display()))
        .arg(format!("--key={}", pki.dir.join("client.key").display()))
        .args(args)
        .output()
        .expect("running etcdctl")
}

fn access(pki: &Pki, ca: &str, client: bool, password: &str) -> EtcdAccess {
    EtcdAccess {
        tls: Some(EtcdTls {
            cacert: Some(pki.dir.join(ca)),
            cert: client.then(|| pki.dir.join("client.crt")),
            key: client.then(|| pki.dir.join("client.key")),
        }),
        user: Some(("pgbaton".to_string(), password.to_string())),
    }
}

async fn error_of(etcd: &Etcd, access: &EtcdAccess) -> String {
    match load_cluster_with(
        std::slice::from_ref(&etcd.endpoint),
        access,
        &ClusterPath::new("/service/", "tls"),
        TIMEOUT,
    )
    .await
    {
        Ok(_) => panic!("expected an error with {access:?}"),
        Err(e) => {
            eprintln!("error: {e}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn etcd_over_tls_with_client_certificates_and_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki {
        dir: dir.path().to_path_buf(),
    };
    let ca = pki.ca("ca");
    pki.ca("other-ca");
    let (server_crt, server_key) = pki.leaf("server", &ca, false, false);
    pki.leaf("client", &ca, true, false);
    // Wait for etcd; start it again on other ports if it exited (a port taken meanwhile).
    let mut started = None;
    for _ in 0..3 {
        let mut etcd = start_etcd(
            dir.path(),
            &server_crt,
            &server_key,
            &pki.dir.join("ca.crt"),
        );
        for _ in 0..100 {
            if etcdctl(&etcd, &pki, &["endpoint", "health"])
                .status
                .success()
            {
                break;
            }
            if etcd.child.try_wait().expect("etcd status").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if etcd.child.try_wait().expect("etcd status").is_none()
            && etcdctl(&etcd, &pki, &["endpoint", "health"])
                .status
                .success()
        {
            started = Some(etcd);
            break;
        }
        let _ = std::fs::remove_dir_all(dir.path().join("data"));
    }
    let etcd = started.expect("etcd did not come up with TLS (see etcd.log in the test dir)");
    // Create users and turn authentication on.
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "pgbaton:secret"],
        &["role", "add", "pgbaton"],
        &[
            "role",
            "grant-permission",
            "pgbaton",
            "--prefix=true",
            "readwrite",
            "/service/",
        ],
        &["user", "grant-role", "pgbaton", "pgbaton"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(&etcd, &pki, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The right settings: the adapter writes and reads under the cluster's prefix.
    let good = access(&pki, "ca.crt", true, "secret");
    let dcs = EtcdDcs::new(
        vec![etcd.endpoint.clone()],
        ClusterPath::new("/service/", "tls"),
        "node1",
        Duration::from_secs(10),
        TIMEOUT,
    )
    .with_access(&good)
    .expect("reading the certificate files");
    assert!(
        dcs.claim_initialize("node1")
            .await
            .expect("a write over TLS"),
        "the initialize key was free"
    );
    let state = load_cluster_with(
        std::slice::from_ref(&etcd.endpoint),
        &good,
        &ClusterPath::new("/service/", "tls"),
        TIMEOUT,
    )
    .await
    .expect("a read over TLS");
    assert_eq!(state.initialize.as_deref(), Some("node1"));

    // A CA that did not sign etcd's certificate.
    let err = error_of(&etcd, &access(&pki, "other-ca.crt", true, "secret")).await;
    assert!(
        err.to_lowercase().contains("certificate") && err.contains("etcd3.cacert"),
        "wrong CA: {err}"
    );
    // No client certificate where etcd requires one.
    let err = error_of(&etcd, &access(&pki, "ca.crt", false, "secret")).await;
    assert!(
        err.contains("etcd unreachable") && err.contains("etcd3.cert"),
        "no client certificate: {err}"
    );
    // A wrong password.
    let err = error_of(&etcd, &access(&pki, "ca.crt", true, "wrong")).await;
    assert!(
        err.contains("authentication failed") && err.contains("etcd3.username"),
        "wrong password: {err}"
    );
    // A missing certificate file is an error before any connection, naming the file.
    let mut missing = good.clone();
    missing.tls.as_mut().expect("tls").cacert = Some(pki.dir.join("nope.crt"));
    let err = EtcdDcs::new(
        vec![etcd.endpoint.clone()],
        ClusterPath::new("/service/", "tls"),
        "node1",
        Duration::from_secs(10),
        TIMEOUT,
    )
    .with_access(&missing)
    .expect_err("a missing CA file")
    .to_string();
    assert!(
        err.contains("etcd3.cacert") && err.contains("nope.crt"),
        "{err}"
    );
    drop(etcd);

    // An expired server certificate.
    let (old_crt, old_key) = pki.leaf("expired", &ca, false, true);
    let expired = start_etcd(
        &dir.path().join("expired-etcd"),
        &old_crt,
        &old_key,
        &pki.dir.join("ca.crt"),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = error_of(&expired, &access(&pki, "ca.crt", true, "secret")).await;
    assert!(
        err.to_lowercase().contains("expired") || err.contains("certificate"),
        "expired server certificate: {err}"
    );
}
