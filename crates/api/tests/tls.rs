//! The REST API over https: certificates made by the `openssl` command line in a temp dir,
//! a real socket on 127.0.0.1:0, and a client built from `client_tls_config` (tokio-rustls +
//! hyper, since this crate's reqwest has no TLS). Covers reads and auth over TLS, clients
//! that fail the handshake (plain HTTP, silence) not disturbing the others, shutdown, and
//! `load_tls` / `client_tls_config` errors naming the file at fault.

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, Request};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pgbaton_api::rustls::pki_types::ServerName;
use pgbaton_api::rustls::{ClientConfig, ServerConfig};
use pgbaton_api::{
    basic_header, client_tls_config, load_tls, router, Credentials, NodeStatus, TlsError,
    TlsFileRole, TlsFiles, TlsListener,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const DEADLINE: Duration = Duration::from_secs(10);

/// The test certificate for 127.0.0.1 as `<stem>.crt` / `<stem>.key` in `dir`.
fn make_cert(dir: &Path, stem: &str) -> TlsFiles {
    let (certfile, keyfile) = pgbaton_testkit::self_signed_cert(dir, stem);
    TlsFiles { certfile, keyfile }
}

/// A served API; dropping it aborts the server task even when the test fails.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(status: NodeStatus, auth: Option<Credentials>, tls: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(status);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(pgbaton_api::serve_tls(
            listener,
            rx,
            None,
            auth,
            tls,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Resolves the shutdown future and waits for `serve_tls` to return.
    async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("serve_tls did not stop within 10 s of shutdown")
            .expect("serve_tls panicked")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Reply {
    code: u16,
    body: String,
}

/// One request over a fresh TLS connection to `addr`, verified as 127.0.0.1.
async fn https(
    addr: SocketAddr,
    client: &ClientConfig,
    method: Method,
    path: &str,
    authorization: Option<String>,
) -> Result<Reply, String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::new(client.clone()))
            .connect(ServerName::from(addr.ip()), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            code,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| "no reply within 10 s".to_string())?
}

fn trusting(files: &TlsFiles) -> ClientConfig {
    client_tls_config(Some(&files.certfile), false).unwrap()
}

async fn get_patroni(addr: SocketAddr, client: &ClientConfig) -> serde_json::Value {
    let reply = https(addr, client, Method::GET, "/patroni", None)
        .await
        .unwrap();
    assert_eq!(reply.code, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.body))
}

