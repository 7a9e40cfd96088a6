//! The DCS section: `etcd3:` (or Patroni's v2 name `etcd:`, read the same way). pgbaton speaks
//! the etcd v3 API over plain http; other DCS types are refused.

use serde_json::Value;

use crate::address::{join_host_port, split_host_port};
use crate::model::DcsConfig;
use crate::walk::{self, Ctx, Result, Section};

const DEFAULT_HOST: &str = "127.0.0.1:2379";
const OTHER_DCS: [&str; 5] = ["consul", "zookeeper", "exhibitor", "kubernetes", "raft"];

pub(super) fn parse(ctx: &mut Ctx, root: &mut Section) -> Result<DcsConfig> {
    let etcd3 = root.section(ctx, "etcd3")?;
    let etcd = root.section(ctx, "etcd")?;
    let chosen = match (etcd3, etcd) {
        (Some(v3), Some(_)) => {
            ctx.warn(
                &root.at("etcd"),
                "both etcd3 and etcd are set; etcd3 is used and this section is ignored",
            );
            Some(v3)
        }
        (v3, v2) => v3.or(v2),
    };
    for key in OTHER_DCS {
        if root.has(key) {
            let path = root.at(key);
            if chosen.is_none() {
                return Err(ctx.invalid(
                    &path,
                    format!("{key} is not supported: pgbaton keeps cluster state in etcd; configure an etcd3 section with the etcd endpoints"),
                ));
            }
            ctx.warn(
                &path,
                format!("{key} is not supported; ignored (etcd is used)"),
            );
        }
        root.known(key);
    }
    match chosen {
        Some(sec) => parse_etcd(ctx, sec),
        None => Ok(DcsConfig {
            hosts: vec![DEFAULT_HOST.to_string()],
            username: None,
            password: None,
        }),
    }
}

fn parse_etcd(ctx: &mut Ctx, mut sec: Section) -> Result<DcsConfig> {
    if let Some(protocol) = sec.string(ctx, "protocol")? {
        check_scheme(ctx, &sec.at("protocol"), &protocol)?;
    }
    let mut hosts = Vec::new();
    if let Some(v) = sec.get("hosts") {
        hosts = endpoint_list(ctx, &sec.at("hosts"), v)?;
    } else if let Some(v) = sec.get("host") {
        hosts = endpoint_list(ctx, &sec.at("host"), v)?;
    } else if let Some(v) = sec.get("url") {
        hosts = endpoint_list(ctx, &sec.at("url"), v)?;
    }
    if sec.has("hosts") {
        sec.unsupported(ctx, "host", "hosts is also set and wins; remove this key");
    }
    sec.known("host");
    sec.known("url");
    for key in ["srv", "srv_suffix", "proxy"] {
        if sec.get(key).is_some() {
            return Err(ctx.invalid(
                &sec.at(key),
                "not supported by pgbaton: list the etcd endpoints under hosts (host:port, ...)",
            ));
        }
    }
    for key in ["cacert", "cert", "key"] {
        sec.unsupported(ctx, key, "TLS to etcd is not supported yet; ignored");
    }
    sec.unsupported(ctx, "use_proxies", "not supported by pgbaton; ignored");
    let username = sec.string(ctx, "username")?;
    let password = sec.any_string(ctx, "password")?;
    sec.finish(ctx, "ignored");
    if hosts.is_empty() {
        hosts.push(DEFAULT_HOST.to_string());
    }
    Ok(DcsConfig {
        hosts,
        username,
        password,
    })
}

fn check_scheme(ctx: &Ctx, path: &str, scheme: &str) -> Result<()> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(()),
        "https" => Err(ctx.invalid(
            path,
            "https is not supported yet: pgbaton talks plain http to etcd; use protocol: http (and keep etcd on a trusted network)",
        )),
        other => Err(ctx.invalid(path, format!("expected \"http\", got \"{other}\""))),
    }
}

/// A list of endpoints, or one string with comma-separated endpoints (Patroni accepts both).
fn endpoint_list(ctx: &Ctx, path: &str, v: &Value) -> Result<Vec<String>> {
    let items: Vec<(String, String)> = match v {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let p = walk::index(path, i);
                walk::as_nonempty_string(ctx, &p, item).map(|s| (p, s))
            })
            .collect::<Result<_>>()?,
        other => walk::as_nonempty_string(ctx, path, other)?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| (path.to_string(), s.trim().to_string()))
            .collect(),
    };
    items
        .into_iter()
        .map(|(p, text)| endpoint(ctx, &p, &text))
        .collect()
}

/// `host:port`, `host` (port 2379) or `http://host:port`.
fn endpoint(ctx: &Ctx, path: &str, text: &str) -> Result<String> {
    let bare = match text.split_once("://") {
        Some((scheme, rest)) => {
            check_scheme(ctx, path, scheme)?;
            rest.trim_end_matches('/')
        }
        None => text,
    };
    let (host, port) = split_host_port(ctx, path, bare, Some(2379))?;
    Ok(join_host_port(&host, port))
}
