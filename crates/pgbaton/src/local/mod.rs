//! `pgbaton local up`: a whole cluster on loopback, for trying pgbaton and for tests.
//!
//! It starts its own etcd and N agents (each managing `DIR/<member>/data`), supervises the
//! agents like systemd would (an agent that exits is restarted after a second), prints the
//! member table once the cluster is up, and on Ctrl-C or SIGTERM stops everything it
//! started. It also runs the router (`DIR/router.yml`: write and read addresses). Every port
//! derives from `--base-port` (see [`Ports`]), so two local clusters can run side by side.

mod archive;
mod ports;
mod supervise;
mod template;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::Instrument;

use anyhow::{bail, Context};
use clap::Subcommand;
use pgbaton_dcs::{load_cluster, ClusterPath, EtcdProcess};

pub use ports::Ports;

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Start etcd and N agents on loopback, print the member table, run until Ctrl-C.
    Up(UpArgs),
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Number of members (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub members: u8,
    /// Where data directories, configs, logs and pid files go (default /tmp/pgbaton-local-<base-port>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Every port derives from this one: etcd N and N+1, member k PostgreSQL N+10+k, REST API N+20+k.
    #[arg(long, default_value_t = 15400)]
    pub base_port: u16,
    /// The cluster name (scope).
    #[arg(long, default_value = "local")]
    pub scope: String,
    /// Leader lease in seconds (default: pgbaton's default, 4).
    #[arg(long)]
    pub ttl: Option<f64>,
    #[arg(long)]
    pub loop_wait: Option<f64>,
    #[arg(long)]
    pub retry_timeout: Option<f64>,
    /// Synchronous replication: off, on (FIRST n) or quorum (ANY n).
    #[arg(long, default_value = "off", value_parser = ["off", "on", "quorum"])]
    pub synchronous: String,
    /// With --synchronous: never acknowledge a commit without a synchronous standby.
    #[arg(long)]
    pub strict: bool,
    /// Seconds before an agent that exited is started again (systemd's RestartSec).
    #[arg(long, default_value_t = 1.0)]
    pub restart_delay: f64,
    /// Make the router a connection pooler in this mode (session or transaction): it checks
    /// passwords itself (SCRAM, users from DIR/userlist.txt) and shares server connections,
    /// 20 per database and user. Without it the router passes authentication through.
    #[arg(long, value_parser = ["session", "transaction"])]
    pub pool_mode: Option<String>,
    /// Archive WAL into a pgBackRest repository in DIR/pgbackrest (stanza: the scope):
    /// replicas are restored from the newest backup, missing WAL comes from the archive,
    /// `pgbaton ctl backup` takes backups from a standby. Needs the pgbackrest package.
    #[arg(long)]
    pub archive: bool,
    /// Make this cluster a standby cluster of the primary at HOST:PORT (for example another
    /// local cluster's router write port, which always points at its leader): its leader
    /// replicates that primary, its other members cascade from it. Remove `standby_cluster`
    /// with `pgbaton ctl edit-config` to promote it.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub standby_of: Option<(String, u16)>,
    /// Seconds to wait for the cluster to come up before giving up.
    #[arg(long, default_value_t = 180)]
    pub wait: u64,
}

