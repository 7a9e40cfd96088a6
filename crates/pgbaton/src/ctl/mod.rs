//! `pgbaton ctl`: the operator's CLI, with patronictl's verbs and output. The views read the
//! DCS directly; the operations (switchover, failover, restart, reload, reinit, pause,
//! resume, edit-config) go through the members' REST APIs, which validate them and carry
//! them out, so the CLI and REST have the same semantics.

mod api;
mod args;
mod backup;
mod moving;
mod ops;
mod prompt;

use std::time::Duration;

use anyhow::{bail, Context};
use pgbaton_dcs::{load_cluster_with, ClusterPath, ClusterState};
use pgbaton_views::{ListOptions, OutputFormat};
use serde_json::Value;

use api::Api;
pub use args::CtlArgs;
use args::CtlCommand;
use ops::Ops;

/// Where the cluster is: endpoints and path.
pub struct Target {
    pub endpoints: Vec<String>,
    pub path: ClusterPath,
    /// TLS and credentials (from --config's etcd3 section).
    pub access: pgbaton_dcs::EtcdAccess,
}

/// The scope given by --scope or the configuration file, if any.
fn configured_scope(args: &CtlArgs, from_file: Option<&pgbaton_config::Config>) -> Option<String> {
    args.scope
        .clone()
        .or_else(|| from_file.map(|cfg| cfg.scope.clone()))
}

fn target_from(
    args: &CtlArgs,
    from_file: Option<&pgbaton_config::Config>,
    named: Option<String>,
) -> anyhow::Result<Target> {
    let endpoints: Vec<String> = match (&args.dcs, from_file) {
        (Some(dcs), _) => dcs
            .split(',')
            .map(|s| s.trim().trim_start_matches("http://").to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(cfg)) => cfg.dcs.hosts.clone(),
        (None, None) => vec!["127.0.0.1:2379".to_string()],
    };
    let scope = match (configured_scope(args, from_file), named) {
        (Some(scope), Some(named)) if scope != named => bail!(
            "the command names cluster {named}, but the scope is {scope} (from {}): name the same cluster, or leave the name out",
            if args.scope.is_some() { "--scope" } else { "--config" }
        ),
        (Some(scope), _) => scope,
        (None, Some(named)) => named,
        (None, None) => bail!(
            "which cluster? give its name (`ctl list NAME`), --scope NAME (and --dcs HOST:PORT) or --config FILE"
        ),
    };
    let namespace = match (&args.namespace, from_file) {
        (Some(n), _) => n.clone(),
        (None, Some(cfg)) => cfg.namespace.clone(),
        (None, None) => "/service/".to_string(),
    };
    Ok(Target {
        endpoints,
        path: ClusterPath::new(&namespace, &scope),
        access: from_file
            .map(|cfg| crate::etcd_access::from_config(&cfg.dcs))
            .unwrap_or_default(),
    })
}

pub async fn load(target: &Target) -> anyhow::Result<ClusterState> {
    let state = load_cluster_with(
        &target.endpoints,
        &target.access,
        &target.path,
        Duration::from_secs(3),
    )
    .await?;
    Ok(state)
}

pub async fn run(mut args: CtlArgs) -> anyhow::Result<()> {
    let from_file = match &args.config {
        Some(path) => Some(pgbaton_config::load_file(path)?.value),
        None => None,
    };
    let mut trust = from_file
        .as_ref()
        .map(crate::http::Trust::from_config)
        .unwrap_or_default();
    if args.cacert.is_some() {
        trust.cafile = args.cacert.clone();
    }
    trust.insecure |= args.insecure;
    if let CtlCommand::RouterStatus { router, format } = &args.command {
        return router_status(router, *format, &trust).await;
    }
    let configured = configured_scope(&args, from_file.as_ref());
    let named = args.command.take_cluster_name(configured.as_deref());
    let target = target_from(&args, from_file.as_ref(), named)?;
    let auth = match (&args.username, from_file.as_ref()) {
        (Some(user), _) => Some((user.clone(), args.password.clone().unwrap_or_default())),
        (None, Some(cfg)) => cfg.restapi.authentication.as_ref().map(|c| {
            (
                c.username.clone(),
                args.password
                    .clone()
                    .or_else(|| c.password.clone())
                    .unwrap_or_default(),
            )
        }),
        (None, None) => None,
    };
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
        CtlCommand::List {
            format,
            extended,
            positions,
            ..
        } => {
            let positions_at = positions.then(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            });
            let options = ListOptions {
                format,
                extended,
                positions_at,
            };
            pgbaton_views::render_list(&state, &scope, &options)
        }
        CtlCommand::Topology { .. } => pgbaton_views::render_topology(&state, &scope),
        CtlCommand::History { format, .. } => pgbaton_views::render_history(&state, format),
        CtlCommand::ShowConfig { .. } => pgbaton_views::render_config(&state),
        CtlCommand::HaproxyConfig {
            bind,
            write_port,
            read_port,
            stats_port,
        } => {
            let ports = pgbaton_views::HaproxyPorts {
                bind,
                write: write_port,
                read: read_port,
                stats: stats_port,
            };
            pgbaton_views::render_haproxy(&state, &scope, &ports)
        }
        command => {
            let ops = Ops {
                target,
                state,
                api: Api::new(auth, &trust)?,
            };
            return ops.run(command).await;
        }
    };
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// `ctl router-status`: GET the router's `/status` and print it as a table (or the JSON).
async fn router_status(
    router: &str,
    format: OutputFormat,
    trust: &crate::http::Trust,
) -> anyhow::Result<()> {
    let base = if router.contains("://") {
        router.trim_end_matches('/').to_string()
    } else {
        format!("http://{router}")
    };
    let url = format!("{base}/status");
    let http = crate::http::client(trust, Duration::from_secs(5))?;
    let response = http.get(&url).send().await.with_context(|| {
        format!("GET {url} failed: is the router running with api.listen {router}?")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("GET {url} did not answer JSON"))?;
    if !status.is_success() {
        bail!("GET {url} answered {status}: {body}");
    }
    match format {
        OutputFormat::Pretty => print!("{}", pgbaton_router::render_status_table(&body)),
        _ => println!("{}", serde_json::to_string_pretty(&body)?),
    }
    Ok(())
}

/// For `local up`: print the table of a cluster.
pub async fn list_table(endpoints: &[String], path: &ClusterPath) -> anyhow::Result<String> {
    let target = Target {
        endpoints: endpoints.to_vec(),
        path: path.clone(),
        access: Default::default(),
    };
    table_of(&target).await
}

/// The member table of the cluster `target` names.
pub async fn table_of(target: &Target) -> anyhow::Result<String> {
    let state = load(target).await.context("reading the cluster state")?;
    Ok(pgbaton_views::render_list(
        &state,
        &target.path.scope,
        &ListOptions {
            format: OutputFormat::Pretty,
            extended: false,
            positions_at: None,
        },
    ))
}
