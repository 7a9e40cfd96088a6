//! Loading the local YAML file: read, parse the YAML, then walk the top-level sections.
//!
//! Each section has its own module; this one holds the entry points ([`load_file`],
//! [`parse_str`]) and the top-level keys (scope, name, namespace, and the sections pgbaton
//! accepts but does not act on).

mod bootstrap;
mod env;
mod etcd;
mod method_section;
mod options;
mod pgbaton;
mod postgresql;
mod restapi;
mod tags;
mod watchdog;

use std::path::Path;

use serde_json::Value;

use crate::error::{ConfigError, Loaded};
use crate::model::{Config, CtlConfig};
use crate::walk::{Ctx, Result, Section};

/// Read and validate the configuration file at `path`, with the `PATRONI_*` environment
/// variables of this process laid over it (as Patroni does).
pub fn load_file(path: &Path) -> std::result::Result<Loaded<Config>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: file.clone(),
        error,
    })?;
    parse_str_with_env(&text, &file, std::env::vars())
}

/// Validate configuration text; `source` names it in messages (a file path or "<string>").
pub fn parse_str(text: &str, source: &str) -> std::result::Result<Loaded<Config>, ConfigError> {
    parse_str_with_env(text, source, std::iter::empty())
}

/// [`parse_str`] with environment variables (`PATRONI_*` ones apply, others are ignored).
pub fn parse_str_with_env(
    text: &str,
    source: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> std::result::Result<Loaded<Config>, ConfigError> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| yaml_error(source, &e))?;
    let value = env::overlay(source, value, vars)?;
    let mut ctx = Ctx::new(source);
    let config = top_level(&mut ctx, &value)?;
    Ok(Loaded {
        value: config,
        warnings: ctx.warnings,
    })
}

/// The parser's message without its own location suffix and source snippet.
fn yaml_error(source: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let full = e.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {column}");
    let message = full
        .strip_suffix(&suffix)
        .unwrap_or(&full)
        .trim()
        .to_string();
    ConfigError::Yaml {
        file: source.to_string(),
        line,
        column,
        message,
    }
}

fn top_level(ctx: &mut Ctx, v: &Value) -> Result<Config> {
    if v.is_null() {
        return Err(ctx.invalid(
            "",
            "the configuration is empty; it needs at least scope, name and postgresql.data_dir",
        ));
    }
    let mut root = Section::new(ctx, "", v)?;
    let scope = required(
        ctx,
        &mut root,
        "scope",
        "the cluster name shared by all members",
    )?;
    let name = required(
        ctx,
        &mut root,
        "name",
        "this member's unique name in the cluster",
    )?;
    let namespace = match root.string(ctx, "namespace")? {
        Some(ns) => normalise_namespace(ctx, &ns)?,
        None => "/service/".to_string(),
    };
    let restapi = restapi::parse(ctx, root.section(ctx, "restapi")?)?;
    let dcs = etcd::parse(ctx, &mut root)?;
    let bootstrap = bootstrap::parse(ctx, root.section(ctx, "bootstrap")?)?;
    let postgresql = postgresql::parse(ctx, root.section(ctx, "postgresql")?)?;
    let tags = tags::parse(ctx, root.section(ctx, "tags")?)?;
    let pgbaton = pgbaton::parse(ctx, root.section(ctx, "pgbaton")?)?;
    if let Some(log) = root.section(ctx, "log")? {
        // Patroni's logging options; the agent's own logging is set on its command line.
        let mut log = log;
        for key in [
            "type",
            "level",
            "traceback_level",
            "format",
            "dateformat",
            "static_fields",
            "max_queue_size",
            "dir",
            "file_num",
            "file_size",
            "mode",
            "loggers",
            "deduplicate_heartbeat_logs",
        ] {
            log.known(key);
        }
        log.finish(ctx, "ignored");
    }
    let watchdog = watchdog::parse(ctx, root.section(ctx, "watchdog")?)?;
    let ctl = match root.section(ctx, "ctl")? {
        Some(mut sec) => {
            let ctl = CtlConfig {
                insecure: sec.bool(ctx, "insecure")?.unwrap_or(false),
                cacert: sec.string(ctx, "cacert")?,
            };
            for key in ["certfile", "keyfile", "keyfile_password"] {
                sec.unsupported(
                    ctx,
                    key,
                    "client certificates are not supported yet; ignored",
                );
            }
            sec.finish(ctx, "ignored");
            ctl
        }
        None => CtlConfig::default(),
    };
    let pgbackrest = match root.section(ctx, "pgbackrest")? {
        Some(mut sec) => {
            let stanza = sec.string(ctx, "stanza")?.ok_or_else(|| {
                ctx.invalid(
                    &sec.at("stanza"),
                    "required key is missing (the pgBackRest stanza of this cluster, as its configuration file names it)",
                )
            })?;
            let config = sec.string(ctx, "config")?.map(std::path::PathBuf::from);
            let command = sec
                .string(ctx, "command")?
                .unwrap_or_else(|| "pgbackrest".to_string());
            sec.finish(ctx, "ignored");
            Some(crate::model::PgBackRestConfig {
                stanza,
                config,
                command,
            })
        }
        None => None,
    };
    root.unsupported(ctx, "citus", "Citus clusters are not supported; ignored");
    root.finish(ctx, "ignored");
    for (path, message) in
        crate::managed::overwritten_parameters(&bootstrap.dcs, &postgresql.parameters)
    {
        ctx.warn(&path, message);
    }
    Ok(Config {
        scope,
        namespace,
        name,
        restapi,
        dcs,
        bootstrap,
        postgresql,
        tags,
        pgbaton,
        watchdog,
        ctl,
        pgbackrest,
        source: ctx.file.clone(),
    })
}

/// A required non-empty string; `what` explains the key in the "missing" message.
fn required(ctx: &Ctx, sec: &mut Section, key: &str, what: &str) -> Result<String> {
    sec.string(ctx, key)?
        .ok_or_else(|| ctx.invalid(&sec.at(key), format!("required key is missing ({what})")))
}

/// `service`, `/service` and `/service/` all mean `/service/` (as in Patroni).
fn normalise_namespace(ctx: &Ctx, ns: &str) -> Result<String> {
    let inner = ns.trim().trim_matches('/');
    if inner.is_empty() {
        return Err(ctx.invalid(
            "namespace",
            "must name a key prefix such as /service/ (or leave it out for the default)",
        ));
    }
    Ok(format!("/{inner}/"))
}
