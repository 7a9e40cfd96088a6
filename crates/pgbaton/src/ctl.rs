//! `pgbaton ctl`: the operator's CLI, with patronictl's verbs and output.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pgbaton_ctl::{ListOptions, OutputFormat};
use pgbaton_dcs::{load_cluster, ClusterPath, ClusterState};

#[derive(Args)]
pub struct CtlArgs {
    /// Read the DCS address, namespace and scope from an agent configuration file.
    #[arg(long, short = 'c', env = "PGBATON_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// etcd address(es), host:port[,host:port] (instead of --config).
    #[arg(long, global = true)]
    dcs: Option<String>,
    /// The cluster name (Patroni's scope).
    #[arg(long, global = true)]
    scope: Option<String>,
    #[arg(long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The member table (Member, Host, Role, State, TL, Lag in MB).
    List {
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
        /// Show optional columns (pending restart, tags) even when empty.
        #[arg(long, short = 'e')]
        extended: bool,
    },
    /// Members as a replication tree.
    Topology,
    /// The failover history (timeline switches).
    History {
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The dynamic configuration stored in the DCS.
    ShowConfig,
}

/// Where the cluster is: endpoints and path.
pub struct Target {
    pub endpoints: Vec<String>,
    pub path: ClusterPath,
}

fn target(args: &CtlArgs) -> anyhow::Result<Target> {
    let from_file = match &args.config {
        Some(path) => Some(pgbaton_config::load_file(path)?.value),
        None => None,
    };
    let endpoints: Vec<String> = match (&args.dcs, &from_file) {
        (Some(dcs), _) => dcs
            .split(',')
            .map(|s| s.trim().trim_start_matches("http://").to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(cfg)) => cfg.dcs.hosts.clone(),
        (None, None) => vec!["127.0.0.1:2379".to_string()],
    };
    let scope = match (&args.scope, &from_file) {
        (Some(s), _) => s.clone(),
        (None, Some(cfg)) => cfg.scope.clone(),
        (None, None) => {
            bail!("which cluster? give --scope NAME (and --dcs HOST:PORT) or --config FILE")
        }
    };
    let namespace = match (&args.namespace, &from_file) {
        (Some(n), _) => n.clone(),
        (None, Some(cfg)) => cfg.namespace.clone(),
        (None, None) => "/service/".to_string(),
    };
    Ok(Target {
        endpoints,
        path: ClusterPath::new(&namespace, &scope),
    })
}

pub async fn load(target: &Target) -> anyhow::Result<ClusterState> {
    let state = load_cluster(&target.endpoints, &target.path, Duration::from_secs(3)).await?;
    Ok(state)
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let target = target(&args)?;
    let state = load(&target).await?;
    let scope = target.path.scope.clone();
    if state.initialize.is_none() && state.members.is_empty() {
        bail!(
            "no cluster named {scope} under {} in etcd at {}; check --scope/--namespace",
            target.path.namespace,
            target.endpoints.join(",")
        );
    }
    let out = match args.command {
        CtlCommand::List { format, extended } => {
            pgbaton_ctl::render_list(&state, &scope, &ListOptions { format, extended })
        }
        CtlCommand::Topology => pgbaton_ctl::render_topology(&state, &scope),
        CtlCommand::History { format } => pgbaton_ctl::render_history(&state, format),
        CtlCommand::ShowConfig => pgbaton_ctl::render_config(&state),
    };
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// For `local up`: print the table of a cluster.
pub async fn list_table(endpoints: &[String], path: &ClusterPath) -> anyhow::Result<String> {
    let target = Target {
        endpoints: endpoints.to_vec(),
        path: path.clone(),
    };
    let state = load(&target).await.context("reading the cluster state")?;
    Ok(pgbaton_ctl::render_list(
        &state,
        &path.scope,
        &ListOptions {
            format: OutputFormat::Pretty,
            extended: false,
        },
    ))
}
