//! `pgbaton`: high availability for PostgreSQL in one binary.
//!
//! `pgbaton agent --config FILE` runs the per-node agent, `pgbaton ctl ...` is the
//! operator's CLI (patronictl's verbs), `pgbaton local up` runs a whole cluster on loopback.

mod agent;
mod ctl;
mod etcd_access;
mod http;
mod local;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use tracing::Instrument;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgbaton",
    version,
    about = "High availability for PostgreSQL: agent, router and CLI in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent that manages this member's PostgreSQL (Patroni-style YAML config).
    Agent {
        /// The configuration file (patroni.yml format).
        #[arg(long, short = 'c', env = "PGBATON_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and print the settings in force, without starting anything.
    CheckConfig {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Run the router: a write address that follows the leader, a read address over replicas.
    #[command(args_conflicts_with_subcommands = true)]
    Router {
        /// The router configuration (YAML: write.listen, read.listen, etcd3.hosts, scope, ...).
        /// SIGHUP reads it again.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Worker threads. 1 (the default) measured fastest on a 2-core machine shared with
        /// PostgreSQL (bench/router); 0 is one per core.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[command(subcommand)]
        command: Option<RouterCommand>,
    },
    /// Inspect and operate a cluster (patronictl's verbs).
    Ctl(ctl::CtlArgs),
    /// A local cluster on loopback: its own etcd and N agents.
    Local {
        #[command(subcommand)]
        command: local::LocalCommand,
    },
    /// The agent's out-of-process lease watchdog (started by the agent itself).
    #[command(hide = true)]
    LeaseGuard {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        agent_pid: u32,
    },
}

#[derive(Subcommand)]
enum RouterCommand {
    /// Print a router.yml equivalent to a PgBouncer configuration (warnings on stderr and as
    /// comments: what has no equivalent or changes meaning).
    ImportPgbouncer {
        /// pgbouncer.ini
        ini: PathBuf,
        /// userlist.txt (replaces the ini's auth_file)
        userlist: Option<PathBuf>,
        /// The cluster's scope (Patroni's `scope`).
        #[arg(long, default_value = "pg-cluster")]
        scope: String,
        /// The cluster's namespace.
        #[arg(long, default_value = "/service/")]
        namespace: String,
        /// etcd endpoints, host:port, repeated or comma-separated.
        #[arg(long = "etcd", value_delimiter = ',', default_value = "127.0.0.1:2379")]
        etcd: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Ctl(_)) {
        quiet_on_closed_stdout();
    }
    // The watchdog is a plain loop: no runtime (it must stay small).
    if let Command::LeaseGuard { file, agent_pid } = &cli.command {
        pgbaton_agent::fence::run(file, *agent_pid);
        return ExitCode::SUCCESS;
    }
    // The router forwards bytes with one task per connection: a single thread measured
    // faster than two on a 2-core machine shared with PostgreSQL (bench/router).
    let builder = match cli.command {
        Command::Router {
            config: Some(_),
            threads: 1,
            ..
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Router {
            config: Some(_),
            threads: 0,
            ..
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        Command::Router {
            config: Some(_),
            threads,
            ..
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match builder {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent { config } => run_agent(config).await,
            Command::CheckConfig { config } => check_config(config),
            Command::Router {
                config: Some(config),
                command: None,
                ..
            } => run_router(config).await,
            Command::Router {
                command: Some(command),
                ..
            } => router_command(command),
            Command::Router { .. } => Err(anyhow::anyhow!(
                "pgbaton router needs --config FILE (or a subcommand: import-pgbouncer)"
            )),
            Command::Ctl(args) => ctl::run(args).await,
            Command::Local { command } => local::run(command).await,
            Command::LeaseGuard { .. } => Ok(()), // handled before the runtime starts
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

/// A command-line tool whose reader went away (`ctl list | head -1`) ends quietly, as
/// command-line tools do, instead of panicking on "failed printing to stdout: Broken pipe":
/// SIGPIPE back to its default action. Only for `ctl`: the agent and the router must survive
/// a peer that hangs up (their sockets write with MSG_NOSIGNAL anyway).
fn quiet_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SigDfl installs no handler of ours; nothing else changes SIGPIPE.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("warning: could not restore SIGPIPE: {e}");
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<pgbaton_config::Config> {
    let loaded = pgbaton_config::load_file(path)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {}: {warning}", path.display());
    }
    Ok(loaded.value)
}

async fn run_agent(path: PathBuf) -> anyhow::Result<()> {
    let cfg = load_config(&path)?;
    logging::init(&cfg.scope, &cfg.name);
    let span = tracing::info_span!("agent", scope = %cfg.scope, member = %cfg.name);
    async move {
        tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "pgbaton agent starting");
        agent::run(cfg).await
    }
    .instrument(span)
    .await
}

async fn run_router(path: PathBuf) -> anyhow::Result<()> {
    let cfg = pgbaton_router::RouterConfig::from_yaml_file(&path)?;
    logging::init(&cfg.scope, "router");
    let span = tracing::info_span!("router", scope = %cfg.scope);
    async move {
        tracing::info!(config = %path.display(), write = %cfg.write_listen, read = %cfg.read_listen, "pgbaton router starting");
        // SIGHUP reads router.yml again (auth: and pool: apply without dropping clients).
        let router = pgbaton_router::Router::bind(cfg)
            .await?
            .reload_on_sighup(&path);
        // systemd (Type=notify): ready once the listeners are bound.
        let mut systemd = pgbaton_agent::sd_notify::Notifier::from_env();
        let status = format!(
            "routing: write {} read {}",
            router.write_addr(),
            router.read_addr()
        );
        // The heartbeat shares the router's one thread: it stops if the router's loop does.
        let watchdog = tokio::spawn(
            async move {
                loop {
                    systemd.cycle(true, &status);
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
            .in_current_span(),
        );
        let result = router
            .serve(async {
                pgbaton_agent::shutdown::signalled().await;
            })
            .await;
        watchdog.abort();
        result?;
        Ok(())
    }
    .instrument(span)
    .await
}

fn router_command(command: RouterCommand) -> anyhow::Result<()> {
    match command {
        RouterCommand::ImportPgbouncer {
            ini,
            userlist,
            scope,
            namespace,
            etcd,
        } => {
            let text = std::fs::read_to_string(&ini)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ini.display()))?;
            let imported = pgbaton_router::import::import_pgbouncer(
                &text,
                userlist.as_deref(),
                pgbaton_router::import::ClusterAt {
                    scope: &scope,
                    namespace: &namespace,
                    etcd_hosts: etcd,
                },
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", ini.display()))?;
            for warning in &imported.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", imported.to_yaml());
            Ok(())
        }
    }
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let cfg = load_config(&path)?;
    let dynamic = &cfg.bootstrap.dcs;
    let ha = pgbaton_agent::settings::ha_config(&cfg, dynamic);
    println!("{}: valid", path.display());
    println!(
        "scope {} member {} (namespace {})",
        cfg.scope, cfg.name, cfg.namespace
    );
    println!(
        "ttl {} ms, loop_wait {} ms, retry_timeout {} ms, maximum_lag_on_failover {} bytes",
        ha.ttl_ms, ha.loop_wait_ms, ha.retry_timeout_ms, ha.maximum_lag_on_failover
    );
    println!(
        "etcd {} over {}{}",
        cfg.dcs.hosts.join(","),
        if cfg.dcs.https { "https" } else { "http" },
        match &cfg.dcs.username {
            Some(user) => format!(", as user {user}"),
            None => String::new(),
        }
    );
    println!("data_dir {}", cfg.postgresql.data_dir.display());
    Ok(())
}
