//! `postgresql.pgpass`: the libpq password file through which pg_basebackup, pg_rewind and
//! the WAL receiver (`primary_conninfo` with `passfile=`) find the replication and rewind
//! passwords, so that no password is written into the data directory's configuration.
//!
//! As in Patroni the file is (re)written before each use, mode 0600, owned by the user
//! PostgreSQL runs as. Its lines match any host, port and database: one for the replication
//! role and one for the rewind role (the superuser when none is set), each only when it has
//! a password. Without a configured path it is `~/pgpass` of that user (Patroni's default,
//! `~` being the home of the user Patroni runs as, which is PostgreSQL's).

use std::path::{Path, PathBuf};

use crate::error::PgError;
use crate::run::{run_as, write_owned};
use crate::spec::PgSpec;

/// Where the password file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassFile {
    path: PathBuf,
}

impl PassFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PassFile { path: path.into() }
    }

    /// `configured` (`postgresql.pgpass`), else `pgpass` in the home directory of the user
    /// PostgreSQL runs as (`run_as` when we are root, else `$HOME`).
    pub fn for_spec(spec: &PgSpec, configured: Option<&Path>) -> Result<PassFile, PgError> {
        if let Some(path) = configured {
            return Ok(PassFile::new(crate::run::absolute(path)?));
        }
        let home = match run_as(spec)? {
            Some(user) => user.home().to_path_buf(),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| !h.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        Ok(PassFile::new(home.join("pgpass")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's lines (`None` when no role has a password: no file is needed).
    pub fn contents(spec: &PgSpec) -> Option<String> {
        let mut out = String::new();
        let rewind = spec.rewind_credentials();
        for c in [&spec.replication, rewind] {
            let Some(password) = &c.password else {
                continue;
            };
            let line = format!("*:*:*:{}:{}\n", escape(&c.username), escape(password));
            if !out.contains(&line) {
                out.push_str(&line);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Writes the file (atomically, 0600, owned by run_as; its directory is created when
    /// missing). `false`: no role has a password, nothing was written.
    pub fn write(&self, spec: &PgSpec) -> Result<bool, PgError> {
        let Some(contents) = PassFile::contents(spec) else {
            return Ok(false);
        };
        let user = run_as(spec)?;
        if let Some(dir) = self.path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| PgError::io(dir, e))?;
            }
        }
        write_owned(&self.path, &contents, user.as_ref())?;
        Ok(true)
    }
}

/// `:` and `\` are escaped with a backslash in a password file.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Credentials;

    fn spec(rewind: Option<Credentials>) -> PgSpec {
        PgSpec {
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            data_dir: "/tmp/d".into(),
            listen_host: "127.0.0.1".into(),
            port: 5432,
            socket_dir: "/tmp".into(),
            run_as: None,
            superuser: Credentials {
                username: "postgres".into(),
                password: Some("su:pw".into()),
            },
            replication: Credentials {
                username: "repl".into(),
                password: Some(r"a\b".into()),
            },
            rewind,
            log_file: "/tmp/log".into(),
            application_name: "node1".into(),
            replication_tls: Vec::new(),
            rewind_tls: Vec::new(),
        }
    }

    #[test]
    fn one_line_per_role_with_a_password() {
        assert_eq!(
            PassFile::contents(&spec(None)).as_deref(),
            Some("*:*:*:repl:a\\\\b\n*:*:*:postgres:su\\:pw\n")
        );
        let rewind = Credentials {
            username: "rewinder".into(),
            password: None,
        };
        assert_eq!(
            PassFile::contents(&spec(Some(rewind))).as_deref(),
            Some("*:*:*:repl:a\\\\b\n")
        );
        let mut none = spec(None);
        none.replication.password = None;
        none.superuser.password = None;
        assert_eq!(PassFile::contents(&none), None);
    }

    #[test]
    fn default_path_is_pgpass_in_home() {
        // Not root in this case (run_as None): $HOME, as Patroni's expanduser('~').
        let pass = PassFile::for_spec(&spec(None), None).expect("path");
        assert!(pass.path().ends_with("pgpass"), "{}", pass.path().display());
        let pass =
            PassFile::for_spec(&spec(None), Some(Path::new("/etc/pgbaton/pgpass"))).expect("path");
        assert_eq!(pass.path(), Path::new("/etc/pgbaton/pgpass"));
    }

    #[test]
    fn written_0600_with_its_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pass = PassFile::new(dir.path().join("sub").join("pgpass"));
        assert!(pass.write(&spec(None)).expect("write"));
        let meta = std::fs::metadata(pass.path()).expect("written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
