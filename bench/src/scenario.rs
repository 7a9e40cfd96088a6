//! One benchmark run: wait for a whole cluster, write steadily to the leader, crash it,
//! and measure how long the client could not write. Also the agents' memory snapshot.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{ClusterError, LocalCluster};
use crate::crash::{self, Crash, CrashError};
use crate::gap;
use crate::memory::{self, MemoryError};
use crate::profile::Profile;
use crate::target::{System, Target};
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
    #[error(transparent)]
    Patroni(#[from] crate::patroni::PatroniError),
    #[error("the client could not write steadily to the leader {leader} within {secs} s before the crash")]
    NotSteady { leader: String, secs: u64 },
}

/// The outcome of one crash or switchover.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub system: System,
    pub profile: Profile,
    pub crash: Crash,
    pub run: i32,
    pub leader_before: String,
    /// The switchover's target.
    pub candidate: Option<String>,
    /// The member that took the first write after the event (None: no write in time; the
    /// proxy's name when the client writes through one).
    pub member_after: Option<String>,
    /// The write-unavailability window: the longest interval between consecutive
    /// acknowledged writes from the last one before the event on (seconds).
    pub gap_s: Option<f64>,
    /// Event to first write after, seconds.
    pub crash_to_write_s: Option<f64>,
    /// Event to the first acknowledged write after the last failed one: from then on every
    /// write succeeded (seconds).
    pub clean_s: Option<f64>,
    /// Statements that failed after the event (each try on each member counts).
    pub failed_statements: usize,
    /// Writes (50 ms ticks) that no member took after the event: failed client operations.
    pub failed_writes: usize,
    /// Writes acknowledged before the event that the writable member lacks afterwards.
    pub lost_acked: Option<usize>,
    /// Switchover: whether the old leader's agent log shows a pg_rewind after the event.
    pub rewound: Option<bool>,
    /// Switchover: whether the old leader streams from the new one afterwards.
    pub old_leader_streams: Option<bool>,
    /// Anything unusual (no write in time, the crashed node came back first, ...).
    pub note: Option<String>,
    /// Acknowledgement times relative to the event (seconds), for the plot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acks_rel_s: Vec<f64>,
}

/// Inflict `crash` on the current leader `runs` times in a row, appending each result to
/// `results` as soon as it is known (so an error later keeps the earlier runs).
pub async fn crash_runs<T: Target>(
    target: &T,
    crash: Crash,
    runs: usize,
    next_run: &mut i32,
    results: &mut Vec<RunResult>,
) -> Result<(), RunError> {
    for _ in 0..runs {
        *next_run += 1;
        let result = run_once(target, crash, *next_run).await?;
        println!("{}", describe(&result));
        results.push(result);
    }
    Ok(())
}

/// The replica a switchover in run `run` hands over to: the replicas take turns.
pub fn candidate_for(members: &[String], leader: &str, run: i32) -> Option<String> {
    let replicas: Vec<&String> = members.iter().filter(|m| *m != leader).collect();
    if replicas.is_empty() {
        return None;
    }
    let i = run.unsigned_abs() as usize % replicas.len();
    Some(replicas[i].clone())
}

