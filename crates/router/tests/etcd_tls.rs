//! The router reads the cluster from an etcd that speaks only TLS and asks for client
//! certificates (`etcd3: protocol: https, cacert, cert, key`, as the agents' files say it),
//! with certificates made by openssl; bad settings are refused at start with the key named.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgbaton_dcs::{
    load_cluster_with, ClusterPath, Dcs, EtcdAccess, EtcdDcs, EtcdTls, MemberDoc, ETCD_BIN,
};
use pgbaton_router::RouterConfig;
use support::{eventually, free_port, leader_name, RunningRouter};

const SCOPE: &str = "tls-routed";

/// ca.crt signs server.crt (127.0.0.1) and client.crt; other-ca.crt signs nothing here.
fn make_certificates(dir: &Path) {
    pgbaton_testkit::test_ca(dir, "ca");
    pgbaton_testkit::test_ca(dir, "other-ca");
    pgbaton_testkit::signed_cert(dir, "ca", "server", "subjectAltName=IP:127.0.0.1");
    pgbaton_testkit::signed_cert(dir, "ca", "client", "extendedKeyUsage=clientAuth");
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

fn access(dir: &Path, ca: &str) -> EtcdAccess {
    EtcdAccess {
        tls: Some(EtcdTls {
            cacert: Some(dir.join(ca)),
            cert: Some(dir.join("client.crt")),
            key: Some(dir.join("client.key")),
        }),
        user: None,
    }
}

/// etcd with TLS on its client port, requiring client certificates signed by ca.crt; started
/// again on other ports when it exits before answering (a port taken meanwhile).
async fn start_etcd(dir: &Path) -> Etcd {
    assert!(
        Path::new(ETCD_BIN).exists(),
        "{ETCD_BIN} is missing: apt-get install etcd-server (scripts/install-deps.sh)"
    );
    for attempt in 0..3 {
        let data = dir.join(format!("etcd-{attempt}"));
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join(format!("etcd-{attempt}.log"))).expect("log");
        let child = Command::new(ETCD_BIN)
            .args(["--name", "tls", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .arg("--cert-file")
            .arg(dir.join("server.crt"))
            .arg("--key-file")
            .arg(dir.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(dir.join("ca.crt"))
            .arg("--client-cert-auth")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let mut etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{client}"),
        };
        let good = access(dir, "ca.crt");
        for _ in 0..100 {
            if etcd.child.try_wait().expect("etcd status").is_some() {
                break;
            }
            let path = ClusterPath::new("/service/", SCOPE);
            let endpoints = [etcd.endpoint.clone()];
            if load_cluster_with(&endpoints, &good, &path, Duration::from_secs(1))
                .await
                .is_ok()
            {
                return etcd;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("etcd with TLS did not come up (logs in {})", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_a_cluster_in_an_etcd_that_requires_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let etcd = start_etcd(dir.path()).await;

    // An agent's view, written over TLS: node1 leads.
    let node1 = EtcdDcs::new(
        vec![etcd.endpoint.clone()],
        ClusterPath::new("/service/", SCOPE),
        "node1",
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .with_access(&access(dir.path(), "ca.crt"))
    .expect("the certificate files");
    node1.keepalive().await.expect("keepalive over TLS");
    node1
        .touch_member(&MemberDoc {
            conn_url: format!("postgres://127.0.0.1:{}/postgres", free_port()),
            api_url: "http://127.0.0.1:9/patroni".into(),
            state: "running".into(),
            role: "primary".into(),
            version: "0.1.0".into(),
            xlog_location: Some(1 << 20),
            timeline: Some(1),
            ..MemberDoc::default()
        })
        .await
        .expect("member document");
    assert!(node1.acquire_leader().await.expect("acquire"), "leader key");

    // The router's file says it as the agents' does, and reads back to the same.
    let d = dir.path().display();
    let yaml = format!(
        "scope: {SCOPE}\netcd3:\n  hosts: [{}]\n  protocol: https\n  cacert: {d}/ca.crt\n  cert: {d}/client.crt\n  key: {d}/client.key\nwrite:\n  listen: 127.0.0.1:0\nread:\n  listen: 127.0.0.1:0\napi:\n  listen: 127.0.0.1:0\nlag_source: dcs\n",
        etcd.endpoint
    );
    let cfg = RouterConfig::from_yaml_str(&yaml).expect("router.yml with etcd TLS");
    assert_eq!(cfg.etcd_access, access(dir.path(), "ca.crt"));
    assert_eq!(
        RouterConfig::from_yaml_str(&cfg.to_yaml()).expect("reads back"),
        cfg
    );
    let router = RunningRouter::start(cfg).await;
    eventually(
        "the router to see node1 lead",
        Duration::from_secs(15),
        || async {
            (leader_name(&router.status().await).as_deref() == Some("node1")).then_some(())
        },
    )
    .await;

    // Bad settings are refused at start, naming what to fix.
    let error = |text: &str| {
        RouterConfig::from_yaml_str(text)
            .expect_err("must be refused")
            .to_string()
    };
    let e = error(&yaml.replace("  protocol: https\n", ""));
    assert!(
        e.contains("etcd3.protocol") && e.contains("https"),
        "TLS files over http: {e}"
    );
    let e = error(&yaml.replace("client.key", "missing.key"));
    assert!(
        e.contains("etcd3") && e.contains("missing.key"),
        "a missing key file: {e}"
    );
    let e = error(&yaml.replace("protocol: https", "protocol: grpc"));
    assert!(e.contains("etcd3.protocol"), "{e}");
}
