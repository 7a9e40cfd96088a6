//! The `postgresql:` section: the local PostgreSQL server (addresses, directories, roles,
//! parameters, pg_hba, pg_basebackup options).

use std::path::PathBuf;

use crate::address::{is_wildcard, split_host_port};
use crate::model::{CommandMethod, Credentials, PostgresqlConfig, ReplicaMethod};
use crate::walk::{self, Ctx, Result, Section};

use super::options::option_list;

const DEFAULT_LISTEN: &str = "127.0.0.1:5432";
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const DATA_DIR_MISSING: &str =
    "required key is missing (the PostgreSQL data directory this member manages)";

/// Keys Patroni knows that pgbaton accepts but does not act on, with what to tell the user.
const UNSUPPORTED: [(&str, &str); 10] = [
    (
        "callbacks",
        "callback scripts are not supported yet; ignored",
    ),
    (
        "recovery_conf",
        "not used by pgbaton (it writes the standby settings itself); ignored",
    ),
    ("pre_promote", "not supported yet; ignored"),
    ("before_stop", "not supported yet; ignored"),
    ("custom_conf", "not supported yet; ignored"),
    (
        "pg_ctl_timeout",
        "not used by pgbaton (it runs postgres directly); ignored",
    ),
    ("pg_ident", "not supported yet; ignored"),
    (
        "use_unix_socket_repl",
        "not supported yet; replication connects over TCP",
    ),
    (
        "remove_data_directory_on_rewind_failure",
        "not configurable in pgbaton yet; ignored",
    ),
    (
        "remove_data_directory_on_diverged_timelines",
        "not configurable in pgbaton yet; ignored",
    ),
];

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<PostgresqlConfig> {
    let Some(mut sec) = sec else {
        return Err(ctx.invalid("postgresql.data_dir", DATA_DIR_MISSING));
    };
    let listen_text = sec
        .string(ctx, "listen")?
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let (listen_host, port) = split_host_port(ctx, &sec.at("listen"), &listen_text, None)?;
    let (connect_host, connect_port) = connect_address(ctx, &mut sec, &listen_host, port)?;
    let data_dir = sec
        .string(ctx, "data_dir")?
        .map(PathBuf::from)
        .ok_or_else(|| ctx.invalid(&sec.at("data_dir"), DATA_DIR_MISSING))?;
    let bin_dir = PathBuf::from(
        sec.string(ctx, "bin_dir")?
            .unwrap_or_else(|| DEFAULT_BIN_DIR.to_string()),
    );
    if let Some(config_dir) = sec.string(ctx, "config_dir")? {
        if std::path::Path::new(&config_dir) != data_dir {
            let path = sec.at("config_dir");
            ctx.warn(&path, "a separate configuration directory is not supported yet; the configuration files are kept in data_dir");
        }
    }
    let pgpass = sec.string(ctx, "pgpass")?.map(PathBuf::from);
    let Roles {
        superuser,
        replication,
        replication_tls,
        rewind,
        rewind_tls,
    } = match sec.section(ctx, "authentication")? {
        Some(auth) => authentication(ctx, auth)?,
        None => Roles {
            superuser: Credentials {
                username: "postgres".into(),
                password: None,
            },
            replication: Credentials {
                username: "replicator".into(),
                password: None,
            },
            replication_tls: Vec::new(),
            rewind: None,
            rewind_tls: Vec::new(),
        },
    };
    let parameters = match sec.get("parameters") {
        Some(v) => walk::parameters(ctx, &sec.at("parameters"), v)?,
        None => Default::default(),
    };
    let pg_hba = match sec.get("pg_hba") {
        Some(v) => walk::string_list(ctx, &sec.at("pg_hba"), v)?,
        None => Vec::new(),
    };
    let basebackup = match sec.get("basebackup") {
        Some(v) => option_list(ctx, &sec.at("basebackup"), v)?
            .iter()
            .map(|o| o.to_arg())
            .collect(),
        None => Vec::new(),
    };
    let use_unix_socket = sec.bool(ctx, "use_unix_socket")?.unwrap_or(false);
    for key in ["use_pg_rewind", "use_slots"] {
        sec.unsupported(
            ctx,
            key,
            "a cluster-wide setting: put it under bootstrap.dcs.postgresql; ignored here",
        );
    }
    for (key, why) in UNSUPPORTED {
        sec.unsupported(ctx, key, why);
    }
    let create_replica_methods = replica_methods(ctx, &mut sec)?;
    sec.finish(ctx, "ignored");
    Ok(PostgresqlConfig {
        listen_host,
        port,
        connect_host,
        connect_port,
        data_dir,
        bin_dir,
        pgpass,
        superuser,
        replication,
        rewind,
        replication_tls,
        rewind_tls,
        parameters,
        pg_hba,
        basebackup,
        use_unix_socket,
        create_replica_methods,
    })
}

