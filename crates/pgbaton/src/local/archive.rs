//! `local up --archive`: a pgBackRest repository in `DIR/pgbackrest` for the local cluster.
//! Its configuration file lists every member as pg1..pgN, so pgBackRest finds the primary
//! among them and `ctl backup` reads the files from a standby; each member archives with
//! its own `--pg1-path` (the stanza is the cluster's scope).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use pgbaton_config::template::ArchiveYaml;

use super::Ports;

const PGBACKREST: &str = "/usr/bin/pgbackrest";

/// The file's text: the repository, logs and locks under `root`, and each member's data
/// directory, port and socket directory.
pub fn config_text(
    root: &Path,
    dir: &Path,
    scope: &str,
    names: &[String],
    ports: &Ports,
) -> String {
    let mut out = format!(
        "# Written by `pgbaton local up --archive`.\n[global]\nrepo1-path={root}/repo\nrepo1-retention-full=2\nlog-path={root}/log\nlock-path={root}/lock\nstart-fast=y\narchive-timeout=30\n\n[{scope}]\n",
        root = root.display()
    );
    for (i, name) in names.iter().enumerate() {
        let k = i as u16 + 1;
        out.push_str(&format!(
            "pg{k}-path={}\npg{k}-port={}\npg{k}-socket-path=/tmp\n",
            dir.join(name).join("data").display(),
            ports.postgres(k)
        ));
    }
    out
}

/// Create `DIR/pgbackrest` (repository, logs, locks: owned by postgres) and its
/// configuration file; what the members' files name.
pub fn prepare(
    dir: &Path,
    scope: &str,
    names: &[String],
    ports: &Ports,
) -> anyhow::Result<ArchiveYaml> {
    if !Path::new(PGBACKREST).exists() {
        bail!("--archive needs pgBackRest: {PGBACKREST} not found; install it with `apt-get install -y pgbackrest` (or `make deps`)");
    }
    let root = dir.join("pgbackrest");
    let postgres = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .context(
            "--archive: no postgres user on this machine (it comes with the postgresql-15 package)",
        )?;
    for sub in ["repo", "log", "lock"] {
        let path = root.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        nix::unistd::chown(&path, Some(postgres.uid), Some(postgres.gid))
            .with_context(|| format!("chown postgres {}", path.display()))?;
    }
    let config: PathBuf = root.join("pgbackrest.conf");
    std::fs::write(&config, config_text(&root, dir, scope, names, ports))
        .with_context(|| format!("writing {}", config.display()))?;
    Ok(ArchiveYaml {
        config,
        stanza: scope.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_is_listed_with_its_data_directory_and_port() {
        let ports = Ports::new(15400).expect("ports");
        let names = vec!["node1".to_string(), "node2".to_string()];
        let text = config_text(
            Path::new("/tmp/c/pgbackrest"),
            Path::new("/tmp/c"),
            "local",
            &names,
            &ports,
        );
        assert!(
            text.contains("repo1-path=/tmp/c/pgbackrest/repo\n"),
            "{text}"
        );
        assert!(
            text.contains("\n[local]\npg1-path=/tmp/c/node1/data\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "pg2-path=/tmp/c/node2/data\npg2-port={}\n",
                ports.postgres(2)
            )),
            "{text}"
        );
    }
}