async fn run_once<T: Target>(target: &T, crash: Crash, run: i32) -> Result<RunResult, RunError> {
    let profile = target.profile();
    let system = target.system();
    let leader = target.wait_whole(target.whole_limit()).await?;
    let endpoints = target.write_endpoints(&leader);
    let steady_member = endpoints
        .first()
        .map(|e| e.member.clone())
        .unwrap_or_default();
    let writer = Writer::start(endpoints, run, WRITE_PERIOD);
    wait_steady(&writer, &steady_member, Duration::from_secs(30)).await?;

    let (log, rewind_marker) = target.agent_log(&leader);
    let log_offset = std::fs::metadata(&log).map_or(0, |m| m.len());
    let candidate = match crash {
        Crash::Switchover => candidate_for(&target.members(), &leader, run),
        _ => None,
    };
    tracing::info!(
        system = system.name(),
        profile = profile.name(),
        run,
        "{} of leader {leader}",
        crash.name()
    );
    let event_at = Instant::now();
    let mut note = None;
    match &candidate {
        Some(c) => {
            if let Err(e) = target.switchover(&leader, c).await {
                note = Some(format!("switchover command failed: {e}"));
            }
        }
        None => crash::inflict(target, &leader, crash).await?,
    }

    let timing = profile.effective_timing();
    let limit = Duration::from_secs_f64(timing.ttl * 3.0 + 60.0);
    let mut measured = None;
    while event_at.elapsed() < limit {
        if let Some(g) = gap::measure(&writer.acks(), event_at) {
            measured = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Keep writing until 2 s passed without a failure (the proxy may still send some
    // writes to the old leader), within the limit; after a switchover, writing directly
    // to the members, also until the candidate took a write.
    let direct = target.members().contains(&steady_member);
    while measured.is_some() && event_at.elapsed() < limit {
        let handed_over = !direct
            || candidate.as_ref().is_none_or(|c| {
                writer
                    .acks()
                    .iter()
                    .any(|a| a.sent >= event_at && a.member == *c)
            });
        // 2 s without a failure, counted from the event or the last failure after it: a
        // backend orphaned by a killed postmaster may still take a write or two before
        // the outage shows.
        let since = writer
            .failures()
            .last()
            .map(|f| f.at)
            .filter(|at| *at >= event_at)
            .unwrap_or(event_at);
        let quiet = handed_over && since.elapsed() >= Duration::from_secs(2);
        let newest_ack = writer.acks().last().map(|a| a.at);
        if quiet && newest_ack.is_some_and(|a| a.elapsed() < Duration::from_secs(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acks = writer.stop_with_failures().await;
    let (acks, failures) = acks;
    let after: Vec<&writer::Failure> = failures.iter().filter(|f| f.at >= event_at).collect();
    let last_failure = after.iter().map(|f| f.at).max();
    let clean_at = acks
        .iter()
        .filter(|a| a.sent >= event_at && last_failure.is_none_or(|f| a.sent >= f))
        .map(|a| a.at)
        .min();

    let mut result = RunResult {
        system,
        profile,
        crash,
        run,
        leader_before: leader.clone(),
        candidate: candidate.clone(),
        member_after: None,
        gap_s: None,
        crash_to_write_s: None,
        clean_s: clean_at.map(|c| (c - event_at).as_secs_f64()),
        failed_statements: after.len(),
        failed_writes: after.iter().filter(|f| f.op_failed).count(),
        lost_acked: None,
        rewound: None,
        old_leader_streams: None,
        note,
        acks_rel_s: acks.iter().map(|a| rel(a.at, event_at)).collect(),
    };
    if crash == Crash::Node {
        target.revive(&leader).await?;
    }
    let Some(g) = measured else {
        result.note = Some(format!(
            "no write succeeded within {} s of the event",
            limit.as_secs()
        ));
        return Ok(result);
    };
    let longest = gap::longest_gap(&acks, event_at).unwrap_or(g.gap);
    result.gap_s = Some(longest.max(g.gap).as_secs_f64());
    result.crash_to_write_s = Some(g.crash_to_write.as_secs_f64());
    if crash == Crash::Node && g.member_after == leader {
        result.note = Some("the crashed node came back before any other member took writes".into());
    }
    let members = target.members();
    let writable = if members.contains(&g.member_after) {
        g.member_after.clone()
    } else {
        // Through a proxy: the member that leads once the cluster is whole again.
        target.wait_whole(target.whole_limit()).await?
    };
    if crash == Crash::Switchover {
        let now_leader = target.wait_whole(target.whole_limit()).await;
        result.old_leader_streams = Some(now_leader.as_ref().is_ok_and(|l| *l != leader));
        result.rewound = Some(log_since(&log, log_offset).contains(rewind_marker));
        if let Ok(l) = now_leader {
            if candidate.as_deref() != Some(l.as_str()) {
                result.note = Some(format!("{l} leads after the switchover, not the candidate"));
            }
        }
    }
    match writer::stored_seqs(&target.member_endpoint(&writable), run).await {
        Ok(stored) => result.lost_acked = Some(gap::lost(&g.acked_before, &stored).len()),
        Err(e) => tracing::warn!(run, "cannot count lost writes: {e}"),
    }
    result.member_after = Some(g.member_after);
    Ok(result)
}

fn rel(t: Instant, event: Instant) -> f64 {
    if t >= event {
        (t - event).as_secs_f64()
    } else {
        -(event - t).as_secs_f64()
    }
}

/// The part of a log file written after `offset` bytes (empty if unreadable).
fn log_since(path: &std::path::Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
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
    let switchover = match (r.rewound, r.old_leader_streams) {
        (Some(rewound), Some(streams)) => format!(
            ", old leader streams again {}, pg_rewind ran {}",
            if streams { "yes" } else { "NO" },
            if rewound { "YES" } else { "no" }
        ),
        _ => String::new(),
    };
    format!(
        "[{} {} {} run {}] leader {} -> first write on {}: gap {}, event to write {}, all writes ok after {}, failed statements {}, failed writes {}, acked writes lost {}{switchover}{}",
        r.system.name(),
        r.profile.name(),
        r.crash.name(),
        r.run,
        r.leader_before,
        r.member_after.as_deref().unwrap_or("-"),
        secs(r.gap_s),
        secs(r.crash_to_write_s),
        secs(r.clean_s),
        r.failed_statements,
        r.failed_writes,
        r.lost_acked.map_or("-".to_string(), |n| n.to_string()),
        r.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
    )
}

/// One agent's memory at steady state.
#[derive(Debug, Clone, Serialize)]
pub struct AgentMemory {
    pub system: System,
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
            system: System::Pgbaton,
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
