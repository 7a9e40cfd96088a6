//! `pgbaton-bench handover`: what applications see through each stack's write address while
//! the leader changes. Several clients at once, side by side in one run: pgbaton's router
//! (session or transaction pooling), Patroni 3.0.2 behind HAProxy (the seed's 7.5
//! configuration), and Patroni behind HAProxy with PgBouncer 1.18 in transaction mode in
//! front (as users run it).
//!
//! **Clients.** `persistent` clients keep one connection and alternate a write transaction
//! (`BEGIN; INSERT ...; COMMIT`) and a read-only one (`BEGIN READ ONLY; SELECT ...;
//! COMMIT`), one every 50 ms; after a failure they reconnect and go on. `per-op` clients open
//! a new connection for each operation (every 100 ms). Every operation is recorded: start,
//! end, success or the error text. An operation has 5 s; longer counts as failed.
//!
//! **Events.** Planned switchovers without a named candidate (the tool's CLI, `--force`),
//! then node losses (the leader's agent and PostgreSQL SIGKILLed; the node stays down
//! `--down-for` seconds). Between events the cluster becomes whole again and the clients run
//! a few seconds undisturbed.
//!
//! **Figures**, per event: failed operations (by client kind), the longest pause a client
//! saw (the longest time between two of its successful operations ending, from the last
//! success before the event until 5 s after the cluster was whole again), and for node
//! losses the time from the kill to the first acknowledged write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::crash::{self, Crash};
use crate::patroni::{PatroniCluster, PatroniSpec};
use crate::patroni_config::SEED_CHECKS;
use crate::profile::Profile;
use crate::scenario::RunError;
use crate::stats;
use crate::target::Target;

/// Longest an operation may take before it counts as failed.
const OP_LIMIT: Duration = Duration::from_secs(5);
const TABLE: &str = "pgbaton_handover";
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// The stacks compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Stack {
    /// pgbaton's router, session pooling (`local up --pool-mode session`: the router checks
    /// the password, the kernel forwards each session).
    #[value(name = "pgbaton-session")]
    PgbatonSession,
    /// pgbaton's router without pooling (`local up` defaults: the kernel forwards each
    /// session, authentication passed through).
    #[value(name = "pgbaton-plain")]
    PgbatonPlain,
    /// pgbaton's router, transaction pooling (`local up --pool-mode transaction`).
    #[value(name = "pgbaton-transaction")]
    PgbatonTransaction,
    /// Patroni + HAProxy's write frontend.
    Patroni,
    /// Patroni + HAProxy + PgBouncer (transaction mode, pool 20) on the write frontend.
    #[value(name = "patroni-pgbouncer")]
    PatroniPgbouncer,
}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::PgbatonSession => "pgbaton-session",
            Stack::PgbatonPlain => "pgbaton-plain",
            Stack::PgbatonTransaction => "pgbaton-transaction",
            Stack::Patroni => "patroni",
            Stack::PatroniPgbouncer => "patroni-pgbouncer",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Stack::PgbatonSession => "pgbaton router, session pooling",
            Stack::PgbatonPlain => "pgbaton router, no pooling",
            Stack::PgbatonTransaction => "pgbaton router, transaction pooling",
            Stack::Patroni => "Patroni 3.0.2 + HAProxy",
            Stack::PatroniPgbouncer => "Patroni + HAProxy + PgBouncer (transaction)",
        }
    }
}

/// What `handover` runs.
#[derive(Debug, Clone)]
pub struct HandoverPlan {
    pub pgbaton: PathBuf,
    pub dir: PathBuf,
    pub base_port: u16,
    pub patroni_base_port: u16,
    pub stacks: Vec<Stack>,
    pub switchovers: usize,
    pub node_losses: usize,
    pub persistent: usize,
    pub per_op: usize,
    /// How long a lost node stays down (seconds).
    pub down_for: f64,
    /// pgbaton's timing (Patroni runs `ttl5` = 5/1/2 with the tuned checks, the closest it
    /// allows, or the seed's 30/10/10 when this is `seed`).
    pub profile: Profile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    Persistent,
    PerOp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    pub kind: ClientKind,
    pub write: bool,
    /// Seconds since the stack's clients started.
    pub start_s: f64,
    pub end_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Switchover,
    NodeLoss,
}

