//! Creating a brand-new cluster with `initdb` (run as run_as), into a missing or empty data
//! directory only.

use std::fs;

use crate::error::PgError;
use crate::run::{absolute, ensure_dir, pg_command, run_as, run_async, SecretFile};
use crate::spec::PgSpec;

/// `initdb --pgdata --username=<superuser> --pwfile=<tmp 0600 file owned by run_as>
/// --auth-local=scram-sha-256 --auth-host=scram-sha-256` plus `options` (e.g.
/// "--data-checksums", "--encoding=UTF8"). Creates/chowns/chmods the data dir (0700) first;
/// refuses a non-empty dir (NotEmpty). Without a superuser password no pwfile can be given,
/// so initdb's default authentication is left in place (pg_hba.conf is rewritten by
/// `write_config` anyway).
pub async fn initdb(spec: &PgSpec, options: &[String]) -> Result<(), PgError> {
    let user = run_as(spec)?;
    let data_dir = absolute(&spec.data_dir)?;
    ensure_missing_or_empty(&data_dir)?;
    ensure_dir(&data_dir, 0o700, user.as_ref())?;

    let mut cmd = pg_command(spec, "initdb")?;
    cmd.arg(format!("--pgdata={}", data_dir.display()))
        .arg(format!("--username={}", spec.superuser.username));
    let pwfile = match &spec.superuser.password {
        Some(password) => Some(SecretFile::new(&format!("{password}\n"), user.as_ref())?),
        None => None,
    };
    if let Some(pwfile) = &pwfile {
        cmd.arg(format!("--pwfile={}", pwfile.path().display()))
            .arg("--auth-local=scram-sha-256")
            .arg("--auth-host=scram-sha-256");
    }
    cmd.args(options);
    tracing::info!(data_dir = %data_dir.display(), ?options, "running initdb");
    run_async(cmd, "initdb").await?;
    Ok(())
}

/// Ok when `dir` does not exist or holds nothing; NotEmpty otherwise.
pub(crate) fn ensure_missing_or_empty(dir: &std::path::Path) -> Result<(), PgError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(PgError::NotEmpty {
                path: dir.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io(dir, e)),
    }
}
