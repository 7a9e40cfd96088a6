//! Running PostgreSQL's binaries as the right OS user, and writing files the server must own.
//! When the agent runs as root and `run_as` is set, every binary runs with that user's uid/gid
//! (supplementary groups dropped), HOME/USER/LOGNAME set, from a directory it can enter, and
//! every file or directory written for PostgreSQL is chowned to it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Gid, Uid, User};

use crate::error::{PgError, INSTALL_HINT};
use crate::spec::PgSpec;

/// The OS identity binaries run as (None fields = the current user).
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

/// Environment variables of libpq that must not leak from the agent into the binaries.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGDATA",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGAPPNAME",
];

/// The identity to switch to: Some only when we are root and `run_as` is set.
pub(crate) fn run_as(spec: &PgSpec) -> Result<Option<RunAs>, PgError> {
    let Some(name) = &spec.run_as else {
        return Ok(None);
    };
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| PgError::UnknownUser { name: name.clone() })?;
    Ok(Some(RunAs {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
    }))
}

impl RunAs {
    /// The user's home directory (from the password database).
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }
}

/// An absolute form of `path` (relative paths resolve against our working directory, since
/// the binaries run from elsewhere).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, PgError> {
    std::path::absolute(path).map_err(|e| PgError::io(path, e))
}

/// A `Command` for `bin_dir/<binary>` that runs as `run_as`, with a clean libpq environment.
pub(crate) fn pg_command(spec: &PgSpec, binary: &str) -> Result<Command, PgError> {
    let path = spec.bin_dir.join(binary);
    if !path.is_file() {
        return Err(PgError::BinaryMissing {
            path,
            hint: INSTALL_HINT,
        });
    }
    user_command(spec, path.as_os_str())
}

/// A `Command` for any program (looked up in PATH unless a path), run as `run_as` from `/`
/// with a clean libpq environment: replica methods and pgBackRest.
pub(crate) fn user_command(
    spec: &PgSpec,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<Command, PgError> {
    let mut cmd = Command::new(program);
    cmd.current_dir("/").stdin(Stdio::null());
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    if let Some(user) = run_as(spec)? {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    Ok(cmd)
}

/// Runs a short command to completion (synchronously), failing on a non-zero exit.
pub(crate) fn run_sync(mut cmd: Command, what: &str) -> Result<Output, PgError> {
    tracing::debug!(command = ?cmd, "running {what}");
    let output = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| PgError::Spawn {
            what: what.to_string(),
            source,
        })?;
    check_output(output, what)
}

/// Runs a possibly long command to completion without blocking the runtime. The child is
/// killed if the future is dropped (e.g. by a caller's timeout).
pub(crate) async fn run_async(cmd: Command, what: &str) -> Result<Output, PgError> {
    tracing::debug!(command = ?cmd, "running {what}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = cmd.output().await.map_err(|source| PgError::Spawn {
        what: what.to_string(),
        source,
    })?;
    check_output(output, what)
}

fn check_output(output: Output, what: &str) -> Result<Output, PgError> {
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(PgError::CommandFailed {
        what: what.to_string(),
        status: output.status,
        stderr_tail: tail_lines(&text, 20),
    })
}

/// The last `n` lines of `text`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a file (empty when unreadable: used only for error messages).
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), n),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Gives `path` to the run_as user (no-op when not switching users).
pub(crate) fn chown(path: &Path, user: Option<&RunAs>) -> Result<(), PgError> {
    let Some(user) = user else { return Ok(()) };
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| PgError::Chown {
        path: path.to_path_buf(),
        user: user.name.clone(),
        source,
    })
}

/// Sets the permission bits of `path`.
pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| PgError::io(path, e))
}

/// Creates `path` (and parents) if missing, then owner = run_as and `mode` on `path` itself.
pub(crate) fn ensure_dir(path: &Path, mode: u32, user: Option<&RunAs>) -> Result<(), PgError> {
    fs::create_dir_all(path).map_err(|e| PgError::io(path, e))?;
    chown(path, user)?;
    chmod(path, mode)
}

/// Writes `contents` to `path` atomically (temp file + rename), mode 0600, owned by run_as.
pub(crate) fn write_owned(
    path: &Path,
    contents: &str,
    user: Option<&RunAs>,
) -> Result<(), PgError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".pgbaton-tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PgError::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| PgError::io(&tmp, e))?;
    drop(file);
    chmod(&tmp, 0o600)?;
    chown(&tmp, user)?;
    fs::rename(&tmp, path).map_err(|e| PgError::io(path, e))
}

/// The name of a secret file starts with this and its process's pid (then `-` and a random
/// part): the files a killed process left (no destructor ran) are told from a running one's.
const SECRET_PREFIX: &str = "pgbaton-secret-";

/// Remove the secret files in the temporary directory whose process is gone (the password
/// file of an agent that was SIGKILLed while running initdb or a clone); how many.
pub fn remove_stale_secret_files() -> usize {
    remove_stale_secret_files_in(&std::env::temp_dir())
}

fn remove_stale_secret_files_in(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SECRET_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_exists(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Signal 0 checks that a process exists (EPERM: it does, under another user).
fn process_exists(pid: i32) -> bool {
    pid > 0
        && !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

/// A 0600 temp file owned by run_as (a password file for initdb or libpq), deleted on drop.
pub(crate) struct SecretFile {
    file: tempfile::NamedTempFile,
}

impl SecretFile {
    pub(crate) fn new(contents: &str, user: Option<&RunAs>) -> Result<Self, PgError> {
        let dir = std::env::temp_dir();
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{SECRET_PREFIX}{}-", std::process::id()))
            .tempfile_in(&dir)
            .map_err(|e| PgError::io(&dir, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| PgError::io(file.path(), e))?;
        chmod(file.path(), 0o600)?;
        chown(file.path(), user)?;
        Ok(SecretFile { file })
    }

    /// A libpq password file (`PGPASSFILE`) with one line matching any host, port and
    /// database for `username`.
    pub(crate) fn pgpass(
        username: &str,
        password: &str,
        user: Option<&RunAs>,
    ) -> Result<Self, PgError> {
        let line = format!(
            "*:*:*:{}:{}\n",
            pgpass_escape(username),
            pgpass_escape(password)
        );
        SecretFile::new(&line, user)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
}

fn pgpass_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_of_a_gone_process_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("true").spawn().expect("spawn true");
        let gone = child.id();
        child.wait().expect("wait");
        let names = [
            format!("{SECRET_PREFIX}{gone}-aB3xYz"),
            format!("{SECRET_PREFIX}{}-aB3xYz", std::process::id()),
            format!("{SECRET_PREFIX}aB3xYz"),
            "other-file".to_string(),
        ];
        for name in &names {
            fs::write(dir.path().join(name), "secret").expect("write");
        }
        assert_eq!(remove_stale_secret_files_in(dir.path()), 1);
        assert!(
            !dir.path().join(&names[0]).exists(),
            "the gone process's file"
        );
        for name in &names[1..] {
            assert!(dir.path().join(name).exists(), "{name} is kept");
        }
    }

    #[test]
    fn a_secret_file_is_named_after_its_process() {
        let file = SecretFile::new("pw\n", None).expect("secret file");
        let name = file
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!("{SECRET_PREFIX}{}-", std::process::id())),
            "{name}"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }

    #[test]
    fn pgpass_escapes_separators() {
        assert_eq!(pgpass_escape(r"a:b\c"), r"a\:b\\c");
    }
}