/// `create_replica_methods: [pgbackrest, basebackup]` and each custom method's section
/// (`pgbackrest: {command, keep_data, no_params, ...}`), as Patroni reads them.
fn replica_methods(ctx: &mut Ctx, sec: &mut Section) -> Result<Vec<ReplicaMethod>> {
    let list_path = sec.at("create_replica_methods");
    let Some(list) = sec.get("create_replica_methods") else {
        return Ok(Vec::new());
    };
    let names = walk::string_list(ctx, &list_path, list)?;
    let mut out: Vec<ReplicaMethod> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let item_path = walk::index(&list_path, i);
        if out.iter().any(|m| m.name() == name) {
            return Err(ctx.invalid(
                &item_path,
                format!(
                    "\"{name}\" is listed twice; name each method once, in the order to try them"
                ),
            ));
        }
        if name == "basebackup" {
            out.push(ReplicaMethod::Basebackup);
            continue;
        }
        if [
            "create_replica_methods",
            "parameters",
            "authentication",
            "pg_hba",
            "data_dir",
            "bin_dir",
            "listen",
        ]
        .contains(&name.as_str())
        {
            return Err(ctx.invalid(
                &item_path,
                format!("\"{name}\" is a key of postgresql, not a replica method; name a method with its own section (e.g. pgbackrest) or basebackup"),
            ));
        }
        let method_path = sec.at(name);
        let Some(mut method) = sec.section(ctx, name)? else {
            return Err(ctx.invalid(
                &item_path,
                format!("method \"{name}\" has no section {method_path}: add one with its command (e.g. `{name}: {{command: ..., keep_data: true, no_params: true}}`), or use basebackup"),
            ));
        };
        let command = super::method_section::command(
            ctx,
            &mut method,
            format!("required key is missing (the command that creates the replica's data directory, e.g. `pgbackrest --stanza=main --delta restore`; method \"{name}\" of create_replica_methods)"),
        )?;
        let keep_data = method.bool(ctx, "keep_data")?.unwrap_or(false);
        let no_params = method.bool(ctx, "no_params")?.unwrap_or(false);
        for key in ["no_leader", "no_master"] {
            method.unsupported(
                ctx,
                key,
                "not supported yet: replica methods run only while a leader is running; ignored",
            );
        }
        let params = super::method_section::extra_params(ctx, &method)?;
        out.push(ReplicaMethod::Command(CommandMethod {
            name: name.clone(),
            command,
            keep_data,
            no_params,
            params,
        }));
    }
    Ok(out)
}

/// The address others use; defaults to the first listen host that is not a wildcard.
fn connect_address(
    ctx: &Ctx,
    sec: &mut Section,
    listen_host: &str,
    port: u16,
) -> Result<(String, u16)> {
    let path = sec.at("connect_address");
    if let Some(text) = sec.string(ctx, "connect_address")? {
        let (host, connect_port) = split_host_port(ctx, &path, &text, None)?;
        if is_wildcard(&host) || host.contains(',') {
            return Err(ctx.invalid(
                &path,
                format!("{host} is an address to listen on, not one others can connect to; set this member's reachable address, e.g. 192.168.1.11:{connect_port}"),
            ));
        }
        return Ok((host, connect_port));
    }
    match listen_host
        .split(',')
        .map(str::trim)
        .find(|h| !h.is_empty() && !is_wildcard(h))
    {
        Some(host) => Ok((host.to_string(), port)),
        None => Err(ctx.invalid(
            &path,
            format!("required key is missing (postgresql.listen is {listen_host}, which other members cannot connect to; set this member's reachable host:port)"),
        )),
    }
}

