//! `pgbaton-bench catchup`: how long a replica that fell far behind takes to stream again,
//! by each way pgbaton brings it back. A two-member `local up` cluster; the replica's agent
//! is frozen (SIGSTOP) and its PostgreSQL stopped, its member key expires, the leader writes
//! `--behind-mb` of WAL and checkpoints; then the agent resumes and the clock runs until the
//! replica streams and has replayed the leader's position at the resume.
//!
//! - `slot`: defaults (`member_slots_ttl` 30 min): the leader keeps the replica's slot and
//!   with it every segment; the replica streams them.
//! - `archive`: `local up --archive` (pgBackRest) and `member_slots_ttl: 0`: the slot goes
//!   with the member key, the leader recycles the WAL, the replica restores it from the
//!   archive (`restore_command`), then streams.
//! - `reclone`: `member_slots_ttl: 0` and no archive: the WAL is gone; the agent moves the
//!   data directory aside and clones the leader again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::profile::Profile;
use crate::stats::{summarize, Summary};

/// How the replica is expected to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Method {
    Slot,
    Archive,
    Reclone,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Slot => "slot",
            Method::Archive => "archive",
            Method::Reclone => "reclone",
        }
    }
}

pub struct CatchupPlan {
    pub pgbaton: PathBuf,
    pub dir: PathBuf,
    pub base_port: u16,
    pub methods: Vec<Method>,
    pub runs: usize,
    pub behind_mb: u64,
    pub limit: Duration,
}

/// One replica brought back.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub method: Method,
    /// WAL the leader wrote while the replica was away, in MB.
    pub behind_mb: f64,
    /// From the agent's resume to streaming with the leader's position replayed.
    pub seconds: Option<f64>,
    /// What the replica's directory and log show it did: `slot`, `archive` or `reclone`.
    pub observed: String,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub runs: Vec<Run>,
}

/// Rounds interleave the methods: round 1 runs each once, then round 2, and so on.
pub async fn run(plan: &CatchupPlan) -> Outcome {
    let mut out = Outcome::default();
    for round in 1..=plan.runs {
        for (i, method) in plan.methods.iter().copied().enumerate() {
            tracing::info!(round, method = method.name(), "catch-up run");
            let run = match one(plan, i as u16, method).await {
                Ok(run) => run,
                Err(error) => Run {
                    method,
                    behind_mb: 0.0,
                    seconds: None,
                    observed: "-".into(),
                    error: Some(error),
                },
            };
            tracing::info!(?run, "catch-up run done");
            out.runs.push(run);
        }
    }
    out
}

async fn one(plan: &CatchupPlan, i: u16, method: Method) -> Result<Run, String> {
    let spec = ClusterSpec {
        pgbaton: plan.pgbaton.clone(),
        dir: plan.dir.join(format!("catchup-{}", method.name())),
        base_port: plan.base_port + 40 * i,
        members: 2,
        profile: Profile::Default,
        restart_delay: 10.0,
        synchronous: "off",
        via_router: false,
        pool_mode: None,
        archive: method == Method::Archive,
    };
    let cluster = LocalCluster::start(spec).await.map_err(|e| e.to_string())?;
    let leader = cluster
        .wait_whole(Duration::from_secs(180))
        .await
        .map_err(|e| e.to_string())?;
    let replica = cluster
        .member_names()
        .into_iter()
        .find(|m| *m != leader)
        .ok_or("no replica")?;
    let port = |m: &str| {
        cluster
            .endpoints_from(m)
            .first()
            .map(|e| e.port)
            .unwrap_or_default()
    };
    if method != Method::Slot {
        cluster
            .edit_config(&["-s", "member_slots_ttl=0"])
            .await
            .map_err(|e| e.to_string())?;
    }
    let lead = connect(port(&leader)).await?;

    // The replica goes away: agent frozen, PostgreSQL stopped cleanly.
    let agent = Pid::from_raw(cluster.agent_pid(&replica).map_err(|e| e.to_string())?);
    let postmaster = cluster
        .postmaster_pid(&replica)
        .map_err(|e| e.to_string())?;
    kill(agent, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP {replica}'s agent: {e}"))?;
    let resumed = async {
        kill(Pid::from_raw(postmaster), Signal::SIGINT)
            .map_err(|e| format!("stopping {replica}'s PostgreSQL: {e}"))?;
        // PostgreSQL removes postmaster.pid when it has shut down (the process itself stays
        // a zombie: its parent, the agent, is stopped).
        let pid_file = cluster.member_dir(&replica).join("data/postmaster.pid");
        wait_for(
            Duration::from_secs(60),
            "the replica's PostgreSQL stops",
            || async { !pid_file.exists() },
        )
        .await?;
        wait_for(
            Duration::from_secs(60),
            "the replica's member key expires",
            || async {
                cluster
                    .list()
                    .await
                    .is_ok_and(|rows| rows.iter().all(|r| r.member != replica))
            },
        )
        .await?;
        if method != Method::Slot {
            let sql =
                format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{replica}'");
            wait_for(
                Duration::from_secs(60),
                "the leader drops the replica's slot",
                || async { scalar(&lead, &sql).await.is_ok_and(|n| n == "0") },
            )
            .await?;
        }
        let behind = write_wal(&lead, plan.behind_mb).await?;
        let target = scalar(&lead, "SELECT pg_current_wal_lsn()::text").await?;
        Ok::<_, String>((behind, target))
    }
    .await;
    // Resumed whatever happened, so that stopping the cluster is clean.
    kill(agent, Signal::SIGCONT).map_err(|e| format!("SIGCONT {replica}'s agent: {e}"))?;
    let (behind, target) = resumed?;
    let started = Instant::now();
    let check = format!(
        "SELECT (pg_last_wal_replay_lsn() >= '{target}'::pg_lsn \
           AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'))::text"
    );
    let replica_port = port(&replica);
    let caught_up = wait_for(plan.limit, "the replica streams again", || async {
        match connect(replica_port).await {
            Ok(c) => scalar(&c, &check).await.is_ok_and(|v| v == "true"),
            Err(_) => false,
        }
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let observed = observed_path(&cluster.member_dir(&replica));
    Ok(Run {
        method,
        behind_mb: behind as f64 / 1e6,
        seconds: caught_up.is_ok().then_some(seconds),
        observed,
        error: caught_up.err(),
    })
}

/// What the replica did: a `data.wal-missing.*` directory means a re-clone; "restored log
/// file" in its PostgreSQL log means WAL came from the archive; otherwise the slot.
fn observed_path(member_dir: &std::path::Path) -> String {
    let recloned = std::fs::read_dir(member_dir)
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("data.wal-missing.")
            })
        })
        .unwrap_or(false);
    if recloned {
        return "reclone".into();
    }
    let log = std::fs::read_to_string(member_dir.join("postgresql.log")).unwrap_or_default();
    if log.contains("restored log file") {
        "archive".into()
    } else {
        "slot".into()
    }
}

