//! Helpers shared by the test suites of several crates (a dev-dependency only).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1, not a CA, as
/// webpki wants of a server certificate) and its RSA key, written as `<stem>.crt` and
/// `<stem>.key` in `dir`; returns (certificate, key). Panics with the install command when
/// openssl is missing.
pub fn self_signed_cert(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
