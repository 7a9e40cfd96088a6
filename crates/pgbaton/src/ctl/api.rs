//! A member's REST API as `ctl` speaks to it: the operator's credentials, http or https.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// A member's REST API, spoken with the operator's credentials.
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

/// What a member's API answered.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer on one line: the text, or the `error` of a JSON reason.
    pub(super) fn message(&self) -> String {
        let from_json = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
        let text = from_json.unwrap_or_else(|| self.body.clone());
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl Api {
    pub(super) fn new(
        auth: Option<(String, String)>,
        trust: &crate::http::Trust,
    ) -> anyhow::Result<Api> {
        let http = crate::http::client(trust, Duration::from_secs(90))?;
        Ok(Api { http, auth })
    }

    /// `method` `base``path` with an optional JSON body.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        api_url: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", api_base(api_url));
        let mut request = self.http.request(method.clone(), &url);
        if let Some((user, password)) = &self.auth {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                pgbaton_api::basic_header(user, password),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok(Answer { status, body })
    }
}

/// `http://host:port/patroni` → `http://host:port`.
fn api_base(api_url: &str) -> &str {
    let url = api_url.trim_end_matches('/');
    url.strip_suffix("/patroni").unwrap_or(url)
}
