//! GET requests to a member's REST API.

use std::time::Duration;

use super::cluster::Cluster;

/// `GET http://127.0.0.1:<port><path>`: status code and body.
pub async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    pgbaton_api::install_default_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    Ok((status, body))
}

impl Cluster {
    pub async fn api_get(&self, name: &str, path: &str) -> anyhow::Result<(u16, String)> {
        get(self.api_port(name), path).await
    }

    /// `GET /patroni` parsed as JSON.
    pub async fn patroni(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let (_, body) = self.api_get(name, "/patroni").await?;
        Ok(serde_json::from_str(&body)?)
    }
}