/// `HOST:PORT` of `--standby-of`.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| {
        format!("expected HOST:PORT (for example 127.0.0.1:15402), got \"{text}\"")
    })?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("\"{port}\" is not a port (1 to 65535)"))?;
    if host.is_empty() {
        return Err(format!("no host in \"{text}\": expected HOST:PORT"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    match command {
        LocalCommand::Up(args) => up(args).await,
    }
}

const ETCD: &str = "/usr/bin/etcd";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn check_prerequisites() -> anyhow::Result<()> {
    if !Path::new(ETCD).exists() {
        bail!("{ETCD} not found: install it with `apt-get install -y etcd-server`");
    }
    if !Path::new(PG_BIN).join("postgres").exists() {
        bail!("{PG_BIN}/postgres not found: install it with `apt-get install -y postgresql-15`");
    }
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    crate::logging::init(&args.scope, "local");
    check_prerequisites()?;
    if !(1..=9).contains(&args.members) {
        bail!("--members {}: choose 1 to 9", args.members);
    }
    let ports = Ports::new(args.base_port)?;
    ports.check_free(args.members)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/pgbaton-local-{}", args.base_port)));
    prepare_dir(&dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let names: Vec<String> = (1..=args.members).map(|k| format!("node{k}")).collect();
    let archive = if args.archive {
        Some(archive::prepare(&dir, &args.scope, &names, &ports)?)
    } else {
        None
    };
    for (k, name) in names.iter().enumerate() {
        let member_dir = dir.join(name);
        std::fs::create_dir_all(&member_dir)
            .with_context(|| format!("creating {}", member_dir.display()))?;
        let yaml =
            template::member_config(&args, &dir, name, k as u16 + 1, &ports, archive.clone());
        let path = member_dir.join("pgbaton.yml");
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    }

    let mut etcd = EtcdProcess::start(
        &dir.join("etcd"),
        "etcd",
        ports.etcd_client,
        ports.etcd_peer,
    )
    .await
    .context("starting etcd")?;
    eprintln!("etcd running at {} (pid {})", etcd.endpoint(), etcd.pid());

    let exe = std::env::current_exe().context("finding the pgbaton binary")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut supervisors = Vec::new();
    for name in &names {
        let delay = Duration::from_secs_f64(args.restart_delay.max(0.0));
        supervisors.push(tokio::spawn(
            supervise::agent(exe.clone(), dir.join(name), delay, stop_rx.clone()).in_current_span(),
        ));
    }

    let router_cfg = router_config(&args, &ports, &dir)?;
    let router_yml = dir.join("router.yml");
    std::fs::write(&router_yml, router_cfg.to_yaml())
        .with_context(|| format!("writing {}", router_yml.display()))?;
    let router_args = vec![
        "router".into(),
        "--config".into(),
        router_yml.into_os_string(),
    ];
    supervisors.push(tokio::spawn(
        supervise::process(
            exe.clone(),
            router_args,
            dir.join("router.log"),
            dir.join("router.pid"),
            Duration::from_secs(1),
            stop_rx.clone(),
        )
        .in_current_span(),
    ));

    let path = ClusterPath::new("/service/", &args.scope);
    let endpoints = vec![etcd.endpoint()];
    let ready = tokio::select! {
        r = wait_until_up(&endpoints, &path, names.len(), Duration::from_secs(args.wait)) => r,
        _ = pgbaton_agent::shutdown::signalled() => Err(anyhow::anyhow!("interrupted before the cluster came up")),
    };
    let outcome = match ready {
        Ok(()) => {
            match crate::ctl::list_table(&endpoints, &path).await {
                Ok(table) => print!("{table}"),
                Err(e) => eprintln!("cannot print the member table: {e:#}"),
            }
            let pooling = args.pool_mode.is_some();
            println!("{}", ports.describe(&dir, &names, &args.scope, pooling));
            if let Some(archive) = &archive {
                println!(
                    "archive: pgBackRest stanza {} in {} (config {}); take a backup: pgbaton ctl --dcs 127.0.0.1:{} --scope {} backup --type full",
                    archive.stanza,
                    dir.join("pgbackrest").join("repo").display(),
                    archive.config.display(),
                    ports.etcd_client,
                    args.scope
                );
            }
            println!(
                "Ctrl-C stops the cluster (data stays in {}).",
                dir.display()
            );
            pgbaton_agent::shutdown::signalled().await;
            Ok(())
        }
        Err(e) => Err(e),
    };

    eprintln!("stopping agents and PostgreSQL...");
    let _ = stop_tx.send(true);
    for s in supervisors {
        let _ = s.await;
    }
    for name in &names {
        supervise::kill_leftover_postmaster(&dir.join(name).join("data"));
    }
    etcd.stop();
    eprintln!("stopped; data kept in {}", dir.display());
    outcome
}

/// The router of a local cluster: write N+2, read N+3, status/metrics N+4; with
/// `--pool-mode`, pooling with SCRAM for the template's users (DIR/userlist.txt) and the
/// auto listener at N+5.
fn router_config(
    args: &UpArgs,
    ports: &Ports,
    dir: &Path,
) -> anyhow::Result<pgbaton_router::RouterConfig> {
    let mut cfg = pgbaton_router::RouterConfig::new(
        vec![format!("127.0.0.1:{}", ports.etcd_client)],
        "/service/",
        &args.scope,
    );
    cfg.write_listen = format!("127.0.0.1:{}", ports.router_write);
    cfg.read_listen = format!("127.0.0.1:{}", ports.router_read);
    cfg.api_listen = Some(format!("127.0.0.1:{}", ports.router_api));
    if let Some(mode) = &args.pool_mode {
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, "\"postgres\" \"postgres\"\n\"app\" \"app\"\n")
            .with_context(|| format!("writing {}", userlist.display()))?;
        cfg.auth = Some(pgbaton_router::auth::AuthConfig {
            auth_type: pgbaton_router::auth::AuthType::Method(
                pgbaton_router::auth::Method::ScramSha256,
            ),
            auth_file: Some(userlist),
            ..Default::default()
        });
        cfg.pool.pool_mode = pgbaton_router::pool::PoolMode::parse(mode)
            .ok_or_else(|| anyhow::anyhow!("--pool-mode {mode}: use session or transaction"))?;
        cfg.pool.default_pool_size = 20;
        cfg.auto_listen = Some(format!("127.0.0.1:{}", ports.router_auto));
    }
    Ok(cfg)
}

/// The directory and every parent must be enterable by the postgres user.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))?;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o755);
        if mode & 0o001 == 0 {
            bail!(
                "the postgres user cannot enter {} (mode {:o}), a parent of {}; choose --dir under /tmp",
                ancestor.display(),
                mode & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}

async fn wait_until_up(
    endpoints: &[String],
    path: &ClusterPath,
    members: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        match load_cluster(endpoints, path, Duration::from_secs(2)).await {
            Ok(state) => {
                let leader_ok = state.leader_member().is_some_and(|m| {
                    m.is_running() && (m.is_primary_role() || m.is_standby_leader_role())
                });
                let running = state
                    .members
                    .values()
                    .filter(|m| {
                        m.is_running()
                            && (m.is_primary_role()
                                || m.replication_state.as_deref() == Some("streaming"))
                    })
                    .count();
                if leader_ok && running == members {
                    return Ok(());
                }
                last = format!(
                    "leader: {}, {} of {members} members running",
                    state.leader_name().unwrap_or("none"),
                    running
                );
            }
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the cluster did not come up within {} s ({last}); see the agent.log files",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn standby_of_takes_host_and_port_and_says_what_is_wrong() {
        let cli = Cli::try_parse_from(["x", "--standby-of", "127.0.0.1:15402"]).expect("valid");
        assert_eq!(cli.up.standby_of, Some(("127.0.0.1".to_string(), 15402)));
        for (bad, says) in [
            ("127.0.0.1", "expected HOST:PORT"),
            ("127.0.0.1:0", "is not a port"),
            ("h:99999", "is not a port"),
            (":5432", "no host"),
        ] {
            let err = Cli::try_parse_from(["x", "--standby-of", bad])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn pool_mode_writes_pooling_keys_that_the_router_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = Ports::new(15400).expect("ports");
        let plain = Cli::parse_from(["up"]).up;
        let cfg = router_config(&plain, &ports, dir.path()).expect("config");
        assert!(cfg.auth.is_none(), "no pooling unless asked");
        let pooled = Cli::parse_from(["up", "--pool-mode", "transaction"]).up;
        let cfg = router_config(&pooled, &ports, dir.path()).expect("config");
        let yaml = cfg.to_yaml();
        let back =
            pgbaton_router::RouterConfig::from_yaml_str(&yaml).expect("router.yml reads back");
        assert_eq!(back, cfg);
        assert_eq!(
            back.pool.pool_mode,
            pgbaton_router::pool::PoolMode::Transaction
        );
        assert_eq!(back.pool.default_pool_size, 20);
        assert!(yaml.contains("auth_type: scram-sha-256"), "{yaml}");
        assert_eq!(
            back.auto_listen.as_deref(),
            Some("127.0.0.1:15405"),
            "{yaml}"
        );
        let userlist = std::fs::read_to_string(dir.path().join("userlist.txt")).expect("userlist");
        assert!(userlist.contains("\"postgres\" \"postgres\""));
    }
}
