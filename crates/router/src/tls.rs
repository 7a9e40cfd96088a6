//! `tls: terminate`: the router runs TLS itself with its own certificate (`tls_certfile`,
//! `tls_keyfile`, PEM; rustls with the ring provider, TLS 1.2 and 1.3). A client's
//! SSLRequest is answered `S`, the handshake runs, and the startup is read from inside TLS,
//! so every routing rule applies as in plain text (`pgbaton.target`, `target_session_attrs`,
//! database aliases, the read-only check of write sessions, cancel keys). With `tls_cafile`
//! the handshake asks for a client certificate and verifies one when given (the `auth`
//! rules decide who must present one; `Client::certificate_name`). The router→server
//! leg stays plain TCP: meant for servers on loopback or a trusted network. This module
//! loads the certificate (the configuration check uses the same code) and relays a TLS
//! session after the startup with `copy_bidirectional_with_sizes` over the TLS stream: per
//! connection the router holds the TLS state and one record-sized buffer per direction.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{RouterConfig, TlsMode};
use crate::error::RouterConfigError;
use crate::handshake::Ready;
use crate::metrics::labels;
use crate::protocol::Target;
use crate::shared::{SessionGuard, Shared};
use crate::topology::Backend;
use crate::yaml::invalid;

/// Buffer per direction for TLS sessions: one maximal TLS record of plaintext.
const BUFFER: usize = 16 * 1024;

/// The certificates of the file set as `key`; an error names the key and the file.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, RouterConfigError> {
    pgbaton_pem::certificates(path).map_err(|e| invalid(key, &e.to_string()))
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, RouterConfigError> {
    pgbaton_pem::private_key(path).map_err(|e| invalid("tls_keyfile", &e.to_string()))
}

/// The roots the REST lag poller verifies https `api_url`s with (`rest_cacert`; None
/// without it).
pub(crate) fn rest_roots(
    cfg: &RouterConfig,
) -> Result<Option<rustls::RootCertStore>, RouterConfigError> {
    let Some(path) = &cfg.rest_cacert else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("rest_cacert", path)? {
        roots.add(cert).map_err(|e| {
            invalid(
                "rest_cacert",
                &format!("{} holds a certificate rustls refuses: {e}", path.display()),
            )
        })?;
    }
    Ok(Some(roots))
}

/// The TLS acceptor for `tls: terminate` (None for the other modes).
pub(crate) fn acceptor(cfg: &RouterConfig) -> Result<Option<TlsAcceptor>, RouterConfigError> {
    if cfg.tls != TlsMode::Terminate {
        return Ok(None);
    }
    let cert_path = cfg
        .tls_certfile
        .as_ref()
        .ok_or(RouterConfigError::Missing {
            key: "tls_certfile".into(),
            hint: "`tls: terminate` needs the router's certificate chain (PEM)",
        })?;
    let key_path = cfg.tls_keyfile.as_ref().ok_or(RouterConfigError::Missing {
        key: "tls_keyfile".into(),
        hint: "`tls: terminate` needs the private key of tls_certfile (PEM)",
    })?;
    let certs = certificates("tls_certfile", cert_path)?;
    let key = private_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", &format!("no usable TLS versions: {e}")))?;
    let builder = match &cfg.tls_cafile {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("tls_cafile", path)? {
                roots.add(cert).map_err(|e| {
                    invalid(
                        "tls_cafile",
                        &format!("{} holds a certificate rustls refuses: {e}", path.display()),
                    )
                })?;
            }
            // A certificate is asked for, verified when given, and optional at the TLS
            // level: the hba rules say who must present one.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid("tls_cafile", &format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        invalid(
            "tls_keyfile",
            &format!("cannot be used with tls_certfile: {e}"),
        )
    })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Resolves when `backend` is no longer the leader (never when `leader` is None).
async fn leader_moved(leader: Option<watch::Receiver<Option<Backend>>>, backend: &Backend) {
    if let Some(mut leader) = leader {
        if leader
            .wait_for(|l| l.as_ref() != Some(backend))
            .await
            .is_ok()
        {
            return;
        }
    }
    // No leader to follow, or the router is going away (the stop signal handles that).
    std::future::pending::<()>().await
}

