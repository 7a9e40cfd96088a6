//! The router's stop: one `watch` channel every task holds a receiver of, set to `true`
//! once when the router shuts down.

use tokio::sync::watch;

/// Resolves once the router stops (or its stop sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
