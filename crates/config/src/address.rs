//! `host:port` addresses: splitting, port range checks, and whether a host is a wildcard
//! that other members could not connect to.

use crate::walk::{Ctx, Result};

/// Split `host:port` (IPv6 as `[::1]:5432`). The host may be a comma list (`listen` of
/// PostgreSQL). `default_port` applies when the text has no port; `None` makes the port
/// required.
pub(crate) fn split_host_port(
    ctx: &Ctx,
    path: &str,
    text: &str,
    default_port: Option<u16>,
) -> Result<(String, u16)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(bad(ctx, path, text)),
            },
            None => return Err(bad(ctx, path, text)),
        }
    } else {
        match text.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address with no port.
            Some((h, _)) if h.contains(':') => (text, None),
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.trim().is_empty() {
        return Err(bad(ctx, path, text));
    }
    let port = match (port, default_port) {
        (Some(p), _) => parse_port(ctx, path, p)?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad(ctx, path, text)),
    };
    Ok((host.to_string(), port))
}

fn parse_port(ctx: &Ctx, path: &str, p: &str) -> Result<u16> {
    let n: i64 = p.trim().parse().map_err(|_| {
        ctx.invalid(
            path,
            format!("port \"{p}\" is not a number; write host:port, e.g. 127.0.0.1:5432"),
        )
    })?;
    u16::try_from(n)
        .ok()
        .filter(|&port| port != 0)
        .ok_or_else(|| ctx.invalid(path, format!("port {n} is out of range (1-65535)")))
}

fn bad(ctx: &Ctx, path: &str, text: &str) -> crate::error::ConfigError {
    ctx.invalid(
        path,
        format!("expected host:port (e.g. 127.0.0.1:5432 or [::1]:5432), got \"{text}\""),
    )
}

/// A host that means "every interface": fine to listen on, useless to connect to.
pub(crate) fn is_wildcard(host: &str) -> bool {
    matches!(host.trim(), "0.0.0.0" | "::" | "*" | "0:0:0:0:0:0:0:0")
}

/// `host:port` for display and for clients, with brackets around IPv6 hosts.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ipv4_ipv6_and_comma_lists() {
        let ctx = Ctx::new("f");
        let ok = |t: &str, d| split_host_port(&ctx, "p", t, d).expect("valid address");
        assert_eq!(ok("127.0.0.1:5432", None), ("127.0.0.1".into(), 5432));
        assert_eq!(ok("[::1]:8008", None), ("::1".into(), 8008));
        assert_eq!(ok("a,b:5433", None), ("a,b".into(), 5433));
        assert_eq!(ok("etcd1", Some(2379)), ("etcd1".into(), 2379));
        assert_eq!(ok("::1", Some(2379)), ("::1".into(), 2379));
    }

    #[test]
    fn rejects_missing_or_bad_ports() {
        let ctx = Ctx::new("f");
        let err = |t: &str| {
            split_host_port(&ctx, "p", t, None)
                .expect_err("invalid address")
                .to_string()
        };
        assert_eq!(err("h:0"), "f: p: port 0 is out of range (1-65535)");
        assert_eq!(
            err("h:x"),
            "f: p: port \"x\" is not a number; write host:port, e.g. 127.0.0.1:5432"
        );
        assert_eq!(
            err(":5432"),
            "f: p: expected host:port (e.g. 127.0.0.1:5432 or [::1]:5432), got \":5432\""
        );
        assert_eq!(
            err("host"),
            "f: p: expected host:port (e.g. 127.0.0.1:5432 or [::1]:5432), got \"host\""
        );
    }
}
