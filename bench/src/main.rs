//! `pgbaton-bench`: measures how long a client cannot write after the leader crashes (the
//! whole node, or the postmaster alone) or hands over in a planned switchover, how much
//! memory the agent keeps resident, what synchronous replication costs, and the same
//! scenarios on Patroni + HAProxy side by side. See bench/README.md.

mod catchup;
mod cluster;
mod compare;
mod compare_report;
mod crash;
mod gap;
mod handover;
mod members;
mod memory;
mod patroni;
mod patroni_config;
#[cfg(test)]
mod patroni_test;
#[cfg(test)]
mod pg_test;
mod profile;
mod report;
mod ryw;
mod scenario;
mod stats;
mod succession;
mod sync_overhead;
mod target;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::crash::Crash;
use crate::profile::Profile;
use crate::report::Report;

#[derive(Parser)]
#[command(
    name = "pgbaton-bench",
    about = "Failover windows and agent memory of pgbaton"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Clone, PartialEq)]
enum Command {
    /// Everything: memory, node crashes and postmaster crashes, for every profile.
    All,
    /// Node crashes only (agent and PostgreSQL SIGKILLed together).
    Failover,
    /// Postmaster crashes only (the agent restarts it in place).
    Postmaster,
    /// Agent memory only.
    Memory,
    /// Planned switchovers (`pgbaton ctl switchover`), candidates taking turns.
    Switchover,
    /// pgbench against the leader with `--synchronous off`, then `on`.
    SyncOverhead {
        /// pgbench runs per mode.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Several clients through each stack's write address during switchovers and node
    /// losses: pgbaton's router (session, transaction pooling), Patroni + HAProxy, and
    /// Patroni + HAProxy + PgBouncer (transaction mode): failed operations and pauses.
    Handover {
        /// Which stacks, in this order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "pgbaton-transaction,pgbaton-session,patroni,patroni-pgbouncer"
        )]
        stacks: Vec<handover::Stack>,
        /// Planned switchovers (no candidate named) per stack.
        #[arg(long, default_value_t = 10)]
        switchovers: usize,
        /// Node losses (agent and PostgreSQL SIGKILLed) per stack, after the switchovers.
        #[arg(long, default_value_t = 5)]
        node_losses: usize,
        /// Clients that keep their connection.
        #[arg(long, default_value_t = 8)]
        persistent: usize,
        /// Clients that connect for each operation.
        #[arg(long, default_value_t = 8)]
        per_op: usize,
        /// Seconds a lost node stays down.
        #[arg(long, default_value_t = 60.0)]
        down_for: f64,
        /// Ports of the Patroni clusters (40 per stack).
        #[arg(long, default_value_t = 18000)]
        patroni_base_port: u16,
    },
    /// How long a replica far behind takes to stream again: through its kept slot, from
    /// the WAL archive (pgBackRest), or re-cloned (two-member clusters, methods interleaved).
    Catchup {
        /// Which ways back, in this order.
        #[arg(long, value_delimiter = ',', default_value = "slot,archive,reclone")]
        methods: Vec<catchup::Method>,
        /// WAL the leader writes while the replica is away, in MB.
        #[arg(long, default_value_t = 1000)]
        behind_mb: u64,
        /// Seconds a replica may take before the run counts as not caught up.
        #[arg(long, default_value_t = 600)]
        limit: u64,
    },
    /// Write-then-read pairs through the router's auto listener (read-your-writes): stale
    /// reads, share served by replicas, added latency; then with one replica delayed.
    ReadYourWrites {
        /// Pairs with the replicas replaying as usual.
        #[arg(long, default_value_t = 10_000)]
        pairs: usize,
        /// Pairs with one replica's replay delayed.
        #[arg(long, default_value_t = 1_000)]
        delayed_pairs: usize,
        /// The delayed replica's recovery_min_apply_delay, in ms.
        #[arg(long, default_value_t = 1_000)]
        delay_ms: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
    /// Node crash, postmaster crash and switchover on pgbaton and on Patroni + HAProxy.
    Compare {
        /// pgbaton timing profiles.
        #[arg(long, value_delimiter = ',', default_value = "default,fast")]
        pgbaton_profiles: Vec<Profile>,
        /// Patroni timing profiles (seed = Patroni's defaults with the seed's HAProxy
        /// checks; any other with the tuned checks inter 1s fall 2 rise 1).
        #[arg(long, value_delimiter = ',', default_value = "seed,ttl5")]
        patroni_profiles: Vec<Profile>,
        /// Runs per scenario for profiles with ttl >= 30 (each node crash costs ~1 min).
        #[arg(long, default_value_t = 3)]
        slow_runs: usize,
        /// Ports of the Patroni clusters (40 per profile).
        #[arg(long, default_value_t = 18000)]
        patroni_base_port: u16,
        /// Which tools to measure (pgbaton-router: pgbaton with the client writing through
        /// the router `local up` runs, instead of to the members).
        #[arg(long, value_delimiter = ',', default_value = "pgbaton,patroni")]
        systems: Vec<target::System>,
        /// Which scenarios (run in the order switchover, switchover-nocandidate, postmaster,
        /// node, switchover-then-node, node-twice). switchover-then-node: a switchover to a
        /// named candidate, then a node crash of the new leader 3 s after its first write;
        /// node-twice: a node crash, then one of the new leader 10 s after its first write.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "switchover,postmaster,node"
        )]
        scenarios: Vec<Crash>,
        /// Seconds a run waits for the first write after the event before recording "no
        /// write" (default 3 × ttl + 60). The run then waits up to 600 s more for a
        /// leader, for the next run, and records when the member table showed one.
        #[arg(long)]
        window_limit: Option<f64>,
    },
}

