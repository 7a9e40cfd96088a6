//! The one way pgbaton builds HTTP clients for REST APIs (the agent asking its peers, `ctl`
//! calling members): plain http, or https verified against `restapi.cafile` / `ctl.cacert`
//! (the system roots otherwise), or unverified with `ctl.insecure`. TLS uses rustls with
//! the ring provider, configured per client: no process-wide state is needed.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use pgbaton_config::Config;

/// Trust settings for https: a CA bundle and/or "accept any certificate".
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub cafile: Option<String>,
    pub insecure: bool,
}

impl Trust {
    /// From a member's configuration: `ctl.cacert`, else `restapi.cafile`; `ctl.insecure`.
    pub fn from_config(cfg: &Config) -> Trust {
        Trust {
            cafile: cfg
                .ctl
                .cacert
                .clone()
                .or_else(|| cfg.restapi.cafile.clone()),
            insecure: cfg.ctl.insecure,
        }
    }
}

/// A client with `timeout` per request that speaks http and https.
pub fn client(trust: &Trust, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let tls =
        pgbaton_api::client_tls_config(trust.cafile.as_deref().map(Path::new), trust.insecure)
            .context(
                "cannot set up TLS for calling REST APIs (check ctl.cacert / restapi.cafile)",
            )?;
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .context("cannot build the HTTP client")
}
