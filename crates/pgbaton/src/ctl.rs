//! `pgbaton ctl`: the operator's CLI, with patronictl's verbs and output. The views read the
//! DCS directly; the operations (switchover, failover, restart, reload, reinit, pause,
//! resume, edit-config) go through the members' REST APIs, which validate them and carry
//! them out, so the CLI and REST have the same semantics.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use pgbaton_config::DynamicConfig;
use pgbaton_ctl::{ListOptions, OutputFormat};
use pgbaton_dcs::{load_cluster, ClusterPath, ClusterState, Dcs, EtcdDcs};
use serde_json::{json, Value};

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
    /// REST API user for write operations (default: restapi.authentication of --config).
    #[arg(long, env = "PGBATON_API_USERNAME", global = true)]
    username: Option<String>,
    /// REST API password for write operations.
    #[arg(long, env = "PGBATON_API_PASSWORD", global = true)]
    password: Option<String>,
    /// CA bundle to verify members' https REST APIs (default: ctl.cacert / restapi.cafile of
    /// --config, else the system's roots).
    #[arg(long, global = true)]
    cacert: Option<String>,
    /// Do not verify the certificates of https REST APIs (patronictl's -k).
    #[arg(long, short = 'k', global = true)]
    insecure: bool,
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
    /// Where a pgbaton router sends traffic now (its `/status`): leader, replicas, lag,
    /// connections, handover in progress.
    RouterStatus {
        /// The router's API address (`api.listen` in its config; `local up`: base port + 4).
        #[arg(long, default_value = "127.0.0.1:15404")]
        router: String,
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The failover history (timeline switches).
    History {
        #[arg(long, short = 'f', default_value = "pretty")]
        format: OutputFormat,
    },
    /// The dynamic configuration stored in the DCS.
    ShowConfig,
    /// Print a haproxy.cfg (write port to the leader, read port to replicas) for this cluster.
    HaproxyConfig {
        #[arg(long, default_value_t = 5432)]
        write_port: u16,
        #[arg(long, default_value_t = 5433)]
        read_port: u16,
    },
    /// Planned handover of the leader role to a replica (now or at a scheduled time).
    Switchover {
        /// The current leader (checked).
        #[arg(long, alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to hand over to (default: the healthiest replica).
        #[arg(long)]
        candidate: Option<String>,
        /// When: ISO 8601 time (e.g. 2026-11-26T15:00:00+00:00) or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Cancel the pending (scheduled) switchover instead.
        #[arg(long, conflicts_with_all = ["candidate", "scheduled"])]
        cancel: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Cancel what is scheduled: `flush switchover`, or `flush restart [MEMBERS]`.
    Flush {
        /// `switchover` or `restart`.
        what: FlushTarget,
        /// For `restart`: the members (default: all).
        members: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Promote a replica (when the cluster has no healthy leader, or to hand over at once).
    Failover {
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (in place, keeping their roles).
    Restart {
        /// Members to restart (default: all).
        members: Vec<String>,
        /// Restart every member.
        #[arg(long)]
        all: bool,
        /// Only members with a restart pending.
        #[arg(long)]
        pending: bool,
        /// When: ISO 8601 time (e.g. 2026-11-26T03:00:00+00:00); the conditions (--pending)
        /// are checked then. Cancel with `flush restart`.
        #[arg(long)]
        scheduled: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Reload PostgreSQL's configuration on members (default: all).
    Reload {
        members: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Re-clone a replica from the leader (its data directory is moved aside, not deleted).
    Reinit {
        member: String,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: the agents take no automatic action.
    Pause,
    /// Leave maintenance mode.
    Resume,
    /// Change the dynamic configuration: -s key=value / -p param=value, or $EDITOR.
    EditConfig {
        /// key=value (dotted keys reach into sections: postgresql.use_slots=false; null deletes).
        #[arg(short = 's', long = "set")]
        set: Vec<String>,
        /// PostgreSQL parameter=value (under postgresql.parameters).
        #[arg(short = 'p', long = "pg")]
        pg: Vec<String>,
        #[arg(long)]
        force: bool,
    },
}

/// What `flush` cancels.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FlushTarget {
    Switchover,
    Restart,
}

/// Where the cluster is: endpoints and path.
pub struct Target {
    pub endpoints: Vec<String>,
    pub path: ClusterPath,
}

fn target_from(
    args: &CtlArgs,
    from_file: Option<&pgbaton_config::Config>,
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
    let scope = match (&args.scope, from_file) {
        (Some(s), _) => s.clone(),
        (None, Some(cfg)) => cfg.scope.clone(),
        (None, None) => {
            bail!("which cluster? give --scope NAME (and --dcs HOST:PORT) or --config FILE")
        }
    };
    let namespace = match (&args.namespace, from_file) {
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
    let target = target_from(&args, from_file.as_ref())?;
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
        CtlCommand::List { format, extended } => {
            pgbaton_ctl::render_list(&state, &scope, &ListOptions { format, extended })
        }
        CtlCommand::Topology => pgbaton_ctl::render_topology(&state, &scope),
        CtlCommand::History { format } => pgbaton_ctl::render_history(&state, format),
        CtlCommand::ShowConfig => pgbaton_ctl::render_config(&state),
        CtlCommand::HaproxyConfig {
            write_port,
            read_port,
        } => {
            let ports = pgbaton_ctl::HaproxyPorts {
                write: write_port,
                read: read_port,
                stats: 7000,
            };
            pgbaton_ctl::render_haproxy(&state, &scope, &ports)
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

/// A member's REST API, spoken with the operator's credentials.
struct Api {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

/// What a member's API answered.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer on one line: the text, or the `error` of a JSON reason.
    fn message(&self) -> String {
        let from_json = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
        let text = from_json.unwrap_or_else(|| self.body.clone());
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl Api {
    fn new(auth: Option<(String, String)>, trust: &crate::http::Trust) -> anyhow::Result<Api> {
        let http = crate::http::client(trust, Duration::from_secs(90))?;
        Ok(Api { http, auth })
    }

    /// `method` `base``path` with an optional JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        api_url: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", api_base(api_url));
        let mut request = self.http.request(method.clone(), &url);
        if let Some((user, password)) = &self.auth {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                pgbaton_api::basic_header(user, password),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok(Answer { status, body })
    }
}

/// `http://host:port/patroni` → `http://host:port`.
fn api_base(api_url: &str) -> &str {
    let url = api_url.trim_end_matches('/');
    url.strip_suffix("/patroni").unwrap_or(url)
}

/// Ask `question` on a terminal; without one, refuse unless --force.
fn confirm(question: &str, force: bool, what: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without confirmation: stdin is not a terminal; add --force");
    }
    print!("{question} [y/N]: ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("aborted: nothing was changed")
    }
}

fn timestamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// The operations: each goes through a member's REST API.
struct Ops {
    target: Target,
    state: ClusterState,
    api: Api,
}

impl Ops {
    async fn run(self, command: CtlCommand) -> anyhow::Result<()> {
        match command {
            CtlCommand::Switchover { cancel: true, .. } => self.flush_switchover().await,
            CtlCommand::Switchover {
                leader,
                candidate,
                scheduled,
                force,
                ..
            } => self.switchover(leader, candidate, scheduled, force).await,
            CtlCommand::Flush {
                what: FlushTarget::Switchover,
                ..
            } => self.flush_switchover().await,
            CtlCommand::Flush {
                what: FlushTarget::Restart,
                members,
                force,
            } => {
                let members = self.members_or_all(&members, false)?;
                self.flush_restart(&members, force).await
            }
            CtlCommand::Failover { candidate, force } => self.failover(candidate, force).await,
            CtlCommand::Restart {
                members,
                all,
                pending,
                scheduled,
                force,
            } => {
                let members = self.members_or_all(&members, all)?;
                self.restart(&members, pending, scheduled, force).await
            }
            CtlCommand::Reload { members, force } => {
                let members = self.members_or_all(&members, false)?;
                self.reload(&members, force).await
            }
            CtlCommand::Reinit { member, force } => self.reinit(&member, force).await,
            CtlCommand::Pause => self.pause(true).await,
            CtlCommand::Resume => self.pause(false).await,
            CtlCommand::EditConfig { set, pg, force } => self.edit_config(&set, &pg, force).await,
            CtlCommand::List { .. }
            | CtlCommand::Topology
            | CtlCommand::History { .. }
            | CtlCommand::ShowConfig
            | CtlCommand::RouterStatus { .. }
            | CtlCommand::HaproxyConfig { .. } => Ok(()),
        }
    }

    fn scope(&self) -> &str {
        &self.target.path.scope
    }

    fn api_url(&self, member: &str) -> anyhow::Result<&str> {
        let doc = self.state.members.get(member).ok_or_else(|| {
            let known: Vec<&str> = self.state.members.keys().map(String::as_str).collect();
            anyhow!(
                "{member} is not a member of cluster {} (members: {})",
                self.scope(),
                known.join(", ")
            )
        })?;
        if doc.api_url.is_empty() {
            bail!("{member} publishes no REST API address (api_url)");
        }
        Ok(&doc.api_url)
    }

    fn members_or_all(&self, given: &[String], all: bool) -> anyhow::Result<Vec<String>> {
        if all || given.is_empty() {
            return Ok(self.state.members.keys().cloned().collect());
        }
        for m in given {
            self.api_url(m)?;
        }
        Ok(given.to_vec())
    }

    /// The leader first, then every other member with an API.
    fn api_urls_leader_first(&self) -> Vec<(String, String)> {
        let leader = self.state.leader_name();
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(l) = leader {
            if let Ok(url) = self.api_url(l) {
                out.push((l.to_string(), url.to_string()));
            }
        }
        for (name, doc) in &self.state.members {
            if Some(name.as_str()) != leader && !doc.api_url.is_empty() {
                out.push((name.clone(), doc.api_url.clone()));
            }
        }
        out
    }

    async fn print_table(&self) {
        match list_table(&self.target.endpoints, &self.target.path).await {
            Ok(table) => print!("{table}"),
            Err(e) => eprintln!("warning: cannot show the member table: {e:#}"),
        }
    }

    async fn switchover(
        &self,
        leader: Option<String>,
        candidate: Option<String>,
        scheduled: Option<String>,
        force: bool,
    ) -> anyhow::Result<()> {
        let Some(current) = self.state.leader_name() else {
            bail!(
                "cluster {} has no leader: use `pgbaton ctl failover --candidate NAME`",
                self.scope()
            );
        };
        if let Some(named) = &leader {
            if named != current {
                bail!(
                    "{named} is not the leader of cluster {}: {current} is",
                    self.scope()
                );
            }
        }
        let scheduled = scheduled.filter(|s| !s.eq_ignore_ascii_case("now"));
        let url = self.api_url(current)?.to_string();
        if !force {
            print!(
                "{}",
                pgbaton_ctl::render_list(&self.state, self.scope(), &list_options())
            );
            println!(
                "Switchover from {current} to {}{}",
                candidate.as_deref().unwrap_or("the healthiest replica"),
                scheduled
                    .as_deref()
                    .map(|at| format!(" at {at}"))
                    .unwrap_or_default()
            );
        }
        confirm(
            &format!(
                "Are you sure you want to switchover cluster {}, demoting current leader {current}?",
                self.scope()
            ),
            force,
            "switch over",
        )?;
        let body = json!({"leader": current, "candidate": candidate, "scheduled_at": scheduled});
        let answer = self
            .api
            .call(reqwest::Method::POST, &url, "/switchover", Some(&body))
            .await?;
        if !answer.ok() {
            bail!(
                "switchover refused ({}): {}",
                answer.status,
                answer.message()
            );
        }
        println!("{} {}", timestamp(), answer.message());
        self.print_table().await;
        Ok(())
    }

    async fn failover(&self, candidate: Option<String>, force: bool) -> anyhow::Result<()> {
        if let Some(c) = &candidate {
            self.api_url(c)?;
        }
        confirm(
            &format!(
                "Are you sure you want to failover cluster {}{}?",
                self.scope(),
                candidate
                    .as_deref()
                    .map(|c| format!(" to {c}"))
                    .unwrap_or_default()
            ),
            force,
            "fail over",
        )?;
        let body = json!({ "candidate": candidate });
        let mut last = None;
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(reqwest::Method::POST, &url, "/failover", Some(&body))
                .await
            {
                Ok(answer) if answer.ok() => {
                    println!("{} {}", timestamp(), answer.message());
                    self.print_table().await;
                    return Ok(());
                }
                Ok(answer) => bail!(
                    "failover refused by {name} ({}): {}",
                    answer.status,
                    answer.message()
                ),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e.context("no member's REST API answered")),
            None => bail!("no member publishes a REST API address"),
        }
    }

    async fn restart(
        &self,
        members: &[String],
        pending: bool,
        scheduled: Option<String>,
        force: bool,
    ) -> anyhow::Result<()> {
        let scheduled = pgbaton_ctl::ops::parse_schedule(scheduled.as_deref(), chrono::Utc::now())
            .map_err(|e| anyhow!(e.to_string().replace("switchover", "restart")))?;
        // A scheduled restart checks "pending" when its time comes, not now.
        let members: Vec<&String> = members
            .iter()
            .filter(|m| {
                !pending
                    || scheduled.is_some()
                    || self.state.members.get(*m).and_then(|d| d.pending_restart) == Some(true)
            })
            .collect();
        if members.is_empty() {
            println!("No member needs a restart");
            return Ok(());
        }
        let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
        confirm(
            &format!(
                "Are you sure you want to restart members {}?",
                names.join(", ")
            ),
            force,
            "restart",
        )?;
        let body = json!({ "restart_pending": pending, "schedule": scheduled });
        let mut failed = Vec::new();
        for member in members {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::POST, url, "/restart", Some(&body))
                .await
            {
                Ok(a) if a.ok() && scheduled.is_some() => {
                    println!(
                        "Success: restart scheduled on member {member}: {}",
                        a.message()
                    )
                }
                Ok(a) if a.ok() => println!("Success: restart on member {member}"),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("restart failed on {}", failed.join("; "))
        }
    }

    /// Cancel the pending switchover (`DELETE /switchover` on the leader, else any member).
    async fn flush_switchover(&self) -> anyhow::Result<()> {
        if self.state.failover.is_none() {
            println!("No pending switchover: nothing to cancel");
            return Ok(());
        }
        let mut last = None;
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(reqwest::Method::DELETE, &url, "/switchover", None)
                .await
            {
                Ok(a) if a.ok() => {
                    println!("Success: {}", a.message());
                    return Ok(());
                }
                Ok(a) => bail!(
                    "{name} refused to cancel the switchover ({}): {}",
                    a.status,
                    a.message()
                ),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e.context("no member's REST API answered")),
            None => bail!("no member publishes a REST API address"),
        }
    }

    /// Cancel the scheduled restarts of `members` (`DELETE /restart` on each).
    async fn flush_restart(&self, members: &[String], force: bool) -> anyhow::Result<()> {
        let scheduled: Vec<&String> = members
            .iter()
            .filter(|m| {
                self.state
                    .members
                    .get(*m)
                    .is_some_and(|d| d.extra.contains_key("scheduled_restart"))
            })
            .collect();
        if scheduled.is_empty() {
            println!("No scheduled restart: nothing to cancel");
            return Ok(());
        }
        let names: Vec<&str> = scheduled.iter().map(|m| m.as_str()).collect();
        confirm(
            &format!(
                "Are you sure you want to cancel the scheduled restart of {}?",
                names.join(", ")
            ),
            force,
            "cancel",
        )?;
        let mut failed = Vec::new();
        for member in scheduled {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::DELETE, url, "/restart", None)
                .await
            {
                Ok(a) if a.ok() => println!("Success: flush scheduled restart for member {member}"),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("cancelling failed on {}", failed.join("; "))
        }
    }

    async fn reload(&self, members: &[String], force: bool) -> anyhow::Result<()> {
        confirm(
            &format!(
                "Are you sure you want to reload members {}?",
                members.join(", ")
            ),
            force,
            "reload",
        )?;
        let mut failed = Vec::new();
        for member in members {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::POST, url, "/reload", None)
                .await
            {
                Ok(a) if a.ok() => println!(
                    "Reload request received for member {member}: {}",
                    a.message()
                ),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("reload failed on {}", failed.join("; "))
        }
    }

    async fn reinit(&self, member: &str, force: bool) -> anyhow::Result<()> {
        let url = self.api_url(member)?;
        confirm(
            &format!("Are you sure you want to reinitialize members {member}?"),
            force,
            "reinitialize",
        )?;
        let body = json!({ "force": force });
        let answer = self
            .api
            .call(reqwest::Method::POST, url, "/reinitialize", Some(&body))
            .await?;
        if !answer.ok() {
            bail!(
                "reinitialize of {member} refused ({}): {}",
                answer.status,
                answer.message()
            );
        }
        println!("Success: reinitialize for member {member}");
        Ok(())
    }

    async fn pause(&self, pause: bool) -> anyhow::Result<()> {
        let paused = self
            .state
            .config
            .as_ref()
            .and_then(|c| c.value.get("pause"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if paused == pause {
            bail!(
                "cluster {} is {} paused",
                self.scope(),
                if pause { "already" } else { "not" }
            );
        }
        let patch = if pause {
            json!({"pause": true})
        } else {
            json!({"pause": null})
        };
        self.change_config(&patch, None).await?;
        println!(
            "Success: cluster management is {}",
            if pause { "paused" } else { "resumed" }
        );
        Ok(())
    }

    async fn edit_config(
        &self,
        sets: &[String],
        pgs: &[String],
        force: bool,
    ) -> anyhow::Result<()> {
        let (current, revision) = match &self.state.config {
            Some(c) => (c.value.clone(), Some(c.mod_revision)),
            None => (json!({}), None),
        };
        let (new, patch) = if sets.is_empty() && pgs.is_empty() {
            (edit_in_editor(&current)?, None)
        } else {
            let patch = pgbaton_ctl::edit::patch_from_args(sets, pgs)?;
            let mut new = current.clone();
            pgbaton_ctl::edit::merge_patch(&mut new, &patch);
            (new, Some(patch))
        };
        let diff = pgbaton_ctl::diff::unified_diff(
            &pgbaton_ctl::edit::to_yaml(&current),
            &pgbaton_ctl::edit::to_yaml(&new),
            "before",
            "after",
        );
        if diff.is_empty() {
            println!("Not changed");
            return Ok(());
        }
        print!("{diff}");
        DynamicConfig::from_dcs_json(&new, &DynamicConfig::defaults())
            .map_err(|e| anyhow!("{e}; the configuration was not changed"))?;
        confirm("Apply these changes?", force, "change the configuration")?;
        match patch {
            Some(patch) => self.change_config(&patch, Some((&new, revision))).await?,
            None => self.replace_config(&new, revision).await?,
        }
        println!("Configuration changed");
        Ok(())
    }

    /// PATCH /config through the leader's API (else any member's); when no API answers,
    /// write `fallback` (the merged document) directly with compare-and-swap.
    async fn change_config(
        &self,
        patch: &Value,
        fallback: Option<(&Value, Option<i64>)>,
    ) -> anyhow::Result<()> {
        self.config_request(reqwest::Method::PATCH, patch, fallback)
            .await
    }

    async fn replace_config(&self, new: &Value, revision: Option<i64>) -> anyhow::Result<()> {
        self.config_request(reqwest::Method::PUT, new, Some((new, revision)))
            .await
    }

    async fn config_request(
        &self,
        method: reqwest::Method,
        body: &Value,
        fallback: Option<(&Value, Option<i64>)>,
    ) -> anyhow::Result<()> {
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(method.clone(), &url, "/config", Some(body))
                .await
            {
                Ok(a) if a.ok() => return Ok(()),
                Ok(a) => bail!(
                    "{name} refused the configuration ({}): {}",
                    a.status,
                    a.message()
                ),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
        let (new, revision) = match fallback {
            Some(f) => f,
            None => {
                let mut merged = self
                    .state
                    .config
                    .as_ref()
                    .map(|c| c.value.clone())
                    .unwrap_or_else(|| json!({}));
                pgbaton_ctl::edit::merge_patch(&mut merged, body);
                let revision = self.state.config.as_ref().map(|c| c.mod_revision);
                return self.write_config_directly(&merged, revision).await;
            }
        };
        self.write_config_directly(new, revision).await
    }

    /// No REST API answered: validate here and compare-and-swap the DCS key ourselves.
    async fn write_config_directly(
        &self,
        new: &Value,
        revision: Option<i64>,
    ) -> anyhow::Result<()> {
        DynamicConfig::from_dcs_json(new, &DynamicConfig::defaults())
            .map_err(|e| anyhow!("{e}; the configuration was not changed"))?;
        let dcs = EtcdDcs::new(
            self.target.endpoints.clone(),
            self.target.path.clone(),
            "pgbaton-ctl",
            Duration::from_secs(10),
            Duration::from_secs(3),
        );
        eprintln!("warning: no REST API answered; writing the configuration to the DCS directly");
        if !dcs.set_config(new, revision).await? {
            bail!("the configuration changed in the DCS meanwhile; nothing was written, run the command again");
        }
        Ok(())
    }
}

fn list_options() -> ListOptions {
    ListOptions {
        format: OutputFormat::Pretty,
        extended: false,
    }
}

/// Open $EDITOR (else vi) on the configuration as YAML and read it back.
fn edit_in_editor(current: &Value) -> anyhow::Result<Value> {
    let dir = tempfile_dir()?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, pgbaton_ctl::edit::to_yaml(current))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let editor = std::env::var("EDITOR")
        .or_else(|_| std::env::var("VISUAL"))
        .unwrap_or_else(|_| "vi".to_string());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor {editor}"))?;
    if !status.success() {
        bail!("the editor {editor} exited with {status}; nothing was changed");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(pgbaton_ctl::edit::from_yaml(&text)?)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgbaton-edit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
