//! Log setup: plain lines on stderr, `RUST_LOG`-style filter from `PGBATON_LOG` (default info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(_scope: &str, _member: &str) {
    let filter = EnvFilter::try_from_env("PGBATON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
