//! How to reach etcd beyond its addresses: TLS (Patroni's `etcd3: protocol: https, cacert,
//! cert, key`) and etcd's own user/password authentication (`username`, `password`).

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::error::DcsError;

/// TLS to etcd: the CA that signed the servers' certificates (the system's roots when
/// `None`), and the client certificate and key when etcd asks for one
/// (`--client-cert-auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Everything but the endpoints that a connection to etcd needs. The default is plain
/// http without authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    pub tls: Option<EtcdTls>,
    /// etcd's user and password (`etcdctl user add`, `auth enable`).
    pub user: Option<(String, String)>,
}

/// The TLS settings of a client, read from the files now (so that a missing or unreadable
/// file is an error at start, naming the file and the key).
#[derive(Clone)]
pub(crate) struct LoadedAccess {
    tls: Option<TlsOptions>,
    user: Option<(String, String)>,
    /// TLS without a client certificate: a refused handshake may mean etcd wants one.
    tls_without_client_cert: bool,
}

impl std::fmt::Debug for LoadedAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedAccess")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, DcsError> {
    std::fs::read(path).map_err(|e| DcsError::Rejected {
        message: format!(
            "cannot read etcd3.{what} {}: {e}; check the path and that the agent may read it",
            path.display()
        ),
    })
}

impl EtcdAccess {
    /// Reads the certificate files. A client certificate needs its key and the other way
    /// round.
    pub(crate) fn load(&self) -> Result<LoadedAccess, DcsError> {
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let mut options = TlsOptions::new();
                match &t.cacert {
                    Some(ca) => {
                        options = options.ca_certificate(Certificate::from_pem(read(ca, "cacert")?))
                    }
                    None => options = options.with_native_roots(),
                }
                match (&t.cert, &t.key) {
                    (Some(cert), Some(key)) => {
                        options = options.identity(Identity::from_pem(
                            read(cert, "cert")?,
                            read(key, "key")?,
                        ));
                    }
                    (None, None) => {}
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(DcsError::Rejected {
                            message: "etcd3.cert and etcd3.key go together: set both (the client certificate and its private key) or neither".into(),
                        })
                    }
                }
                Some(options)
            }
        };
        let tls_without_client_cert = self.tls.as_ref().is_some_and(|t| t.cert.is_none());
        Ok(LoadedAccess {
            tls,
            user: self.user.clone(),
            tls_without_client_cert,
        })
    }
}

impl LoadedAccess {
    pub(crate) fn plain() -> Self {
        LoadedAccess {
            tls: None,
            user: None,
            tls_without_client_cert: false,
        }
    }

    pub(crate) fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        options
    }

    /// A hint for an unreachable etcd that may be refusing our TLS handshake.
    pub(crate) fn unreachable_hint(&self) -> Option<&'static str> {
        self.tls_without_client_cert.then_some(
            "if etcd runs with --client-cert-auth it refuses clients without a certificate: set etcd3.cert and etcd3.key",
        )
    }

    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
