//! `PATRONI_*` environment variables override the file, as Patroni documents them (container
//! images set a member's name, addresses and passwords this way). They are laid over the
//! parsed YAML before it is validated, so a bad value is reported like one in the file, with
//! the variable named as its source.
//!
//! `PATRONI_CONFIGURATION` replaces the whole file (and then no other variable applies).
//! `PATRONI_<user>_PASSWORD` / `PATRONI_<user>_OPTIONS` add a user created at bootstrap. Any
//! other `PATRONI_*` variable that pgbaton does not know is an error naming it (with the
//! closest known name), never silently ignored.

use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::suggest::closest;

/// Variable suffix (after `PATRONI_`) → dotted path in the configuration.
const SIMPLE: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("NAMESPACE", "namespace"),
    ("SCOPE", "scope"),
    ("LOG_LEVEL", "log.level"),
    ("LOG_FORMAT", "log.format"),
    ("LOG_DATEFORMAT", "log.dateformat"),
    ("LOG_DIR", "log.dir"),
    ("RESTAPI_LISTEN", "restapi.listen"),
    ("RESTAPI_CONNECT_ADDRESS", "restapi.connect_address"),
    ("RESTAPI_USERNAME", "restapi.authentication.username"),
    ("RESTAPI_PASSWORD", "restapi.authentication.password"),
    ("RESTAPI_CERTFILE", "restapi.certfile"),
    ("RESTAPI_KEYFILE", "restapi.keyfile"),
    ("RESTAPI_CAFILE", "restapi.cafile"),
    ("CTL_INSECURE", "ctl.insecure"),
    ("CTL_CACERT", "ctl.cacert"),
    ("ETCD3_HOSTS", "etcd3.hosts"),
    ("ETCD3_HOST", "etcd3.host"),
    ("ETCD3_URL", "etcd3.url"),
    ("ETCD3_PROTOCOL", "etcd3.protocol"),
    ("ETCD3_CACERT", "etcd3.cacert"),
    ("ETCD3_CERT", "etcd3.cert"),
    ("ETCD3_KEY", "etcd3.key"),
    ("ETCD3_USERNAME", "etcd3.username"),
    ("ETCD3_PASSWORD", "etcd3.password"),
    ("ETCD_HOSTS", "etcd.hosts"),
    ("ETCD_HOST", "etcd.host"),
    ("ETCD_URL", "etcd.url"),
    ("ETCD_PROTOCOL", "etcd.protocol"),
    ("ETCD_CACERT", "etcd.cacert"),
    ("ETCD_CERT", "etcd.cert"),
    ("ETCD_KEY", "etcd.key"),
    ("ETCD_USERNAME", "etcd.username"),
    ("ETCD_PASSWORD", "etcd.password"),
    ("POSTGRESQL_LISTEN", "postgresql.listen"),
    ("POSTGRESQL_CONNECT_ADDRESS", "postgresql.connect_address"),
    ("POSTGRESQL_DATA_DIR", "postgresql.data_dir"),
    ("POSTGRESQL_CONFIG_DIR", "postgresql.config_dir"),
    ("POSTGRESQL_BIN_DIR", "postgresql.bin_dir"),
    ("POSTGRESQL_PGPASS", "postgresql.pgpass"),
    (
        "REPLICATION_USERNAME",
        "postgresql.authentication.replication.username",
    ),
    (
        "REPLICATION_PASSWORD",
        "postgresql.authentication.replication.password",
    ),
    (
        "SUPERUSER_USERNAME",
        "postgresql.authentication.superuser.username",
    ),
    (
        "SUPERUSER_PASSWORD",
        "postgresql.authentication.superuser.password",
    ),
    (
        "REWIND_USERNAME",
        "postgresql.authentication.rewind.username",
    ),
    (
        "REWIND_PASSWORD",
        "postgresql.authentication.rewind.password",
    ),
];

