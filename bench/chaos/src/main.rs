//! `chaos`: fault injection on a pgbaton cluster whose hosts are Linux network namespaces,
//! with a Jepsen-style checker. See bench/chaos/README.md. Runs as root; everything it creates
//! (namespaces, nftables tables inside them, processes, the run directory) is removed at the
//! end, on error and on Ctrl-C/SIGTERM, and leftovers of earlier runs are swept at start.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use pgbaton_chaos::cli::{Args, Settings};
use pgbaton_chaos::cluster::{self, Cluster, RUN_DIR_PARENT};
use pgbaton_chaos::error::ChaosError;
use pgbaton_chaos::{history, netns, report, runner, signals};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHAOS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,h2=warn,tower=warn,tonic=warn,hyper=warn,tokio_postgres=warn",
                )
            }),
        )
        .init();
    let settings = match Settings::try_from(Args::parse()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "chaos: must run as root: it creates network namespaces and nftables rules, and \
             runs PostgreSQL as the postgres user (try `sudo bench/chaos.sh ...`)"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = cluster::require_binaries() {
        return fail(&e);
    }
    if let Err(e) = signals::install() {
        eprintln!("chaos: installing the signal handler: {e}");
        return ExitCode::from(2);
    }
    netns::sweep_stale(Path::new(RUN_DIR_PARENT));
    let run = std::process::id();
    let mut cluster = match Cluster::create(&settings, run) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // The harness is the client host: every thread it starts from now on lives there.
    if let Err(e) = netns::enter(&cluster.topo.client().ns) {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let clock = history::Clock::start();
    let result = runtime.block_on(runner::run(&mut cluster, &settings, clock));
    drop(runtime);
    cluster.teardown();
    match result {
        Ok(r) => {
            for line in report::details(&r, &settings) {
                println!("{line}");
            }
            let unrecovered = r.convergence.unrecovered.len();
            println!(
                "{}",
                report::summary_line(r.faults, &r.verdict, unrecovered, r.liveness.leaderless_s())
            );
            let bad = report::failed(
                settings.mode,
                report::Counts {
                    lost: r.verdict.lost.len(),
                    dual_primary: r.verdict.dual_primary(),
                    unrecovered,
                    nonmonotonic: r.reads.nonmonotonic.len(),
                    leaderless_over_bound: r.liveness.violations().len(),
                    switchover_back: report::switchover_back(&r),
                    ryw_violations: r.ryw.as_ref().map_or(0, |v| v.violations.len()),
                },
            );
            if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &ChaosError) -> ExitCode {
    eprintln!("chaos: {e}");
    match e {
        ChaosError::Interrupted => ExitCode::from(130),
        _ => ExitCode::from(2),
    }
}
