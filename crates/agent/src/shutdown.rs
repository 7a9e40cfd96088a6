//! How a pgbaton process is asked to stop: SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C). One
//! future for the agent, the router and the local cluster of the main binary.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves when SIGTERM or SIGINT arrives (logged), with the signal's name. When the
/// handlers cannot be installed (no signal support), it never resolves and says so once.
pub async fn signalled() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!(
            "cannot install the SIGTERM/SIGINT handlers: stop this process with SIGKILL"
        );
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received: stopping");
    name
}
