//! The peers port: what the agent asks other members' REST APIs. Production speaks HTTP(S)
//! ([`HttpPeers`]); another implementation can answer from a model. The agent applies its own
//! time bounds around every call (1 s for a position; a quarter ttl, within 100 ms to 1 s,
//! for a failsafe round).

use std::future::Future;

use pgbaton_config::Credentials;

/// Other members' REST APIs, addressed by the `api_url` they publish in the DCS.
pub trait Peers: Clone + Send + Sync + 'static {
    /// `GET api_url` (a member's `/patroni`): its status document, or `None` when it did
    /// not answer with one.
    fn status(
        &self,
        api_url: String,
    ) -> impl Future<Output = Option<serde_json::Value>> + Send + 'static;

    /// `POST /failsafe` with this leader's round `body`: `Ok` when the member answered
    /// `Accepted`, else what it answered or why it could not be asked.
    fn failsafe(
        &self,
        api_url: String,
        body: serde_json::Value,
        auth: Option<Credentials>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static;
}

/// The production adapter: one shared HTTP client (TLS trust as `ctl` and the agent are
/// configured, see the binary's `http.rs`).
#[derive(Clone)]
pub struct HttpPeers {
    client: reqwest::Client,
}

impl HttpPeers {
    pub fn new(client: reqwest::Client) -> Self {
        HttpPeers { client }
    }
}

impl Peers for HttpPeers {
    fn status(
        &self,
        api_url: String,
    ) -> impl Future<Output = Option<serde_json::Value>> + Send + 'static {
        let http = self.client.clone();
        async move {
            let resp = http.get(&api_url).send().await.ok()?;
            resp.json::<serde_json::Value>().await.ok()
        }
    }

    fn failsafe(
        &self,
        api_url: String,
        body: serde_json::Value,
        auth: Option<Credentials>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let http = self.client.clone();
        async move {
            let mut req = http.post(failsafe_url(&api_url)).json(&body);
            if let Some(c) = &auth {
                req = req.basic_auth(&c.username, c.password.as_deref());
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() && text.trim() == "Accepted" {
                Ok(())
            } else {
                Err(format!("{status}: {}", text.trim()))
            }
        }
    }
}

/// The URL of a member's `POST /failsafe`, from its published `api_url` (`.../patroni`).
pub fn failsafe_url(api_url: &str) -> String {
    let base = api_url.strip_suffix("/patroni").unwrap_or(api_url);
    format!("{}/failsafe", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failsafe_url_from_api_url() {
        assert_eq!(
            failsafe_url("http://127.0.0.1:8008/patroni"),
            "http://127.0.0.1:8008/failsafe"
        );
        assert_eq!(failsafe_url("https://h:1/"), "https://h:1/failsafe");
    }
}
