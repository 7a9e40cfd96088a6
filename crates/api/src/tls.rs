//! TLS for the REST API, as Patroni's `restapi.certfile` / `restapi.keyfile` configure it:
//! loading the certificate and key into a rustls server configuration (with errors that
//! name the file and what is wrong with it), an axum [`Listener`] that accepts TCP and runs
//! the TLS handshakes concurrently with a deadline, and the rustls client configuration that
//! `pgbaton ctl` and members calling each other use to speak https to the API. Everything
//! uses rustls' `ring` provider explicitly, so nothing depends on a process-wide default.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use pgbaton_pem::PemError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

/// How long a client may take to complete the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress beyond which no further TCP connection is accepted until one ends.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The PEM files of the API's certificate (`restapi.certfile`, the chain, leaf first) and its
/// private key (`restapi.keyfile`; Patroni allows both in one file, so may be the same path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

/// Which configured file a [`TlsError`] is about; shown in the message so the operator knows
/// which setting to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFileRole {
    /// `restapi.certfile`.
    Certificate,
    /// `restapi.keyfile`.
    PrivateKey,
    /// The CA bundle a client trusts (`ctl.cacert` / `restapi.cafile`).
    CaBundle,
}

impl std::fmt::Display for TlsFileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFileRole::Certificate => "certificate file (restapi.certfile)",
            TlsFileRole::PrivateKey => "private key file (restapi.keyfile)",
            TlsFileRole::CaBundle => "CA bundle (cafile)",
        })
    }
}

/// Why TLS could not be set up; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{role} {path} does not exist: fix the path in the configuration")]
    Missing { role: TlsFileRole, path: PathBuf },
    #[error("{role} {path} cannot be read ({source}): check its permissions")]
    Unreadable {
        role: TlsFileRole,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{role} {path} is not valid PEM ({source}): it must hold `-----BEGIN ...` blocks")]
    BadPem {
        role: TlsFileRole,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{role} {path} holds no PEM `CERTIFICATE` block: point it at the certificate")]
    NoCertificate { role: TlsFileRole, path: PathBuf },
    #[error(
        "private key file (restapi.keyfile) {path} holds no PEM private key \
         (PKCS#8, RSA or EC): point it at the key of the certificate"
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "private key {keyfile} does not match the certificate {certfile}: \
         configure the key the certificate was issued for"
    )]
    KeyMismatch { certfile: PathBuf, keyfile: PathBuf },
    #[error("certificate {certfile} with key {keyfile} is not usable by TLS ({source})")]
    Rejected {
        certfile: PathBuf,
        keyfile: PathBuf,
        source: rustls::Error,
    },
    #[error("CA bundle {path} holds a certificate TLS cannot use as a root ({source})")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("no trusted CA certificates found on this system: configure a cafile")]
    NoSystemRoots,
    #[error("TLS protocol versions rejected by the crypto provider ({0})")]
    Provider(rustls::Error),
}

/// The crypto provider every pgbaton TLS configuration uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Installs rustls' `ring` provider as the process default, for libraries (reqwest built with
/// `rustls-no-provider`) that build TLS configurations themselves. Harmless when a default
/// is already installed.
pub fn install_default_crypto_provider() {
    // Err only means a default is already installed, which is what we want.
    let _ = ring::default_provider().install_default();
}

impl TlsError {
    /// A PEM file's failure, told as the `role` it was configured for.
    fn from_pem(role: TlsFileRole, error: PemError) -> TlsError {
        match error {
            PemError::Missing { path } => TlsError::Missing { role, path },
            PemError::Unreadable { path, source } => TlsError::Unreadable { role, path, source },
            PemError::BadPem { path, source } => TlsError::BadPem { role, path, source },
            PemError::NoCertificate { path } => TlsError::NoCertificate { role, path },
            PemError::NoPrivateKey { path } => TlsError::NoPrivateKey { path },
        }
    }
}

/// Every certificate of a PEM file, in order; at least one.
fn read_certs(role: TlsFileRole, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pgbaton_pem::certificates(path).map_err(|e| TlsError::from_pem(role, e))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    pgbaton_pem::private_key(path).map_err(|e| TlsError::from_pem(TlsFileRole::PrivateKey, e))
}

/// Loads `restapi.certfile` and `restapi.keyfile` into a server configuration (TLS 1.2 and
/// 1.3, no client certificates), checking that the key belongs to the certificate.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(TlsFileRole::Certificate, &files.certfile)?;
    let key = read_key(&files.keyfile)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    certfile: files.certfile.clone(),
                    keyfile: files.keyfile.clone(),
                }
            }
            source => TlsError::Rejected {
                certfile: files.certfile.clone(),
                keyfile: files.keyfile.clone(),
                source,
            },
        })?;
    Ok(Arc::new(config))
}

/// The client side: trusts the certificates of `cafile` when given, else the system's CA
/// store; `insecure` accepts any server certificate (Patroni's `ctl.insecure`), still
/// checking the handshake signatures. Pass the result to reqwest's
/// `ClientBuilder::tls_backend_preconfigured`.
pub fn client_tls_config(cafile: Option<&Path>, insecure: bool) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?;
    if insecure {
        let verifier = AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        };
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match cafile {
        Some(path) => {
            for cert in read_certs(TlsFileRole::CaBundle, path)? {
                roots.add(cert).map_err(|source| TlsError::BadCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!(%err, "skipping an unreadable system CA certificate");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecure`: any certificate is accepted, but the peer must still prove it holds the key
/// of the certificate it presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An axum [`Listener`] yielding TLS connections: TCP connections are accepted as they come
/// and their handshakes run as separate tasks, so a slow or silent client holds up nobody.
/// A handshake that fails (plain HTTP sent to the TLS port, an untrusted client, a timeout)
/// is logged at debug and the connection dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in flight; each yields the connection, or `None` once it has been logged
    /// and dropped. Dropping the listener (server shut down) aborts them.
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    handshake_timeout: Duration,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Replaces [`HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsListener {
        self.handshake_timeout = timeout;
        self
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let accept = self.acceptor.accept(stream);
        let timeout = self.handshake_timeout;
        // The handshake logs inside the server's span (cluster scope and member name).
        let span = tracing::Span::current();
        let handshake = async move {
            match tokio::time::timeout(timeout, accept).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed; connection dropped");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, ?timeout, "TLS handshake timed out; connection dropped");
                    None
                }
            }
        };
        self.handshakes.spawn(handshake.instrument(span));
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok(Some(connection)) => return connection,
                        Ok(None) => {}
                        Err(err) => tracing::warn!(%err, "a TLS handshake task failed"),
                    }
                }
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(err) => handle_accept_error(err).await,
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum does for plain TCP: a connection reset before accept is routine; anything else
/// (typically out of file descriptors) is logged and retried after a pause.
async fn handle_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%err, "REST API cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