/// A superuser connection to a `local up` member or router port.
pub(crate) async fn connect(port: u16) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password("postgres")
        .dbname("postgres")
        .application_name("pgbaton-bench")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

async fn scalar(client: &Client, sql: &str) -> Result<String, String> {
    let rows = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| format!("{sql}: no row"))
}

/// Write at least `mb` MB of WAL on the leader (rows of 1 kB, truncated after each 64 MB
/// so the table stays small), then checkpoint twice so that what nothing keeps is recycled.
/// Returns the bytes of WAL written.
async fn write_wal(lead: &Client, mb: u64) -> Result<u64, String> {
    async fn lsn(c: &Client) -> Result<u64, String> {
        scalar(
            c,
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint::text",
        )
        .await?
        .parse::<u64>()
        .map_err(|e| e.to_string())
    }
    lead.batch_execute("CREATE TABLE IF NOT EXISTS catchup_fill (id int, pad text)")
        .await
        .map_err(|e| format!("create catchup_fill: {e}"))?;
    let start = lsn(lead).await?;
    let goal = mb * 1_000_000;
    while lsn(lead).await? - start < goal {
        lead.batch_execute(
            "INSERT INTO catchup_fill SELECT g, repeat('x', 1000) FROM generate_series(1, 60000) g;
             TRUNCATE catchup_fill;",
        )
        .await
        .map_err(|e| format!("writing WAL: {e}"))?;
    }
    lead.batch_execute("SELECT pg_switch_wal(); CHECKPOINT; SELECT pg_switch_wal(); CHECKPOINT;")
        .await
        .map_err(|e| format!("checkpoint: {e}"))?;
    Ok(lsn(lead).await? - start)
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {} s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per method: runs, median / min / max seconds, MB behind, and what the replica did.
pub fn report(out: &Outcome, plan: &CatchupPlan) -> String {
    let mut md = String::from(
        "| method | runs | median s | min s | max s | WAL behind (MB, median) | what the replica did |\n|---|---|---|---|---|---|---|\n",
    );
    for method in &plan.methods {
        let runs: Vec<&Run> = out.runs.iter().filter(|r| r.method == *method).collect();
        let secs: Vec<f64> = runs.iter().filter_map(|r| r.seconds).collect();
        let behind: Vec<f64> = runs.iter().map(|r| r.behind_mb).collect();
        let fmt = |s: Option<Summary>, f: fn(&Summary) -> f64| {
            s.map_or("-".to_string(), |s| format!("{:.1}", f(&s)))
        };
        let sum = summarize(&secs);
        let observed: Vec<&str> = runs.iter().map(|r| r.observed.as_str()).collect();
        md.push_str(&format!(
            "| {} | {} ({} caught up) | {} | {} | {} | {} | {} |\n",
            method.name(),
            runs.len(),
            secs.len(),
            fmt(sum, |s| s.median),
            fmt(sum, |s| s.min),
            fmt(sum, |s| s.max),
            fmt(summarize(&behind), |s| s.median),
            observed.join(", "),
        ));
    }
    for r in out.runs.iter().filter(|r| r.error.is_some()) {
        md.push_str(&format!(
            "\n- {}: {}",
            r.method.name(),
            r.error.as_deref().unwrap_or_default()
        ));
    }
    md
}
