//! Harness for the end-to-end tests: real etcd, real PostgreSQL 15 and real `pgbaton agent`
//! processes on loopback, with helpers to break them and to observe the result.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod config;
pub mod http;
pub mod local_up;
pub mod logical;
pub mod monitor;
pub mod ports;
pub mod procs;
pub mod router;
pub mod sql;

pub use cluster::Cluster;
pub use monitor::assert_single_primary;

use std::time::Duration;

/// Time for a fresh cluster to come up (initdb, clones) on a busy 2-core machine.
pub const UP: Duration = Duration::from_secs(90);

/// Rewrite a member's pgbaton.yml (the agent reads it at its next start).
pub fn edit_member_yaml(cluster: &Cluster, name: &str, edit: impl FnOnce(String) -> String) {
    let path = cluster.config_path(name);
    let text = std::fs::read_to_string(&path).expect("reading pgbaton.yml");
    std::fs::write(&path, edit(text)).expect("writing pgbaton.yml");
}

/// `method` `http://127.0.0.1:<port><path>` with a JSON body and optional basic auth:
/// status code and body.
pub async fn api_send(
    port: u16,
    method: reqwest::Method,
    path: &str,
    body: &serde_json::Value,
    auth: Option<(&str, &str)>,
) -> anyhow::Result<(u16, String)> {
    pgbaton_api::install_default_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut request = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .json(body);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let resp = request.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// The member YAML with `lines` (indented for bootstrap.dcs, each ending in a newline) added
/// to bootstrap.dcs, before `maximum_lag_on_failover`.
pub fn with_bootstrap_dcs(yaml: String, lines: &str) -> String {
    const ANCHOR: &str = "    maximum_lag_on_failover:";
    assert!(
        yaml.contains(ANCHOR),
        "the member YAML has no `{ANCHOR}` line in bootstrap.dcs"
    );
    yaml.replacen(ANCHOR, &format!("{lines}{ANCHOR}"), 1)
}

/// The member YAML with `synchronous_mode: true` (and `synchronous_mode_strict: true` when
/// `strict`) added to bootstrap.dcs.
pub fn with_sync_mode(yaml: String, strict: bool) -> String {
    let mut extra = String::from("    synchronous_mode: true\n");
    if strict {
        extra.push_str("    synchronous_mode_strict: true\n");
    }
    with_bootstrap_dcs(yaml, &extra)
}

/// etcd plus `n` agents (node1..nodeN, default timings) whose bootstrap.dcs turns on
/// synchronous mode (strict when `strict`): the configs are edited before any agent starts.
pub async fn start_sync_cluster(n: u16, strict: bool) -> Cluster {
    let mut cluster = Cluster::start_with(0, config::Timing::default()).await;
    for k in 1..=n {
        let name = format!("node{k}");
        cluster.add_member(&name);
        edit_member_yaml(&cluster, &name, |yaml| with_sync_mode(yaml, strict));
        cluster.start_agent(&name);
    }
    cluster
}
