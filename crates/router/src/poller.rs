//! `lag_source: rest`: every `rest_poll_interval`, GET each member's `api_url` (from its
//! DCS document, e.g. `http://127.0.0.1:8008/patroni`) at once, with a short timeout, and
//! publish the answers (`lag::RestSample`) for the watcher to recompute the topology. `http`
//! URLs are polled, and `https` ones when `rest_cacert` names the CA to verify them with;
//! another one is skipped with a warning, once per member, and that member's lag comes from
//! the DCS. A member that does
//! not answer keeps its last sample, which ages out after three intervals (see `lag`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use pgbaton_dcs::ClusterState;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::lag::{RestLag, RestSample};
use crate::metrics::Metrics;

/// The timeout of one GET: the interval, kept between these.
const MIN_TIMEOUT: Duration = Duration::from_millis(200);
const MAX_TIMEOUT: Duration = Duration::from_secs(2);

/// The members to ask: name → URL, skipping (and warning once about) unusable URLs.
fn targets(
    state: &ClusterState,
    https: bool,
    warned: &mut BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, doc) in &state.members {
        let url = doc.api_url.trim();
        if url.starts_with("http://") || (https && url.starts_with("https://")) {
            out.insert(name.clone(), url.to_string());
            continue;
        }
        if url.is_empty() || !warned.insert(name.clone()) {
            continue;
        }
        if url.starts_with("https://") {
            tracing::warn!(member = %name, %url, "an https REST API is polled only with rest_cacert (the CA of the agents' certificates); this member's lag comes from the DCS");
        } else {
            tracing::warn!(member = %name, %url, "api_url is not an http URL; this member's lag comes from the DCS");
        }
    }
    out
}

/// The HTTP client of the poller: https verified against `roots` (none: no https URL is
/// asked). reqwest is built without a process-wide TLS provider: it gets one (ring).
fn client(
    timeout: Duration,
    roots: Option<rustls::RootCertStore>,
) -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots.unwrap_or_else(rustls::RootCertStore::empty))
    .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| e.to_string())
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
    mut state: watch::Receiver<Arc<crate::watcher::Followed>>,
    interval: Duration,
    roots: Option<rustls::RootCertStore>,
    out: watch::Sender<Arc<RestLag>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    let https = roots.is_some();
    let client = match client(timeout, roots) {
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
            _ = crate::stop::stopped(&mut stop) => return,
        }
        let followed = state.borrow_and_update().clone();
        let members = targets(&followed.state, https, &mut warned);
        if members.is_empty() {
            continue;
        }
        let mut asks = JoinSet::new();
        for (name, url) in &members {
            let (name, url, client) = (name.clone(), url.clone(), client.clone());
            asks.spawn(
                async move {
                    let answer = fetch(client, url).await;
                    (name, answer, Instant::now())
                }
                .in_current_span(),
            );
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
    fn http_urls_are_polled_https_ones_with_a_ca_and_others_warned_once() {
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
        let members = targets(&state, false, &mut warned);
        assert_eq!(members.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(warned.iter().collect::<Vec<_>>(), ["b", "d"]);
        targets(&state, false, &mut warned);
        assert_eq!(warned.len(), 2, "once per member");
        // With rest_cacert, https APIs are polled too.
        let mut warned = BTreeSet::new();
        let members = targets(&state, true, &mut warned);
        assert_eq!(members.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(warned.iter().collect::<Vec<_>>(), ["d"]);
    }

    /// An https server (certificate for 127.0.0.1 signed by ca.crt in `dir`) answering every
    /// request with a `/patroni` document.
    async fn https_stub(dir: &std::path::Path) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        pgbaton_testkit::test_ca(dir, "ca");
        pgbaton_testkit::signed_cert(dir, "ca", "api", "subjectAltName=IP:127.0.0.1");
        let certs = pgbaton_pem::certificates(&dir.join("api.crt")).expect("certificate");
        let key = pgbaton_pem::private_key(&dir.join("api.key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let body = r#"{"state":"running","role":"replica","xlog":{"received_location":100,"replayed_location":90,"paused":false}}"#;
                    let response = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_https_api_is_read_when_its_ca_is_given_and_refused_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = https_stub(dir.path()).await;
        let url = format!("https://{addr}/patroni");
        let mut cfg = crate::RouterConfig::new(vec!["127.0.0.1:2379".into()], "/service/", "x");
        cfg.rest_cacert = Some(dir.path().join("ca.crt"));
        let roots = crate::tls::rest_roots(&cfg).expect("the CA file");
        let verified = client(Duration::from_secs(5), roots).expect("client");
        let body = fetch(verified, url.clone()).await.expect("an https answer");
        assert_eq!(body["xlog"]["replayed_location"], 90);
        let unverified = client(Duration::from_secs(5), None).expect("client");
        let err = fetch(unverified, url).await.expect_err("no CA, no answer");
        eprintln!("without the CA: {err}");
        cfg.rest_cacert = Some(dir.path().join("missing.crt"));
        let e = crate::tls::rest_roots(&cfg)
            .expect_err("a missing CA file")
            .to_string();
        assert!(
            e.contains("rest_cacert") && e.contains("missing.crt"),
            "{e}"
        );
    }
}
