//! The background task that watches the cluster prefix in etcd and bumps a
//! `tokio::sync::watch` channel on every change, reconnecting with backoff when the stream
//! ends or fails. Each (re)established watch also bumps the channel, because events may have
//! been missed while it was down: subscribers simply reload.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use etcd_client::WatchOptions;
use tokio::sync::{oneshot, watch};

use super::conn::Target;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Start the watch task; it stops when `stop` is dropped or fired.
pub(crate) fn spawn(
    target: Target,
    prefix: String,
    events: Arc<watch::Sender<u64>>,
    stop: oneshot::Receiver<()>,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            "subscribe() called outside a tokio runtime: DCS changes will not be notified"
        );
        return;
    };
    handle.spawn(run(target, prefix, events, stop).in_current_span());
}

async fn run(
    target: Target,
    prefix: String,
    events: Arc<watch::Sender<u64>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            result = watch_once(&target, &prefix, &events, &mut backoff) => {
                if let Err(message) = result {
                    tracing::warn!(endpoints = %target.endpoints_text(), %message, "etcd watch lost; retrying in {backoff:?}");
                    target.rotate();
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Watch until the stream fails; Err says why.
async fn watch_once(
    target: &Target,
    prefix: &str,
    events: &watch::Sender<u64>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let mut client = target.connect(false).await.map_err(|e| e.to_string())?;
    let options = WatchOptions::new().with_prefix();
    let mut stream =
        match tokio::time::timeout(target.request_timeout, client.watch(prefix, Some(options)))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", target.request_timeout)),
        };
    loop {
        let response = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the watch stream ended".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let revision = response.header().map_or(0, |h| h.revision()).max(0) as u64;
        if response.created() {
            tracing::debug!(%prefix, revision, "etcd watch established");
            *backoff = MIN_BACKOFF;
            events.send_replace(revision);
        }
        if !response.events().is_empty() {
            events.send_replace(revision);
        }
        if response.canceled() {
            return Err(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            ));
        }
    }
}
