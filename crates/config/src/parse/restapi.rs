//! The `restapi:` section: where the REST API listens and how others reach it.

use crate::address::{is_wildcard, join_host_port, split_host_port};
use crate::model::{Credentials, RestApiConfig};
use crate::walk::{Ctx, Result, Section};

const DEFAULT_LISTEN: &str = "127.0.0.1:8008";

/// 127.0.0.0/8, ::1 or localhost: only this machine can reach it.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<RestApiConfig> {
    let Some(mut sec) = sec else {
        return Ok(RestApiConfig {
            listen: DEFAULT_LISTEN.to_string(),
            connect_address: DEFAULT_LISTEN.to_string(),
            authentication: None,
            certfile: None,
            keyfile: None,
            cafile: None,
        });
    };
    let listen_text = sec
        .string(ctx, "listen")?
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let (listen_host, listen_port) = split_host_port(ctx, &sec.at("listen"), &listen_text, None)?;
    let listen = join_host_port(&listen_host, listen_port);
    let connect_address = match sec.string(ctx, "connect_address")? {
        Some(text) => {
            let path = sec.at("connect_address");
            let (host, port) = split_host_port(ctx, &path, &text, None)?;
            if is_wildcard(&host) {
                return Err(ctx.invalid(
                    &path,
                    format!("{host} is an address to listen on, not one others can connect to; set this member's reachable address, e.g. 192.168.1.11:{port}"),
                ));
            }
            join_host_port(&host, port)
        }
        None if is_wildcard(&listen_host) => {
            return Err(ctx.invalid(
                &sec.at("connect_address"),
                format!("required key is missing (restapi.listen is {listen}, which others cannot connect to; set this member's reachable host:port)"),
            ))
        }
        None => listen.clone(),
    };
    let authentication = match sec.section(ctx, "authentication")? {
        Some(mut auth) => {
            let username = auth.string(ctx, "username")?.ok_or_else(|| {
                ctx.invalid(
                    &auth.at("username"),
                    "required key is missing (the user the write endpoints require)",
                )
            })?;
            let password = auth.any_string(ctx, "password")?;
            auth.finish(ctx, "ignored");
            Some(Credentials { username, password })
        }
        None => None,
    };
    let certfile = sec.string(ctx, "certfile")?;
    let keyfile = sec.string(ctx, "keyfile")?;
    let cafile = sec.string(ctx, "cafile")?;
    if keyfile.is_some() && certfile.is_none() {
        return Err(ctx.invalid(
            &sec.at("certfile"),
            "required key is missing (restapi.keyfile is set: give the certificate too, or remove keyfile)",
        ));
    }
    for key in [
        "verify_client",
        "keyfile_password",
        "ciphers",
        "http_extra_headers",
        "https_extra_headers",
        "allowlist",
        "allowlist_include_members",
        "request_queue_size",
        "server_tokens",
    ] {
        sec.unsupported(ctx, key, "not supported by pgbaton yet; ignored");
    }
    let auth_path = sec.at("authentication");
    sec.finish(ctx, "ignored");
    if authentication.is_none() && !is_loopback(&listen_host) {
        ctx.warn(
            &auth_path,
            format!("the REST API listens on {listen} without authentication: anyone who reaches it can switch over, restart, reinitialize or reconfigure the cluster; set restapi.authentication (username, password)"),
        );
    }
    Ok(RestApiConfig {
        listen,
        connect_address,
        authentication,
        certfile,
        keyfile,
        cafile,
    })
}
