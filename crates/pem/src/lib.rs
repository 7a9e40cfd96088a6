//! The one loader of PEM files in pgbaton: the REST API's `restapi.certfile`/`keyfile` and
//! CA bundles, the router's `tls_certfile`/`tls_keyfile`/`tls_cafile`/`rest_cacert`. Each
//! caller says which setting the file came from when it reports a [`PemError`]; the error
//! itself names the file and what is wrong with it.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{path} does not exist: fix the path in the configuration")]
    Missing { path: PathBuf },
    #[error("{path} cannot be read ({source}): check its permissions")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{path} is not valid PEM ({source}): it must hold `-----BEGIN ...` blocks")]
    BadPem { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM `CERTIFICATE` block: point it at the certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds no PEM private key (PKCS#8, RSA or EC): point it at the key of the certificate"
    )]
    NoPrivateKey { path: PathBuf },
}

impl PemError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PemError::Missing { path }
            | PemError::Unreadable { path, .. }
            | PemError::BadPem { path, .. }
            | PemError::NoCertificate { path }
            | PemError::NoPrivateKey { path } => path,
        }
    }
}

fn open(path: &Path) -> Result<BufReader<File>, PemError> {
    let path_buf = || path.to_path_buf();
    match File::open(path) {
        Ok(file) => Ok(BufReader::new(file)),
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            Err(PemError::Missing { path: path_buf() })
        }
        Err(source) => Err(PemError::Unreadable {
            path: path_buf(),
            source,
        }),
    }
}

/// Malformed content, or a file that cannot be read as one (a directory).
fn parse_error(path: &Path, source: io::Error) -> PemError {
    let path = path.to_path_buf();
    if source.kind() == io::ErrorKind::InvalidData {
        PemError::BadPem { path, source }
    } else {
        PemError::Unreadable { path, source }
    }
}

/// Every certificate of a PEM file, in order (a chain: leaf first); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut reader = open(path)?;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| parse_error(path, source))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1). The file may hold the
/// certificate too, as Patroni allows.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let mut reader = open(path)?;
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(PemError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(parse_error(path, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_PEM: &str = "-----BEGIN CERTIFICATE-----\n%%%%\n";

    #[test]
    fn each_failure_names_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nowhere = dir.path().join("nowhere.pem");
        let err = certificates(&nowhere).expect_err("missing");
        assert!(matches!(err, PemError::Missing { .. }), "{err}");
        assert_eq!(err.path(), nowhere);
        assert!(err.to_string().contains("fix the path"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let err = certificates(&empty).expect_err("no certificate");
        assert!(matches!(err, PemError::NoCertificate { .. }), "{err}");
        let err = private_key(&empty).expect_err("no key");
        assert!(matches!(err, PemError::NoPrivateKey { .. }), "{err}");

        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, NOT_PEM).expect("write");
        let err = certificates(&bad).expect_err("bad PEM");
        assert!(matches!(err, PemError::BadPem { .. }), "{err}");

        let err = certificates(dir.path()).expect_err("a directory");
        assert!(matches!(err, PemError::Unreadable { .. }), "{err}");
    }
}