/// One event and what the clients saw of it.
#[derive(Debug, Clone, Serialize)]
pub struct EventResult {
    pub stack: Stack,
    pub kind: EventKind,
    pub leader_before: String,
    pub leader_after: Option<String>,
    /// Seconds since the clients started.
    pub at_s: f64,
    /// When the cluster was whole again.
    pub whole_s: f64,
    pub failed_persistent: usize,
    pub failed_per_op: usize,
    /// The longest pause any client saw, and the median over clients (seconds).
    pub longest_pause_s: f64,
    pub median_pause_s: f64,
    /// Node loss: kill to the first acknowledged write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_write_s: Option<f64>,
    /// The distinct error texts of the failed operations (first 5).
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Handover {
    pub events: Vec<EventResult>,
    pub ops: Vec<(Stack, usize)>,
    pub problems: Vec<String>,
}

/// Where clients connect and how.
#[derive(Debug, Clone)]
struct Endpoint {
    port: u16,
    user: &'static str,
    password: &'static str,
}

async fn connect(e: &Endpoint) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(e.port)
        .user(e.user)
        .password(e.password)
        .dbname("postgres")
        .application_name("pgbaton-handover")
        .connect_timeout(OP_LIMIT);
    let (client, connection) = tokio::time::timeout(OP_LIMIT, config.connect(NoTls))
        .await
        .map_err(|_| format!("connect: no answer within {} s", OP_LIMIT.as_secs()))?
        .map_err(|e| format!("connect: {}", error_text(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn run_op(
    client: &tokio_postgres::Client,
    id: usize,
    seq: u64,
    write: bool,
) -> Result<(), String> {
    let sql = if write {
        format!("BEGIN; INSERT INTO {TABLE} (client, seq) VALUES ({id}, {seq}); COMMIT")
    } else {
        format!("BEGIN READ ONLY; SELECT count(*) FROM {TABLE} WHERE client = {id}; COMMIT")
    };
    tokio::time::timeout(OP_LIMIT, client.simple_query(&sql))
        .await
        .map_err(|_| format!("no answer within {} s", OP_LIMIT.as_secs()))?
        .map_err(|e| error_text(&e))?;
    Ok(())
}

type Log = Arc<Mutex<Vec<Op>>>;

fn record(log: &Log, op: Op) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(op);
}

/// One client until `stop` turns true.
async fn client(
    id: usize,
    kind: ClientKind,
    endpoint: Endpoint,
    origin: Instant,
    log: Log,
    mut stop: watch::Receiver<bool>,
) {
    let period = match kind {
        ClientKind::Persistent => Duration::from_millis(50),
        ClientKind::PerOp => Duration::from_millis(100),
    };
    let mut conn: Option<tokio_postgres::Client> = None;
    let mut seq = 0u64;
    while !*stop.borrow() {
        seq += 1;
        let write = seq % 2 == 1;
        let start = Instant::now();
        let outcome = async {
            if conn.is_none() || kind == ClientKind::PerOp {
                conn = Some(connect(&endpoint).await?);
            }
            let c = conn.as_ref().ok_or("no connection")?;
            run_op(c, id, seq, write).await
        }
        .await;
        if outcome.is_err() || kind == ClientKind::PerOp {
            conn = None;
        }
        let end = Instant::now();
        record(
            &log,
            Op {
                client: id,
                kind,
                write,
                start_s: (start - origin).as_secs_f64(),
                end_s: (end - origin).as_secs_f64(),
                error: outcome.err(),
            },
        );
        let next = start + period;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => {}
        }
    }
}

/// PgBouncer in transaction mode in front of `upstream`, run as the postgres user; stopped
/// on drop.
struct Pgbouncer {
    child: Option<Child>,
}

impl Pgbouncer {
    fn start(dir: &Path, port: u16, upstream: u16) -> Result<Pgbouncer, String> {
        if !Path::new(PGBOUNCER).exists() {
            return Err(format!(
                "{PGBOUNCER} is missing: apt-get install -y pgbouncer"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ini = dir.join("pgbouncer.ini");
        let users = dir.join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"postgres\"\n")
            .map_err(|e| format!("{}: {e}", users.display()))?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\npostgres = host=127.0.0.1 port={upstream} dbname=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = scram-sha-256\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = 20\nmax_client_conn = 1000\nlogfile = {log}\n",
                users = users.display(),
                log = dir.join("pgbouncer.log").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", ini.display()))?;
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown -R postgres {} failed", dir.display()));
        }
        use std::os::unix::process::CommandExt;
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", PGBOUNCER, "-q"])
            .arg(&ini)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting pgbouncer: {e}"))?;
        Ok(Pgbouncer { child: Some(child) })
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

async fn wait_listening(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{what} did not listen on 127.0.0.1:{port} within 20 s"
    ))
}

/// Run every stack of the plan, one after the other.
pub async fn run(plan: &HandoverPlan) -> Handover {
    let mut out = Handover::default();
    for (i, &stack) in plan.stacks.iter().enumerate() {
        eprintln!("handover: {} ...", stack.describe());
        let outcome = match stack {
            Stack::PgbatonSession | Stack::PgbatonPlain | Stack::PgbatonTransaction => {
                run_pgbaton(plan, stack, i as u16, &mut out).await
            }
            Stack::Patroni | Stack::PatroniPgbouncer => {
                run_patroni(plan, stack, i as u16, &mut out).await
            }
        };
        if let Err(e) = outcome {
            eprintln!("error: {}: {e}", stack.name());
            out.problems.push(format!("{}: {e}", stack.name()));
        }
    }
    out
}

async fn run_pgbaton(
    plan: &HandoverPlan,
    stack: Stack,
    i: u16,
    out: &mut Handover,
) -> Result<(), String> {
    let spec = ClusterSpec {
        pgbaton: plan.pgbaton.clone(),
        dir: plan.dir.join(stack.name()),
        base_port: plan.base_port + 40 * i,
        members: 3,
        profile: plan.profile,
        restart_delay: plan.down_for,
        synchronous: "off",
        via_router: true,
        pool_mode: match stack {
            Stack::PgbatonTransaction => Some("transaction"),
            Stack::PgbatonSession => Some("session"),
            _ => None,
        },
        archive: false,
    };
    let cluster = LocalCluster::start(spec).await.map_err(|e| e.to_string())?;
    let endpoint = Endpoint {
        port: cluster.router_write_endpoint().port,
        user: "postgres",
        password: "postgres",
    };
    measure(plan, stack, &cluster, endpoint, out).await
}

async fn run_patroni(
    plan: &HandoverPlan,
    stack: Stack,
    i: u16,
    out: &mut Handover,
) -> Result<(), String> {
    crate::patroni::check_binaries().map_err(|e| e.to_string())?;
    let profile = if plan.profile == Profile::Seed {
        Profile::Seed
    } else {
        Profile::Ttl5
    };
    let base = plan.patroni_base_port + 40 * i;
    let spec = PatroniSpec {
        dir: plan.dir.join(stack.name()),
        base_port: base,
        members: 3,
        profile,
        checks: if profile == Profile::Seed {
            SEED_CHECKS
        } else {
            crate::patroni_config::TUNED_CHECKS
        },
    };
    let cluster = PatroniCluster::start(spec)
        .await
        .map_err(|e| e.to_string())?;
    let write = cluster
        .write_endpoints("")
        .first()
        .map(|e| e.port)
        .ok_or("HAProxy has no write frontend")?;
    let (endpoint, _bouncer) = if stack == Stack::PatroniPgbouncer {
        let port = base + 35;
        let bouncer = Pgbouncer::start(&plan.dir.join("pgbouncer"), port, write)?;
        wait_listening(port, "pgbouncer").await?;
        (
            Endpoint {
                port,
                user: "postgres",
                password: "postgres",
            },
            Some(bouncer),
        )
    } else {
        (
            Endpoint {
                port: write,
                user: "postgres",
                password: "postgres",
            },
            None,
        )
    };
    measure(plan, stack, &cluster, endpoint, out).await
}

async fn create_table(endpoint: &Endpoint) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let c = connect(endpoint).await?;
            c.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, client int, seq bigint, at timestamptz DEFAULT clock_timestamp())"
            ))
            .await
            .map_err(|e| error_text(&e))
        }
        .await;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("creating {TABLE}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn measure<T: Target>(
    plan: &HandoverPlan,
    stack: Stack,
    cluster: &T,
    endpoint: Endpoint,
    out: &mut Handover,
) -> Result<(), String> {
    let whole_limit = cluster.whole_limit();
    let mut leader = cluster
        .wait_whole(whole_limit)
        .await
        .map_err(|e| e.to_string())?;
    create_table(&endpoint).await?;
    let origin = Instant::now();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let kinds = std::iter::repeat_n(ClientKind::Persistent, plan.persistent)
        .chain(std::iter::repeat_n(ClientKind::PerOp, plan.per_op));
    for (id, kind) in kinds.enumerate() {
        tasks.push(tokio::spawn(client(
            id,
            kind,
            endpoint.clone(),
            origin,
            log.clone(),
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let since = |t: Instant| (t - origin).as_secs_f64();
    let mut marks: Vec<(EventKind, String, Option<String>, f64, f64)> = Vec::new();
    let result: Result<(), RunError> = async {
        for _ in 0..plan.switchovers {
            let at = Instant::now();
            cluster.switchover(&leader, None).await?;
            let after = cluster.wait_whole(whole_limit).await?;
            let whole = Instant::now();
            marks.push((
                EventKind::Switchover,
                leader.clone(),
                Some(after.clone()),
                since(at),
                since(whole),
            ));
            leader = after;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        for _ in 0..plan.node_losses {
            let at = crash::inflict(cluster, &leader, Crash::Node).await?;
            tokio::time::sleep(Duration::from_secs_f64(plan.down_for)).await;
            cluster.revive(&leader).await?;
            let after = cluster.wait_whole(whole_limit).await?;
            let whole = Instant::now();
            marks.push((
                EventKind::NodeLoss,
                leader.clone(),
                Some(after.clone()),
                since(at),
                since(whole),
            ));
            leader = after;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok(())
    }
    .await;
    // The last event's span ends 5 s after the cluster was whole (3 s of that slept above).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let ops = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    out.ops.push((stack, ops.len()));
    let starts: Vec<f64> = marks.iter().map(|m| m.3).collect();
    for (i, (kind, before, after, at_s, whole_s)) in marks.into_iter().enumerate() {
        let span = Span {
            at_s,
            whole_s,
            next_s: starts.get(i + 1).copied(),
        };
        out.events
            .push(evaluate(stack, kind, before, after, span, &ops));
    }
    if let Some(dir) = plan.dir.to_str() {
        let path = format!("{dir}/{}-ops.json", stack.name());
        let _ = std::fs::write(&path, serde_json::to_string(&ops).unwrap_or_default());
    }
    result.map_err(|e| e.to_string())
}

/// When an event happened, when the cluster was whole again, and when the next event began.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub at_s: f64,
    pub whole_s: f64,
    pub next_s: Option<f64>,
}

/// What the clients saw of one event: failures from the event until 5 s after the cluster
/// was whole (or until the next event begins, whichever is first: a pause the next event
/// causes is that event's), and each client's longest pause over that span (from its last
/// success before).
pub fn evaluate(
    stack: Stack,
    kind: EventKind,
    leader_before: String,
    leader_after: Option<String>,
    span: Span,
    ops: &[Op],
) -> EventResult {
    let Span {
        at_s,
        whole_s,
        next_s,
    } = span;
    let end_s = next_s.map_or(whole_s + 5.0, |next| next.min(whole_s + 5.0));
    let in_span = |op: &&Op| op.start_s >= at_s && op.start_s <= end_s;
    let failed: Vec<&Op> = ops
        .iter()
        .filter(in_span)
        .filter(|o| o.error.is_some())
        .collect();
    let failed_of = |k: ClientKind| failed.iter().filter(|o| o.kind == k).count();
    let mut errors: Vec<String> = Vec::new();
    for op in &failed {
        let text = op.error.clone().unwrap_or_default();
        if !errors.contains(&text) && errors.len() < 5 {
            errors.push(text);
        }
    }
    let clients: std::collections::BTreeSet<usize> = ops.iter().map(|o| o.client).collect();
    let mut pauses = Vec::new();
    for c in clients {
        let mut last_ok = ops
            .iter()
            .filter(|o| o.client == c && o.error.is_none() && o.end_s < at_s)
            .map(|o| o.end_s)
            .fold(f64::NAN, f64::max);
        if last_ok.is_nan() {
            last_ok = at_s;
        }
        let mut longest: f64 = 0.0;
        let mut oks: Vec<f64> = ops
            .iter()
            .filter(|o| o.client == c && o.error.is_none() && o.end_s >= at_s && o.end_s <= end_s)
            .map(|o| o.end_s)
            .collect();
        oks.sort_by(f64::total_cmp);
        for end in oks {
            longest = longest.max(end - last_ok);
            last_ok = end;
        }
        longest = longest.max(end_s - last_ok);
        pauses.push(longest);
    }
    let first_write_s = (kind == EventKind::NodeLoss)
        .then(|| {
            ops.iter()
                .filter(|o| o.write && o.error.is_none() && o.start_s >= at_s)
                .map(|o| o.end_s - at_s)
                .fold(f64::NAN, f64::min)
        })
        .filter(|s| !s.is_nan());
    let summary = stats::summarize(&pauses);
    EventResult {
        stack,
        kind,
        leader_before,
        leader_after,
        at_s,
        whole_s,
        failed_persistent: failed_of(ClientKind::Persistent),
        failed_per_op: failed_of(ClientKind::PerOp),
        longest_pause_s: pauses.iter().copied().fold(0.0, f64::max),
        median_pause_s: summary.map_or(0.0, |s| s.median),
        first_write_s,
        errors,
    }
}

/// The comparison table (markdown): per stack and event kind, medians and maxima.
pub fn report(h: &Handover, plan: &HandoverPlan) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} persistent + {} connection-per-operation clients (writes and read-only transactions), {} switchovers without a named candidate, then {} node losses (down {} s); pgbaton timing `{}`.\n\n",
        plan.persistent, plan.per_op, plan.switchovers, plan.node_losses, plan.down_for, plan.profile.name()
    ));
    s.push_str("| stack | event | n | failed ops / event, persistent (median, max) | failed ops / event, per-op (median, max) | longest pause a client saw, s (median, max) | kill → first write, s (median, max) |\n|---|---|---|---|---|---|---|\n");
    for &stack in &plan.stacks {
        for kind in [EventKind::Switchover, EventKind::NodeLoss] {
            let events: Vec<&EventResult> = h
                .events
                .iter()
                .filter(|e| e.stack == stack && e.kind == kind)
                .collect();
            if events.is_empty() {
                continue;
            }
            let cell = |values: Vec<f64>, digits: usize| match stats::summarize(&values) {
                Some(sum) => format!(
                    "{:.*} / {:.*}",
                    digits,
                    sum.median,
                    digits,
                    values.iter().copied().fold(f64::MIN, f64::max)
                ),
                None => "–".into(),
            };
            let first: Vec<f64> = events.iter().filter_map(|e| e.first_write_s).collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                stack.describe(),
                match kind {
                    EventKind::Switchover => "switchover",
                    EventKind::NodeLoss => "node loss",
                },
                events.len(),
                cell(
                    events.iter().map(|e| e.failed_persistent as f64).collect(),
                    0
                ),
                cell(events.iter().map(|e| e.failed_per_op as f64).collect(), 0),
                cell(events.iter().map(|e| e.longest_pause_s).collect(), 2),
                if kind == EventKind::NodeLoss {
                    cell(first, 2)
                } else {
                    "–".into()
                },
            ));
        }
    }
    let mut errors: Vec<String> = Vec::new();
    for e in &h.events {
        for text in &e.errors {
            let line = format!(
                "{} ({}): {text}",
                e.stack.describe(),
                match e.kind {
                    EventKind::Switchover => "switchover",
                    EventKind::NodeLoss => "node loss",
                }
            );
            if !errors.contains(&line) {
                errors.push(line);
            }
        }
    }
    if !errors.is_empty() {
        s.push_str("\nErrors the clients saw:\n");
        for e in errors {
            s.push_str(&format!("- {e}\n"));
        }
    }
    for p in &h.problems {
        s.push_str(&format!("\nProblem: {p}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, start_s: f64, end_s: f64, error: Option<&str>) -> Op {
        Op {
            client,
            kind: if client == 0 {
                ClientKind::Persistent
            } else {
                ClientKind::PerOp
            },
            write: true,
            start_s,
            end_s,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn failures_and_pauses_are_counted_from_the_event_to_five_seconds_after_whole() {
        let ops = vec![
            op(0, 9.0, 9.1, None),
            op(0, 10.2, 10.3, Some("57P01 terminating connection")),
            op(0, 10.4, 11.6, None),
            op(0, 11.7, 11.8, None),
            op(1, 9.5, 9.6, None),
            op(1, 10.1, 10.2, Some("08006 shutting down")),
            op(1, 12.0, 12.1, None),
            op(1, 30.0, 30.1, Some("after the span")),
        ];
        let node_loss = |span: Span| {
            evaluate(
                Stack::Patroni,
                EventKind::NodeLoss,
                "node1".into(),
                Some("node2".into()),
                span,
                &ops,
            )
        };
        let span = Span {
            at_s: 10.0,
            whole_s: 12.0,
            next_s: None,
        };
        let e = node_loss(span);
        assert_eq!((e.failed_persistent, e.failed_per_op), (1, 1));
        // Client 1: last success 9.6, next 12.1 → 2.5 s. Client 0: its last success 11.8,
        // none more until the span ends (whole 12.0 + 5 s = 17.0) → 5.2 s, the longest (in a
        // run the clients keep going, so such a tail is one period at most).
        assert!(
            (e.longest_pause_s - 5.2).abs() < 1e-9,
            "{}",
            e.longest_pause_s
        );
        assert_eq!(e.first_write_s.map(|s| (s * 10.0).round()), Some(16.0));
        assert_eq!(e.errors.len(), 2);
        // The next event begins at 14.0: the span ends there, and client 0's tail with it.
        let span = Span {
            next_s: Some(14.0),
            ..span
        };
        let e = node_loss(span);
        assert!(
            (e.longest_pause_s - 2.5).abs() < 1e-9,
            "{}",
            e.longest_pause_s
        );
    }
}