/// Forward a TLS client's session after the startup (the plain-text twin is
/// `relay::forward`): held messages first, then bytes both ways until either side
/// closes, the router stops, or a write session's server stops being the leader.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    mut client: TlsStream<TcpStream>,
    mut server: TcpStream,
    ready: Ready,
    backend: Backend,
    role: Target,
    close_when_not_leader: bool,
) {
    let _guard = SessionGuard::new(&shared, &backend, role, ready.key);
    let handed = async {
        client.write_all(&ready.held).await?;
        client.flush().await
    };
    if let Err(e) = handed.await {
        tracing::debug!(backend = %backend.name, error = %e, "TLS client left before the startup completed");
        return;
    }
    let leader = close_when_not_leader.then(|| shared.leader.clone());
    let mut stop = shared.stop.clone();
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER);
    tokio::select! {
        result = copy => match result {
            Ok((to_server, to_client)) => {
                for (direction, n) in [("to_server", to_server), ("to_client", to_client)] {
                    shared
                        .metrics
                        .bytes
                        .get_or_create(&labels(&[("direction", direction), ("backend", &backend.name)]))
                        .inc_by(n);
                }
            }
            Err(e) => tracing::debug!(backend = %backend.name, error = %e, "TLS session ended with an error"),
        },
        _ = leader_moved(leader, &backend) => {
            shared.metrics.closed_on_leader_change.inc();
            tracing::info!(backend = %backend.name, "closing a TLS write session: its server is no longer the leader");
        }
        _ = crate::stop::stopped(&mut stop) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminate(cert: Option<&Path>, key: Option<&Path>) -> RouterConfig {
        let mut cfg = RouterConfig::new(vec!["127.0.0.1:2379".into()], "/service/", "c");
        cfg.tls = TlsMode::Terminate;
        cfg.tls_certfile = cert.map(Path::to_path_buf);
        cfg.tls_keyfile = key.map(Path::to_path_buf);
        cfg
    }

    fn error_of(cfg: &RouterConfig) -> String {
        match acceptor(cfg) {
            Ok(_) => panic!("must be rejected"),
            Err(e) => e.to_string(),
        }
    }

    /// A self-signed certificate made with the openssl command line.
    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=127.0.0.1", "-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl: install it with `apt-get install -y openssl`");
        assert!(status.success(), "openssl req failed");
        (cert, key)
    }

    #[test]
    fn terminate_needs_both_files_readable_and_in_pem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path());
        assert!(acceptor(&terminate(Some(&cert), Some(&key)))
            .expect("valid")
            .is_some());
        let e = error_of(&terminate(None, Some(&key)));
        assert!(e.contains("tls_certfile is required"), "{e}");
        let e = error_of(&terminate(Some(&cert), None));
        assert!(e.contains("tls_keyfile is required"), "{e}");
        let missing = dir.path().join("nope.pem");
        let e = error_of(&terminate(Some(&missing), Some(&key)));
        assert!(e.contains("tls_certfile") && e.contains("nope.pem"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let e = error_of(&terminate(Some(&garbage), Some(&key)));
        assert!(
            e.contains("tls_certfile") && e.contains("CERTIFICATE"),
            "{e}"
        );
        // A certificate where the key should be.
        let e = error_of(&terminate(Some(&cert), Some(&cert)));
        assert!(
            e.contains("tls_keyfile") && e.contains("private key"),
            "{e}"
        );
        // Other modes need no files.
        let mut refuse = terminate(None, None);
        refuse.tls = TlsMode::Refuse;
        assert!(acceptor(&refuse).expect("no TLS").is_none());
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let one = tempfile::tempdir().expect("temp dir");
        let two = tempfile::tempdir().expect("temp dir");
        let (cert, _) = self_signed(one.path());
        let (_, other_key) = self_signed(two.path());
        let e = error_of(&terminate(Some(&cert), Some(&other_key)));
        assert!(e.contains("tls_keyfile"), "{e}");
    }
}