/// The roles of `postgresql.authentication`, with the libpq TLS settings of those that
/// connect over TCP to another member.
struct Roles {
    superuser: Credentials,
    replication: Credentials,
    replication_tls: Vec<(String, String)>,
    rewind: Option<Credentials>,
    rewind_tls: Vec<(String, String)>,
}

fn authentication(ctx: &mut Ctx, mut auth: Section) -> Result<Roles> {
    // The superuser's TLS settings serve pg_rewind when it connects as the superuser (no
    // `rewind` role); the agent's own superuser connections use the local socket.
    let (superuser, superuser_tls) = role(ctx, &mut auth, "superuser", Some("postgres"))?;
    let (replication, replication_tls) = role(ctx, &mut auth, "replication", Some("replicator"))?;
    let (rewind, rewind_tls) = match auth.get("rewind") {
        Some(_) => {
            let (c, tls) = role(ctx, &mut auth, "rewind", None)?;
            (Some(c), tls)
        }
        None => (None, superuser_tls),
    };
    auth.finish(ctx, "ignored");
    Ok(Roles {
        superuser,
        replication,
        replication_tls,
        rewind,
        rewind_tls,
    })
}

/// libpq's TLS keywords Patroni accepts per role, and the values a keyword allows (None:
/// a file path).
const TLS_KEYS: &[(&str, Option<&[&str]>)] = &[
    (
        "sslmode",
        Some(&[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]),
    ),
    ("sslkey", None),
    ("sslcert", None),
    ("sslrootcert", None),
    ("sslcrl", None),
    ("sslcrldir", None),
    ("gssencmode", Some(&["disable", "prefer", "require"])),
    ("channel_binding", Some(&["disable", "prefer", "require"])),
];

/// One role of `postgresql.authentication` and its libpq TLS keywords (keyword, value);
/// without a default user name, `username` is required.
fn role(
    ctx: &mut Ctx,
    auth: &mut Section,
    key: &str,
    default_user: Option<&str>,
) -> Result<(Credentials, Vec<(String, String)>)> {
    let Some(mut sec) = auth.section(ctx, key)? else {
        let username = default_user.unwrap_or_default().to_string();
        return Ok((
            Credentials {
                username,
                password: None,
            },
            Vec::new(),
        ));
    };
    let username = match (sec.string(ctx, "username")?, default_user) {
        (Some(u), _) => u,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(ctx.invalid(
                &sec.at("username"),
                "required key is missing (the role to connect as)",
            ))
        }
    };
    let password = sec.any_string(ctx, "password")?;
    let mut settings = Vec::new();
    for (keyword, allowed) in TLS_KEYS {
        let Some(value) = sec.string(ctx, keyword)? else {
            continue;
        };
        match allowed {
            Some(values) if !values.contains(&value.as_str()) => {
                return Err(ctx.invalid(
                    &sec.at(keyword),
                    format!(
                        "{value} is not a {keyword} libpq knows; use one of {}",
                        values.join(", ")
                    ),
                ));
            }
            None if !std::path::Path::new(&value).exists() => {
                let path = sec.at(keyword);
                ctx.warn(
                    &path,
                    format!("{value} does not exist here; libpq will refuse to connect until it does (it is read as the user PostgreSQL runs as)"),
                );
            }
            _ => {}
        }
        settings.push((keyword.to_string(), value));
    }
    sec.unsupported(
        ctx,
        "sslpassword",
        "an encrypted client key is not supported; use a key without a passphrase readable only by the user PostgreSQL runs as; ignored",
    );
    sec.finish(ctx, "ignored");
    Ok((Credentials { username, password }, settings))
}
