//! `standby_cluster` of the dynamic configuration (Patroni's shape): the whole cluster is a
//! standby of a remote primary. Its leader (the "standby leader") follows the remote primary
//! by streaming from `host:port` or from the archive with `restore_command`; the other members
//! cascade from it. Removing the section promotes the standby leader.

use serde_json::{json, Map, Value};

use crate::walk::{self, Ctx, Result, Section};

/// Where a standby cluster's leader takes its WAL from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StandbyCluster {
    /// Host of the remote primary (or of something that always points at it: a router's
    /// write listener, a virtual IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its port (5432 when not given).
    pub port: u16,
    /// A physical slot on the remote primary for the standby leader (`primary_slot_name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_slot_name: Option<String>,
    /// Fetches WAL from the remote cluster's archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_cleanup_command: Option<String>,
    /// The standby leader replays this late (a PostgreSQL interval: `1h`, `300s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_min_apply_delay: Option<String>,
    /// How the first member copies the remote primary: names of `postgresql`'s
    /// `create_replica_methods` (`basebackup` when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub create_replica_methods: Vec<String>,
}

impl StandbyCluster {
    /// Patroni's JSON for the DCS `config` key.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        if let Some(host) = &self.host {
            out.insert("host".into(), json!(host));
            out.insert("port".into(), json!(self.port));
        }
        for (key, value) in [
            ("primary_slot_name", &self.primary_slot_name),
            ("restore_command", &self.restore_command),
            ("archive_cleanup_command", &self.archive_cleanup_command),
            ("recovery_min_apply_delay", &self.recovery_min_apply_delay),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), json!(v));
            }
        }
        if !self.create_replica_methods.is_empty() {
            out.insert(
                "create_replica_methods".into(),
                json!(self.create_replica_methods),
            );
        }
        Value::Object(out)
    }
}

pub(crate) fn parse(ctx: &mut Ctx, path: &str, v: &Value) -> Result<StandbyCluster> {
    let mut sec = Section::new(ctx, path, v)?;
    let host = sec.string(ctx, "host")?;
    let port =
        match sec.get("port") {
            None => 5432,
            Some(v) => {
                // Patroni accepts the port as a number or a string.
                let p = sec.at("port");
                let n = match v {
                    Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
                        ctx.invalid(&p, format!("expected a port number, got \"{s}\""))
                    })?,
                    other => walk::as_int(ctx, &p, other)?,
                };
                u16::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                    ctx.invalid(&p, format!("must be a port (1 to 65535), got {n}"))
                })?
            }
        };
    let primary_slot_name = sec.string(ctx, "primary_slot_name")?;
    if let Some(name) = &primary_slot_name {
        let valid = name.len() <= 63
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !valid {
            return Err(ctx.invalid(
                &sec.at("primary_slot_name"),
                "invalid slot name: use 1 to 63 lower-case letters, digits and underscores",
            ));
        }
    }
    let restore_command = sec.string(ctx, "restore_command")?;
    let archive_cleanup_command = sec.string(ctx, "archive_cleanup_command")?;
    let recovery_min_apply_delay = match sec.get("recovery_min_apply_delay") {
        None => None,
        Some(Value::Number(n)) => Some(format!("{n}ms")),
        Some(other) => Some(walk::as_nonempty_string(
            ctx,
            &sec.at("recovery_min_apply_delay"),
            other,
        )?),
    };
    let create_replica_methods = match sec.get("create_replica_methods") {
        None => Vec::new(),
        Some(v) => walk::string_list(ctx, &sec.at("create_replica_methods"), v)?,
    };
    let _ = sec.finish(ctx, "ignored");
    if host.is_none() && restore_command.is_none() {
        return Err(ctx.invalid(
            path,
            "a standby cluster needs host (and port) of the primary to stream from, or restore_command to read its archive; set one of them, or remove standby_cluster to run a normal cluster",
        ));
    }
    Ok(StandbyCluster {
        host,
        port,
        primary_slot_name,
        restore_command,
        archive_cleanup_command,
        recovery_min_apply_delay,
        create_replica_methods,
    })
}