/// Reads until the server closes the connection; panics if it stays open past the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn serves_patroni_over_https_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let server = Server::start(leader(), None, load_tls(&files).unwrap()).await;
    let addr = server.addr;
    let client = trusting(&files);

    let body = get_patroni(addr, &client).await;
    assert_eq!(body["role"], "master", "{body}");
    assert_eq!(body["patroni"]["scope"], "anchor", "{body}");
    let health = https(addr, &client, Method::GET, "/primary", None)
        .await
        .unwrap();
    assert_eq!(health.code, 200, "{}", health.body);

    server.shutdown().await.unwrap();
    assert!(
        https(addr, &client, Method::GET, "/patroni", None)
            .await
            .is_err(),
        "the socket is still served after shutdown"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_dropped_and_https_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let server = Server::start(replica("node2", 0), None, load_tls(&files).unwrap()).await;
    let client = trusting(&files);

    // A plain HTTP client gets an error, not an answer.
    pgbaton_api::install_default_crypto_provider();
    let plain = reqwest::Client::new()
        .get(format!("http://{}/patroni", server.addr))
        .timeout(DEADLINE)
        .send()
        .await;
    assert!(plain.is_err(), "plain http was answered: {plain:?}");
    // The same in raw bytes: the server closes the connection without an HTTP reply.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET /patroni HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut raw).await;
    assert!(
        !received.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&received)
    );

    let body = get_patroni(server.addr, &client).await;
    assert_eq!(body["role"], "replica", "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_blocks_nobody_and_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let timeout = Duration::from_millis(500);
    let listener = TlsListener::new(tcp, load_tls(&files).unwrap()).with_handshake_timeout(timeout);
    let (_tx, rx) = watch::channel(leader());
    let server = tokio::spawn(axum::serve(listener, router(rx, None, None)).into_future());
    struct Abort(JoinHandle<std::io::Result<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _server = Abort(server);

    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // While that handshake is pending, others are served.
    let body = get_patroni(addr, &trusting(&files)).await;
    assert_eq!(body["role"], "master", "{body}");

    let received = read_until_closed(&mut silent).await;
    let waited = started.elapsed();
    assert!(received.is_empty(), "{received:?}");
    assert!(
        waited >= timeout,
        "closed after {waited:?}, before the {timeout:?} timeout"
    );
}

#[tokio::test]
async fn write_endpoints_over_https_still_require_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let auth = Credentials {
        username: "admin".into(),
        password: Some("secret".into()),
    };
    let server = Server::start(leader(), Some(auth), load_tls(&files).unwrap()).await;
    let client = trusting(&files);

    let refused = https(server.addr, &client, Method::POST, "/switchover", None)
        .await
        .unwrap();
    assert_eq!(refused.code, 401, "{}", refused.body);
    let wrong = basic_header("admin", "wrong");
    let refused = https(server.addr, &client, Method::POST, "/restart", Some(wrong))
        .await
        .unwrap();
    assert_eq!(refused.code, 401, "{}", refused.body);
    // The right credentials pass authentication (this server has no commands: 503).
    let right = basic_header("admin", "secret");
    let passed = https(server.addr, &client, Method::POST, "/restart", Some(right))
        .await
        .unwrap();
    assert_eq!(passed.code, 503, "{}", passed.body);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_check_the_server_certificate_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let other = make_cert(dir.path(), "other");
    let server = Server::start(leader(), None, load_tls(&files).unwrap()).await;

    let untrusted = https(
        server.addr,
        &trusting(&other),
        Method::GET,
        "/patroni",
        None,
    )
    .await;
    let err = untrusted
        .err()
        .expect("a certificate from another CA was accepted");
    assert!(err.contains("TLS handshake"), "{err}");
    // The system CA store does not vouch for a self-signed certificate either.
    match client_tls_config(None, false) {
        Ok(system) => {
            let reply = https(server.addr, &system, Method::GET, "/patroni", None).await;
            assert!(
                reply.is_err(),
                "a self-signed certificate passed system roots"
            );
        }
        Err(err) => assert!(matches!(err, TlsError::NoSystemRoots), "{err}"),
    }
    let insecure = client_tls_config(None, true).unwrap();
    let body = get_patroni(server.addr, &insecure).await;
    assert_eq!(body["role"], "master", "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_single_pem_with_certificate_and_key_serves() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_cert(dir.path(), "api");
    let both = dir.path().join("both.pem");
    let pem = [
        std::fs::read(&files.certfile).unwrap(),
        std::fs::read(&files.keyfile).unwrap(),
    ]
    .concat();
    std::fs::write(&both, pem).unwrap();
    let single = TlsFiles {
        certfile: both.clone(),
        keyfile: both,
    };
    let server = Server::start(leader(), None, load_tls(&single).unwrap()).await;
    get_patroni(server.addr, &trusting(&files)).await;
    server.shutdown().await.unwrap();
}

fn assert_names(err: &TlsError, paths: &[&PathBuf]) {
    let message = err.to_string();
    for path in paths {
        assert!(
            message.contains(&path.display().to_string()),
            "{message:?} does not name {}",
            path.display()
        );
    }
}

#[test]
fn load_tls_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a");
    let b = make_cert(dir.path(), "b");
    let nowhere = dir.path().join("nowhere.pem");

    let missing_cert = TlsFiles {
        certfile: nowhere.clone(),
        keyfile: a.keyfile.clone(),
    };
    let err = load_tls(&missing_cert).unwrap_err();
    assert!(
        matches!(&err, TlsError::Missing { role: TlsFileRole::Certificate, path } if path == &nowhere),
        "{err:?}"
    );
    assert_names(&err, &[&nowhere]);
    assert!(err.to_string().contains("restapi.certfile"), "{err}");

    let missing_key = TlsFiles {
        certfile: a.certfile.clone(),
        keyfile: nowhere.clone(),
    };
    let err = load_tls(&missing_key).unwrap_err();
    assert!(
        matches!(
            &err,
            TlsError::Missing {
                role: TlsFileRole::PrivateKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("restapi.keyfile"), "{err}");

    let mismatch = TlsFiles {
        certfile: a.certfile.clone(),
        keyfile: b.keyfile.clone(),
    };
    let err = load_tls(&mismatch).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert_names(&err, &[&a.certfile, &b.keyfile]);

    let key_as_cert = TlsFiles {
        certfile: a.keyfile.clone(),
        keyfile: a.keyfile.clone(),
    };
    let err = load_tls(&key_as_cert).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert_names(&err, &[&a.keyfile]);

    let cert_as_key = TlsFiles {
        certfile: a.certfile.clone(),
        keyfile: a.certfile.clone(),
    };
    let err = load_tls(&cert_as_key).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert_names(&err, &[&a.certfile]);

    let directory = TlsFiles {
        certfile: dir.path().to_path_buf(),
        keyfile: a.keyfile.clone(),
    };
    let err = load_tls(&directory).unwrap_err();
    assert!(matches!(err, TlsError::Unreadable { .. }), "{err:?}");
    assert_names(&err, &[&directory.certfile]);

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n%%%%\n").unwrap();
    let broken = TlsFiles {
        certfile: garbage.clone(),
        keyfile: a.keyfile.clone(),
    };
    let err = load_tls(&broken).unwrap_err();
    assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
    assert_names(&err, &[&garbage]);

    let err = client_tls_config(Some(&nowhere), false).unwrap_err();
    assert!(
        matches!(
            &err,
            TlsError::Missing {
                role: TlsFileRole::CaBundle,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &[&nowhere]);
}