#[derive(clap::Args)]
struct Opts {
    /// The pgbaton binary (build it with `cargo build --release -p pgbaton`).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/pgbaton"))]
    pgbaton: PathBuf,
    /// Where the clusters live (one subdirectory per profile; wiped at start).
    #[arg(long, global = true, default_value = "/tmp/pgbaton-bench")]
    dir: PathBuf,
    /// Ports: the seed cluster uses BASE.., default BASE+40.., fast BASE+80.., ttl10
    /// BASE+120.., ttl5 BASE+160.. (30 ports each).
    #[arg(long, global = true, default_value_t = 17000)]
    base_port: u16,
    /// Crashes per profile and kind (the median needs at least 5).
    #[arg(long, global = true, default_value_t = 5)]
    runs: usize,
    /// Profiles to measure, in this order (ttl10 = 10/2/3 and ttl5 = 5/1/2 match the
    /// tuned Patroni settings the issue compares with).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "default,fast,seed"
    )]
    profile: Vec<Profile>,
    /// Seconds the cluster runs before the agents' memory is read.
    #[arg(long, global = true, default_value_t = 30)]
    settle: u64,
    /// Members per cluster.
    #[arg(long, global = true, default_value_t = 3)]
    members: u8,
    /// Seconds a crashed node stays down (default: 2 × ttl + 10 per profile).
    #[arg(long, global = true)]
    restart_delay: Option<f64>,
    /// Also write every raw figure to this JSON file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = bench(cli) => r,
            signal = interrupted() => Err(anyhow::anyhow!("{signal}: the clusters were stopped")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "interrupted (SIGINT)",
    }
}

