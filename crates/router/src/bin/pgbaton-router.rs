//! A standalone router process: `pgbaton-router --config FILE`. Used by the router
//! benchmark; `pgbaton router --config FILE` runs the same library inside the main binary.
//! Stops on SIGINT or SIGTERM; reads FILE again on SIGHUP (pooling keys apply at once).

use std::process::ExitCode;

use pgbaton_router::{Router, RouterConfig};
use tokio::signal::unix::{signal, SignalKind};

fn usage() -> ExitCode {
    eprintln!("usage: pgbaton-router --config FILE");
    ExitCode::from(2)
}

/// Worker threads: `PGBATON_ROUTER_THREADS` (0 or unset = one per core; 1 = a single-threaded
/// runtime, which avoids cross-thread wake-ups when the router shares a small machine).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::env::var("PGBATON_ROUTER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> ExitCode {
    match runtime() {
        Ok(rt) => rt.block_on(router_main()),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn router_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => path.clone(),
        _ => return usage(),
    };
    let cfg = match RouterConfig::from_yaml_file(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install a SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let router = match Router::bind(cfg).await {
        Ok(router) => router.reload_on_sighup(&path),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match router.serve(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
