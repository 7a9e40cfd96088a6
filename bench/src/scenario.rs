//! One benchmark run: wait for a whole cluster, write steadily to the leader, crash it,
//! and measure how long the client could not write. Also the agents' memory snapshot.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{ClusterError, LocalCluster};
use crate::crash::{self, Crash, CrashError};
use crate::gap;
use crate::memory::{self, MemoryError};
use crate::profile::Profile;
use crate::writer::{self, WriteError, Writer};

/// The client's write period.
pub const WRITE_PERIOD: Duration = Duration::from_millis(50);
/// Writes that must land on the leader, in a row, before the crash.
const STEADY_WRITES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Crash(#[from] CrashError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("the client could not write steadily to the leader {leader} within {secs} s before the crash")]
    NotSteady { leader: String, secs: u64 },
}

/// The outcome of one crash.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub profile: Profile,
    pub crash: Crash,
    pub run: i32,
    pub leader_before: String,
    /// The member that took the first write after the crash (None: no write in time).
    pub member_after: Option<String>,
    /// Last write before to first write after, seconds.
    pub gap_s: Option<f64>,
    /// Crash to first write after, seconds.
    pub crash_to_write_s: Option<f64>,
    /// Writes acknowledged before the crash that the member writable afterwards lacks.
    pub lost_acked: Option<usize>,
    /// Anything unusual (no write in time, the crashed node came back first, ...).
    pub note: Option<String>,
}

/// Crash the current leader `runs` times in a row, appending each result to `results` as
/// soon as it is known (so an error later keeps the earlier runs).
pub async fn crash_runs(
    cluster: &LocalCluster,
    crash: Crash,
    runs: usize,
    next_run: &mut i32,
    results: &mut Vec<RunResult>,
) -> Result<(), RunError> {
    for _ in 0..runs {
        *next_run += 1;
        let result = crash_once(cluster, crash, *next_run).await?;
        println!("{}", describe(&result));
        results.push(result);
    }
    Ok(())
}

fn whole_limit(cluster: &LocalCluster) -> Duration {
    Duration::from_secs_f64(cluster.spec.restart_delay + 180.0)
}

async fn crash_once(cluster: &LocalCluster, crash: Crash, run: i32) -> Result<RunResult, RunError> {
    let profile = cluster.spec.profile;
    let leader = cluster.wait_whole(whole_limit(cluster)).await?;
    let writer = Writer::start(cluster.endpoints_from(&leader), run, WRITE_PERIOD);
    wait_steady(&writer, &leader, Duration::from_secs(30)).await?;

    tracing::info!(
        profile = profile.name(),
        run,
        "crash: {} of leader {leader}",
        crash.name()
    );
    crash::inflict(cluster, &leader, crash)?;
    let crashed_at = Instant::now();

    let timing = profile.effective_timing();
    let limit = Duration::from_secs_f64(timing.ttl * 3.0 + 60.0);
    let mut measured = None;
    while crashed_at.elapsed() < limit {
        if let Some(g) = gap::measure(&writer.acks(), crashed_at) {
            measured = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A second of writes after the first one, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;

    let mut result = RunResult {
        profile,
        crash,
        run,
        leader_before: leader.clone(),
        member_after: None,
        gap_s: None,
        crash_to_write_s: None,
        lost_acked: None,
        note: None,
    };
    let Some(g) = measured else {
        result.note = Some(format!(
            "no write succeeded within {} s of the crash",
            limit.as_secs()
        ));
        return Ok(result);
    };
    result.gap_s = Some(g.gap.as_secs_f64());
    result.crash_to_write_s = Some(g.crash_to_write.as_secs_f64());
    if crash == Crash::Node && g.member_after == leader {
        result.note = Some("the crashed node came back before any other member took writes".into());
    }
    let after = cluster.endpoints_from(&g.member_after).into_iter().next();
    if let Some(endpoint) = after {
        match writer::stored_seqs(&endpoint, run).await {
            Ok(stored) => result.lost_acked = Some(gap::lost(&g.acked_before, &stored).len()),
            Err(e) => tracing::warn!(run, "cannot count lost writes: {e}"),
        }
    }
    result.member_after = Some(g.member_after);
    Ok(result)
}

async fn wait_steady(writer: &Writer, leader: &str, limit: Duration) -> Result<(), RunError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if gap::steady_on(
            &writer.acks(),
            leader,
            STEADY_WRITES,
            Duration::from_millis(300),
        ) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(RunError::NotSteady {
        leader: leader.to_string(),
        secs: limit.as_secs(),
    })
}

/// One line per run, printed as it completes.
pub fn describe(r: &RunResult) -> String {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} s"));
    format!(
        "[{} {} run {}] leader {} -> first write on {}: gap {}, crash to write {}, acked writes lost {}{}",
        r.profile.name(),
        r.crash.name(),
        r.run,
        r.leader_before,
        r.member_after.as_deref().unwrap_or("-"),
        secs(r.gap_s),
        secs(r.crash_to_write_s),
        r.lost_acked.map_or("-".to_string(), |n| n.to_string()),
        r.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
    )
}

/// One agent's memory at steady state.
#[derive(Debug, Clone, Serialize)]
pub struct AgentMemory {
    pub profile: Profile,
    pub member: String,
    pub pid: i32,
    /// Seconds since the cluster came up.
    pub after_s: f64,
    pub rss_kb: u64,
    pub peak_kb: u64,
}

/// Wait until the cluster has run `settle` since it came up, then read every agent's VmRSS.
pub async fn memory_snapshot(
    cluster: &LocalCluster,
    settle: Duration,
) -> Result<Vec<AgentMemory>, RunError> {
    let wait = settle.saturating_sub(cluster.up_at.elapsed());
    tracing::info!(
        profile = cluster.spec.profile.name(),
        "letting the agents run {:.0} s more before reading their memory",
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
    let mut out = Vec::new();
    for member in cluster.member_names() {
        let pid = cluster.agent_pid(&member)?;
        let m = memory::read(pid)?;
        let entry = AgentMemory {
            profile: cluster.spec.profile,
            member,
            pid,
            after_s: cluster.up_at.elapsed().as_secs_f64(),
            rss_kb: m.rss_kb,
            peak_kb: m.peak_kb,
        };
        println!(
            "[{} memory] {} agent pid {} after {:.0} s: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            entry.profile.name(),
            entry.member,
            entry.pid,
            entry.after_s,
            entry.rss_kb as f64 / 1024.0,
            entry.peak_kb as f64 / 1024.0
        );
        out.push(entry);
    }
    Ok(out)
}