async fn bench(cli: Cli) -> anyhow::Result<()> {
    let opts = &cli.opts;
    let pgbaton = std::path::absolute(&opts.pgbaton)
        .with_context(|| format!("resolving {}", opts.pgbaton.display()))?;
    let binary_size = std::fs::metadata(&pgbaton)
        .with_context(|| {
            format!(
                "{}: build it with `cargo build --release -p pgbaton` or pass --pgbaton",
                pgbaton.display()
            )
        })?
        .len();
    let dir = std::path::absolute(&opts.dir).context("resolving --dir")?;
    let mut report = Report {
        environment: environment(&pgbaton, binary_size),
        ..Report::default()
    };
    for (k, v) in &report.environment {
        println!("{k}: {v}");
    }
    let (memory, node, postmaster, switchover) = match cli.command.clone() {
        Command::All => (true, true, true, false),
        Command::Failover => (false, true, false, false),
        Command::Postmaster => (false, false, true, false),
        Command::Memory => (true, false, false, false),
        Command::Switchover => (false, false, false, true),
        Command::SyncOverhead { repeats } => {
            let sync =
                sync_overhead::run(&pgbaton, &dir, opts.base_port, opts.members, repeats).await?;
            println!("\n{}", sync.markdown());
            println!("load average at the end: {}", load_average());
            if let Some(path) = &opts.json {
                sync_overhead::save(&sync, path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            return Ok(());
        }
        Command::Catchup {
            methods,
            behind_mb,
            limit,
        } => {
            let plan = catchup::CatchupPlan {
                pgbaton: pgbaton.clone(),
                dir: dir.clone(),
                base_port: opts.base_port,
                methods,
                runs: opts.runs,
                behind_mb,
                limit: Duration::from_secs(limit),
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let out = catchup::run(&plan).await;
            println!("\nload average at the end: {}", load_average());
            println!("\n{}", catchup::report(&out, &plan));
            if let Some(path) = &opts.json {
                let json = serde_json::to_string_pretty(&out).context("encoding the results")?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            return Ok(());
        }
        Command::ReadYourWrites {
            pairs,
            delayed_pairs,
            delay_ms,
            clients,
        } => {
            let plan = ryw::RywPlan {
                pgbaton: pgbaton.clone(),
                dir: dir.clone(),
                base_port: opts.base_port,
                pairs,
                delayed_pairs,
                delay_ms,
                clients: clients.max(1),
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let out = ryw::run(&plan).await;
            println!("\nload average at the end: {}", load_average());
            println!("\n{}", ryw::report(&out, &plan));
            if let Some(path) = &opts.json {
                let json = serde_json::to_string_pretty(&out).context("encoding the results")?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            return Ok(());
        }
        Command::Handover {
            stacks,
            switchovers,
            node_losses,
            persistent,
            per_op,
            down_for,
            patroni_base_port,
        } => {
            let plan = handover::HandoverPlan {
                pgbaton: pgbaton.clone(),
                dir: dir.clone(),
                base_port: opts.base_port,
                patroni_base_port,
                stacks,
                switchovers,
                node_losses,
                persistent,
                per_op,
                down_for,
                profile: opts
                    .profile
                    .first()
                    .copied()
                    .unwrap_or(profile::Profile::Default),
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let out = handover::run(&plan).await;
            println!("\nload average at the end: {}", load_average());
            println!("\n{}", handover::report(&out, &plan));
            if let Some(path) = &opts.json {
                let json = serde_json::to_string_pretty(&out).context("encoding the results")?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !out.problems.is_empty() {
                anyhow::bail!(
                    "{} stack(s) cut short; see the problems above",
                    out.problems.len()
                );
            }
            return Ok(());
        }
        Command::Compare {
            pgbaton_profiles,
            patroni_profiles,
            slow_runs,
            patroni_base_port,
            systems,
            scenarios,
            window_limit,
        } => {
            let plan = compare::ComparePlan {
                pgbaton: pgbaton.clone(),
                dir: dir.clone(),
                base_port: opts.base_port,
                patroni_base_port,
                pgbaton_profiles,
                patroni_profiles,
                runs: opts.runs,
                systems,
                scenarios,
                slow_runs,
                members: opts.members,
                restart_delay: opts.restart_delay,
                window_limit: window_limit.map(Duration::from_secs_f64),
            };
            patroni::check_binaries()?;
            let mut out = compare::Comparison::default();
            compare::run(&plan, &mut out).await;
            println!("\nload average at the end: {}", load_average());
            println!("\n{}", compare_report::markdown(&out.runs, &out.memory));
            for e in &out.errors {
                println!("error: {e}");
            }
            if let Some(path) = &opts.json {
                let json = serde_json::to_string_pretty(&out).context("encoding the results")?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{}", compare_report::summary_line(&out.runs));
            if !out.errors.is_empty() {
                anyhow::bail!(
                    "{} cluster(s) cut short; see the errors above",
                    out.errors.len()
                );
            }
            return Ok(());
        }
    };
    let mut next_run = 0;
    for &profile in &opts.profile {
        let spec = ClusterSpec {
            pgbaton: pgbaton.clone(),
            dir: dir.join(profile.name()),
            base_port: opts.base_port + profile.port_offset(),
            members: opts.members,
            profile,
            restart_delay: opts.restart_delay.unwrap_or(profile.restart_delay()),
            synchronous: "off",
            via_router: false,
            pool_mode: None,
            archive: false,
        };
        let outcome = async {
            let cluster = LocalCluster::start(spec).await?;
            let leader = cluster.wait_whole(Duration::from_secs(120)).await?;
            writer::create_table(&cluster.endpoints_from(&leader)).await?;
            if memory {
                let snapshot =
                    scenario::memory_snapshot(&cluster, Duration::from_secs(opts.settle)).await?;
                report.memory.extend(snapshot);
            }
            if node {
                scenario::crash_runs(
                    &cluster,
                    Crash::Node,
                    opts.runs,
                    None,
                    &mut next_run,
                    &mut report.runs,
                )
                .await?;
            }
            if postmaster {
                scenario::crash_runs(
                    &cluster,
                    Crash::Postmaster,
                    opts.runs,
                    None,
                    &mut next_run,
                    &mut report.runs,
                )
                .await?;
            }
            if switchover {
                scenario::crash_runs(
                    &cluster,
                    Crash::Switchover,
                    opts.runs,
                    None,
                    &mut next_run,
                    &mut report.runs,
                )
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = outcome {
            let message = format!("profile {}: {e:#}", profile.name());
            eprintln!("error: {message}");
            report.errors.push(message);
        }
    }
    report
        .environment
        .push(("load average at the end".into(), load_average()));
    println!("\n{}", report.markdown());
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} profile(s) cut short; see the errors above",
            report.errors.len()
        )
    }
}

fn environment(pgbaton: &std::path::Path, binary_size: u64) -> Vec<(String, String)> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    vec![
        ("date".into(), chrono::Local::now().to_rfc3339()),
        (
            "command".into(),
            std::env::args().collect::<Vec<_>>().join(" "),
        ),
        (
            "machine".into(),
            format!(
                "{} CPUs ({cpu}), Debian {}, Linux {}",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                read("/etc/debian_version"),
                read("/proc/sys/kernel/osrelease")
            ),
        ),
        (
            "pgbaton binary".into(),
            format!(
                "{} ({:.1} MiB, {binary_size} bytes)",
                pgbaton.display(),
                binary_size as f64 / 1048576.0
            ),
        ),
        ("load average at the start".into(), load_average()),
    ]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