/// Applies the `PATRONI_*` variables among `vars` to `root` (the parsed file). Returns the
/// new root, or an error naming the first variable pgbaton does not know.
pub(super) fn overlay(
    source: &str,
    mut root: Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Value, ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("PATRONI_"))
        .collect();
    vars.sort();
    if let Some((_, text)) = vars.iter().find(|(k, _)| k == "PATRONI_CONFIGURATION") {
        return serde_saphyr::from_str(text).map_err(|e| ConfigError::Invalid {
            file: source.to_string(),
            path: "PATRONI_CONFIGURATION (environment)".into(),
            reason: format!("invalid YAML: {e}"),
        });
    }
    if vars.is_empty() {
        return Ok(root);
    }
    if !root.is_object() {
        root = Value::Object(Map::new());
    }
    for (key, value) in vars {
        let suffix = &key["PATRONI_".len()..];
        if let Some((_, path)) = SIMPLE.iter().find(|(s, _)| *s == suffix) {
            // Strings only: hosts lists are read comma-separated, booleans and numbers
            // from their text, as in the file.
            set(&mut root, path, Value::String(value));
            continue;
        }
        if let Some(near) = misspelt_section(suffix) {
            return Err(ConfigError::Invalid {
                file: source.to_string(),
                path: format!("{key} (environment)"),
                reason: format!(
                    "not a variable pgbaton knows; did you mean PATRONI_{near}? (a user name in capitals this close to a section name is taken for a typo; docs/CONFIGURATION.md lists the variables)"
                ),
            });
        }
        if let Some(user) = bootstrap_user(suffix, "_PASSWORD") {
            set(
                &mut root,
                &format!("bootstrap.users.{user}.password"),
                Value::String(value),
            );
            continue;
        }
        if let Some(user) = bootstrap_user(suffix, "_OPTIONS") {
            let options = value
                .split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                .collect();
            set(
                &mut root,
                &format!("bootstrap.users.{user}.options"),
                Value::Array(options),
            );
            continue;
        }
        let known = SIMPLE
            .iter()
            .map(|(s, _)| *s)
            .chain(["CONFIGURATION"])
            .collect::<Vec<_>>();
        let hint = match closest(suffix, known) {
            Some(k) => format!("; did you mean PATRONI_{k}?"),
            None => String::new(),
        };
        return Err(ConfigError::Invalid {
            file: source.to_string(),
            path: format!("{key} (environment)"),
            reason: format!(
                "not a variable pgbaton knows{hint} (docs/CONFIGURATION.md lists them); unset it or correct its name"
            ),
        });
    }
    Ok(root)
}

/// `SUPERUSR_PASSWORD` → `SUPERUSER_PASSWORD`: a bootstrap-user variable whose user part is
/// a near miss of a section's name is a typo, not a user.
fn misspelt_section(suffix: &str) -> Option<String> {
    const SECTIONS: [&str; 8] = [
        "RESTAPI",
        "SUPERUSER",
        "REPLICATION",
        "REWIND",
        "ETCD3",
        "ETCD",
        "CTL",
        "POSTGRESQL",
    ];
    let (user, ending) = suffix
        .strip_suffix("_PASSWORD")
        .map(|u| (u, "_PASSWORD"))
        .or_else(|| suffix.strip_suffix("_OPTIONS").map(|u| (u, "_OPTIONS")))?;
    if SECTIONS.contains(&user) || user != user.to_ascii_uppercase() {
        return None;
    }
    closest(user, SECTIONS).map(|near| format!("{near}{ending}"))
}

/// `admin_PASSWORD` → `admin`: Patroni's bootstrap user variables, whose user part is not
/// one of the names above (so `RESTAPI_PASSWORD` stays the REST API's).
fn bootstrap_user<'a>(suffix: &'a str, ending: &str) -> Option<&'a str> {
    let user = suffix.strip_suffix(ending)?;
    let reserved = SIMPLE.iter().any(|(s, _)| *s == suffix);
    (!user.is_empty() && !reserved && !user.contains("__")).then_some(user)
}

/// Sets the dotted `path` in `root`, creating mappings on the way (a non-mapping in the way
/// is replaced: the variable wins, as in Patroni).
fn set(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let map = node.as_object_mut().expect("a mapping");
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_override_and_create_keys() {
        let root = json!({"name": "file-name", "restapi": {"listen": "127.0.0.1:8008"}});
        let out = overlay(
            "f",
            root,
            vars(&[
                ("PATRONI_NAME", "env-name"),
                ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8008"),
                ("PATRONI_SUPERUSER_PASSWORD", "pw"),
                ("PATRONI_admin_PASSWORD", "adminpw"),
                ("PATRONI_admin_OPTIONS", "createrole, createdb"),
                ("HOME", "/root"),
            ]),
        )
        .expect("overlay");
        assert_eq!(out["name"], "env-name");
        assert_eq!(out["restapi"]["listen"], "0.0.0.0:8008");
        assert_eq!(
            out["postgresql"]["authentication"]["superuser"]["password"],
            "pw"
        );
        assert_eq!(out["bootstrap"]["users"]["admin"]["password"], "adminpw");
        assert_eq!(
            out["bootstrap"]["users"]["admin"]["options"],
            json!(["createrole", "createdb"])
        );
    }

    #[test]
    fn an_unknown_variable_is_named_with_a_suggestion() {
        let err = overlay("f", json!({}), vars(&[("PATRONI_RESTAPI_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f: PATRONI_RESTAPI_LISTN (environment): not a variable pgbaton knows; did you mean PATRONI_RESTAPI_LISTEN? (docs/CONFIGURATION.md lists them); unset it or correct its name"
        );
    }

    #[test]
    fn a_misspelt_section_is_not_taken_for_a_user() {
        let err = overlay("f", json!({}), vars(&[("PATRONI_SUPERUSR_PASSWORD", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("did you mean PATRONI_SUPERUSER_PASSWORD?"),
            "{err}"
        );
    }

    #[test]
    fn patroni_configuration_replaces_the_file() {
        let out = overlay(
            "f",
            json!({"name": "file"}),
            vars(&[
                ("PATRONI_CONFIGURATION", "name: whole\nscope: s\n"),
                ("PATRONI_NAME", "ignored"),
            ]),
        )
        .expect("overlay");
        assert_eq!(out, json!({"name": "whole", "scope": "s"}));
    }
}
