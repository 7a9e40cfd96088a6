//! What pgBackRest's configuration file says about the cluster's PostgreSQL servers: the
//! `pgN-path` / `pgN-host` entries of a stanza. A file that lists two or more of them
//! describes the whole cluster (pgBackRest finds the primary among them itself, and can back
//! up from a standby); a file that lists one or none describes only the repository, and the
//! agent names its own server as pg1.

use std::collections::BTreeSet;
use std::path::Path;

/// The server indexes (`N` of `pgN-path` / `pgN-host`) a configuration lists for a stanza,
/// from its `[global]`, `[global:<command>]`, `[<stanza>]` and `[<stanza>:<command>]`
/// sections.
pub(crate) fn listed_servers(text: &str, stanza: &str) -> BTreeSet<u32> {
    let mut servers = BTreeSet::new();
    let mut applies = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = section.split(':').next().unwrap_or("").trim();
            applies = name == "global" || name == stanza;
            continue;
        }
        if !applies {
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if let Some(index) = server_index(key.trim()) {
            servers.insert(index);
        }
    }
    servers
}

/// `N` of `pgN-path` and `pgN-host`.
fn server_index(key: &str) -> Option<u32> {
    let rest = key.strip_prefix("pg")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let option = &rest[digits.len()..];
    if digits.is_empty() || !(option == "-path" || option == "-host") {
        return None;
    }
    digits.parse().ok()
}

/// Whether the configuration file describes the cluster (two or more servers for the
/// stanza). An unreadable file counts as not describing it: pgBackRest itself then says what
/// is wrong with the file when the command runs.
pub(crate) fn describes_cluster(config: Option<&Path>, stanza: &str) -> bool {
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    match std::fs::read_to_string(path) {
        Ok(text) => listed_servers(&text, stanza).len() >= 2,
        Err(_) => false,
    }
}

/// Where pgBackRest reads its configuration when `--config` is not given.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/pgbackrest.conf";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_of_the_stanza_and_global_sections_count() {
        let text = "\
[global]
repo1-path=/var/lib/pgbackrest
# pg9-path=/commented/out

[main]
pg1-path=/var/lib/postgresql/15/main
pg1-port=5432
pg2-host=node2
pg2-path = /var/lib/postgresql/15/main

[main:backup]
pg3-host=node3

[other]
pg4-path=/elsewhere
";
        assert_eq!(
            listed_servers(text, "main").into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            listed_servers(text, "other")
                .into_iter()
                .collect::<Vec<_>>(),
            vec![4]
        );
        assert!(listed_servers(text, "none").is_empty());
    }

    #[test]
    fn only_path_and_host_keys_name_servers() {
        let text =
            "[main]\npg1-port=5432\npg1-socket-path=/run\npg-version-force=15\npgx-path=/a\n";
        assert!(listed_servers(text, "main").is_empty());
    }

    #[test]
    fn a_missing_file_does_not_describe_the_cluster() {
        assert!(!describes_cluster(
            Some(Path::new("/nonexistent/pgbackrest.conf")),
            "main"
        ));
    }
}
