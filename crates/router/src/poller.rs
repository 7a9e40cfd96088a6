//! `lag_source: rest`: every `rest_poll_interval`, GET each member's `api_url` (from its
//! DCS document, e.g. `http://127.0.0.1:8008/patroni`) at once, with a short timeout, and
//! publish the answers (`lag::RestSample`) for the watcher to recompute the topology. Only
//! `http` URLs are polled: an `https` one (or one that is not a URL) is skipped with a
//! warning, once per member, and that member's lag comes from the DCS. A member that does
//! not answer keeps its last sample, which ages out after three intervals (see `lag`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbaton_dcs::ClusterState;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::lag::{RestLag, RestSample};
use crate::metrics::Metrics;

/// The timeout of one GET: the interval, kept between these.
const MIN_TIMEOUT: Duration = Duration::from_millis(200);
const MAX_TIMEOUT: Duration = Duration::from_secs(2);

/// The members to ask: name → URL, skipping (and warning once about) unusable URLs.
fn targets(state: &ClusterState, warned: &mut BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, doc) in &state.members {
        let url = doc.api_url.trim();
        if url.starts_with("http://") {
            out.insert(name.clone(), url.to_string());
            continue;
        }
        if url.is_empty() || !warned.insert(name.clone()) {
            continue;
        }
        if url.starts_with("https://") {
            tracing::warn!(member = %name, %url, "the router polls only http REST APIs; this member's lag comes from the DCS");
        } else {
            tracing::warn!(member = %name, %url, "api_url is not an http URL; this member's lag comes from the DCS");
        }
    }
    out
}

async fn fetch(client: reqwest::Client, url: String) -> Result<serde_json::Value, String> {
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    response
        .json::<serde_json::Value>()
        .await
        .map_err(|e| e.to_string())
}

/// Poll until `stop` turns true.
pub(crate) async fn poll(
    mut state: watch::Receiver<Arc<ClusterState>>,
    interval: Duration,
    out: watch::Sender<Arc<RestLag>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    // reqwest is built without a process-wide TLS provider: give it one (ring), even though
    // only http URLs are polled.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let built = tls.map_err(|e| e.to_string()).and_then(|tls| {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| e.to_string())
    });
    let client = match built {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the HTTP client for REST lag polling; read lag comes from the DCS only");
            return;
        }
    };
    let mut warned = BTreeSet::new();
    let mut failing = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shared::stopped(&mut stop) => return,
        }
        let members = targets(&state.borrow_and_update().clone(), &mut warned);
        if members.is_empty() {
            continue;
        }
        let mut asks = JoinSet::new();
        for (name, url) in &members {
            let (name, url, client) = (name.clone(), url.clone(), client.clone());
            asks.spawn(async move {
                let answer = fetch(client, url).await;
                (name, answer, Instant::now())
            });
        }
        let mut answers = Vec::with_capacity(members.len());
        while let Some(joined) = asks.join_next().await {
            if let Ok(answer) = joined {
                answers.push(answer);
            }
        }
        let mut next: RestLag = out.borrow().as_ref().clone();
        next.retain(|name, _| members.contains_key(name));
        for (name, answer, at) in answers {
            let sample = answer.and_then(|body| {
                RestSample::from_patroni(&body, at)
                    .ok_or_else(|| "the answer has no `xlog` section".to_string())
            });
            match sample {
                Ok(mut sample) => {
                    if failing.remove(&name) {
                        tracing::info!(member = %name, "REST API answers again");
                    }
                    sample.previous_location = next.get(&name).and_then(|s| s.location);
                    next.insert(name, sample);
                }
                Err(e) => {
                    metrics.rest_errors.inc();
                    if failing.insert(name.clone()) {
                        tracing::info!(member = %name, error = %e, "no lag from the member's REST API; its DCS document is used once the last answer is stale");
                    }
                }
            }
        }
        out.send_replace(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbaton_dcs::MemberDoc;

    #[test]
    fn only_http_urls_are_polled_and_others_warned_once() {
        let doc = |url: &str| MemberDoc {
            api_url: url.into(),
            ..MemberDoc::default()
        };
        let state = ClusterState {
            members: [
                ("a", doc("http://127.0.0.1:8008/patroni")),
                ("b", doc("https://127.0.0.1:8009/patroni")),
                ("c", doc("")),
                ("d", doc("ftp://x")),
            ]
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
            ..ClusterState::default()
        };
        let mut warned = BTreeSet::new();
        let members = targets(&state, &mut warned);
        assert_eq!(members.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(warned.iter().collect::<Vec<_>>(), ["b", "d"]);
        targets(&state, &mut warned);
        assert_eq!(warned.len(), 2, "once per member");
    }
}
