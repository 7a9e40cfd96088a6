//! The DCS section: `etcd3:` (or Patroni's v2 name `etcd:`, read the same way). pgbaton speaks
//! the etcd v3 API over http or https (Patroni's `protocol`, `cacert`, `cert`, `key`), with
//! etcd's user/password authentication when `username` is set; other DCS types are refused.

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
            https: false,
            cacert: None,
            cert: None,
            key: None,
        }),
    }
}

fn parse_etcd(ctx: &mut Ctx, mut sec: Section) -> Result<DcsConfig> {
    let mut https = false;
    if let Some(protocol) = sec.string(ctx, "protocol")? {
        https = check_scheme(ctx, &sec.at("protocol"), &protocol)?;
    }
    let mut hosts = Vec::new();
    let mut schemes = Vec::new();
    for key in ["hosts", "host", "url"] {
        if let Some(v) = sec.get(key) {
            let list = endpoint_list(ctx, &sec.at(key), v)?;
            schemes = list.iter().filter_map(|(_, s)| *s).collect();
            hosts = list.into_iter().map(|(h, _)| h).collect();
            break;
        }
    }
    // Endpoints written as https://host:port ask for TLS as protocol: https does.
    if schemes.contains(&true) {
        if schemes.contains(&false) {
            return Err(ctx.invalid(
                &sec.at("hosts"),
                "mixes http:// and https:// endpoints: etcd is reached one way; use the same scheme for every endpoint",
            ));
        }
        https = true;
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
    let cacert = sec.string(ctx, "cacert")?;
    let cert = sec.string(ctx, "cert")?;
    let key = sec.string(ctx, "key")?;
    if cert.is_some() != key.is_some() {
        let missing = if cert.is_some() { "key" } else { "cert" };
        return Err(ctx.invalid(
            &sec.at(missing),
            "cert and key go together: set both (the client certificate and its private key) or neither",
        ));
    }
    if !https && (cacert.is_some() || cert.is_some()) {
        ctx.warn(
            &sec.at(if cacert.is_some() { "cacert" } else { "cert" }),
            "TLS files are set but etcd is reached over http; set protocol: https (or https:// endpoints) to use them",
        );
    }
    sec.unsupported(ctx, "use_proxies", "not supported by pgbaton; ignored");
    let username = sec.string(ctx, "username")?;
    let password = sec.any_string(ctx, "password")?;
    if username.is_none() && password.is_some() {
        return Err(ctx.invalid(
            &sec.at("password"),
            "a password without a username: set username too (etcd's user)",
        ));
    }
    sec.finish(ctx, "ignored");
    if hosts.is_empty() {
        hosts.push(DEFAULT_HOST.to_string());
    }
    Ok(DcsConfig {
        hosts,
        username,
        password,
        https,
        cacert,
        cert,
        key,
    })
}

/// `http` or `https` (true for https).
fn check_scheme(ctx: &Ctx, path: &str, scheme: &str) -> Result<bool> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(false),
        "https" => Ok(true),
        other => Err(ctx.invalid(
            path,
            format!("expected \"http\" or \"https\", got \"{other}\""),
        )),
    }
}

/// A list of endpoints, or one string with comma-separated endpoints (Patroni accepts both);
/// each with whether it was written with https:// (`None`: no scheme).
fn endpoint_list(ctx: &Ctx, path: &str, v: &Value) -> Result<Vec<(String, Option<bool>)>> {
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

/// `host:port`, `host` (port 2379), `http://host:port` or `https://host:port`.
fn endpoint(ctx: &Ctx, path: &str, text: &str) -> Result<(String, Option<bool>)> {
    let (https, bare) = match text.split_once("://") {
        Some((scheme, rest)) => (
            Some(check_scheme(ctx, path, scheme)?),
            rest.trim_end_matches('/'),
        ),
        None => (None, text),
    };
    let (host, port) = split_host_port(ctx, path, bare, Some(2379))?;
    Ok((join_host_port(&host, port), https))
}
