//! Harness for the end-to-end tests: real etcd, real PostgreSQL 15 and real `pgbaton agent`
//! processes on loopback, with helpers to break them and to observe the result.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod config;
pub mod http;
pub mod monitor;
pub mod ports;
pub mod procs;
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
