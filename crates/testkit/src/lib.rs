//! Helpers shared by the test suites of several crates (a dev-dependency only).

pub mod modules;
pub mod states;

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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir`: `<name>.crt` and `<name>.key`.
pub fn test_ca(dir: &Path, name: &str) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &crt,
        ],
    );
}

/// `<name>.crt` / `<name>.key` in `dir`, signed by the CA `<ca>.crt` made by [`test_ca`],
/// with `extension` (an openssl extension line such as `subjectAltName=IP:127.0.0.1`).
pub fn signed_cert(dir: &Path, ca: &str, name: &str, extension: &str) {
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext), format!("{extension}\n")).expect("extension file");
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out",
            &csr,
        ],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
}

/// Remove the System V shared memory segments that killed postmasters left behind under
/// `dir` (any data directory up to three levels down, moved-aside copies included): the
/// `shmid` on line 7 of each `postmaster.pid`, removed only when no process is attached.
/// PostgreSQL removes its segment when it stops, and a restart in the same data directory
/// reclaims one a SIGKILL left, but a test that kills its postmasters and then deletes the
/// directory would leak one segment per postmaster until the host's limit (`shmmni`, 4096)
/// makes every later start fail ("could not create shared memory segment: No space left on
/// device"). Call it once the postmasters were killed: it waits up to 5 s for their
/// processes to let go of the segments.
pub fn release_shared_memory_under(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while walk(dir, 3) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Segments under `dir` still attached to a process.
fn walk(dir: &Path, depth: usize) -> usize {
    let mut attached = usize::from(release_segment_of(dir));
    if depth == 0 {
        return attached;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return attached;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            attached += walk(&entry.path(), depth - 1);
        }
    }
    attached
}

/// Removes the segment of `data_dir`'s `postmaster.pid` when nothing is attached; true when
/// a process still is.
fn release_segment_of(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(id) = text
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|id| id.parse::<libc::c_int>().ok())
    else {
        return false;
    };
    // SAFETY: shmctl with IPC_STAT writes into the zeroed struct we own; IPC_RMID takes no
    // buffer. Neither touches memory of this process otherwise.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
            return false; // gone already
        }
        if ds.shm_nattch > 0 {
            return true;
        }
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
    }
    false
}
