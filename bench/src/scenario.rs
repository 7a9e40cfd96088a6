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
use crate::writer::{self, Ack, WriteError, Writer};

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
    /// The member whose PostgreSQL took the write that ended the window after a crash, or
    /// the last write of the run after a switchover (behind a proxy too: the server's port
    /// says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_over: Option<String>,
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
    /// How long the run waited for the first write after the event (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_s: Option<f64>,
    /// No write within the limit: when the member table showed a running leader again
    /// (seconds after the event; None if not within 600 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_seen_s: Option<f64>,
    /// The leader once the cluster was whole again after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_after: Option<String>,
    /// The leader's timeline (member table) before the run and once whole again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_timeline_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_timeline_after: Option<u64>,
    /// Succession scenarios: the leader change that came just before the measured crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<crate::succession::Prior>,
    /// Succession scenarios: whether every member's control file named the leader's
    /// timeline at the start (after the bench's CHECKPOINTs), None if not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at_start: Option<bool>,
    /// Succession scenarios: every live member's timelines just before the measured crash.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timelines_at_event: Vec<crate::succession::MemberTimelines>,
    /// Anything unusual (no write in time, the crashed node came back first, ...).
    pub note: Option<String>,
    /// Acknowledgement times relative to the event (seconds), for the plot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acks_rel_s: Vec<f64>,
}

/// Inflict `crash` on the current leader `runs` times in a row, appending each result to
/// `results` as soon as it is known (so an error later keeps the earlier runs). `limit`
/// bounds the wait for the first write after the event (default: 3 × ttl + 60 s).
pub async fn crash_runs<T: Target>(
    target: &T,
    crash: Crash,
    runs: usize,
    limit: Option<Duration>,
    next_run: &mut i32,
    results: &mut Vec<RunResult>,
) -> Result<(), RunError> {
    let limit = limit.unwrap_or_else(|| default_limit(target.profile()));
    for _ in 0..runs {
        *next_run += 1;
        let result = if crash.is_succession() {
            crate::succession::run_once(target, crash, *next_run, limit).await?
        } else {
            run_once(target, crash, *next_run, limit).await?
        };
        println!("{}", describe(&result));
        results.push(result);
    }
    Ok(())
}

/// How long a run waits for the first write after the event unless told: 3 × ttl + 60 s.
pub fn default_limit(profile: Profile) -> Duration {
    Duration::from_secs_f64(profile.effective_timing().ttl * 3.0 + 60.0)
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

/// Every member and the port of its PostgreSQL, to name the member that took a write.
pub fn member_ports<T: Target>(target: &T) -> Vec<(String, u16)> {
    target
        .members()
        .into_iter()
        .map(|m| {
            let port = target.member_endpoint(&m).port;
            (m, port)
        })
        .collect()
}

/// Wait until the client writes steadily to the leader, then start measuring.
pub async fn start_writer<T: Target>(
    target: &T,
    leader: &str,
    run: i32,
) -> Result<(Writer, String), RunError> {
    let endpoints = target.write_endpoints(leader);
    let steady_member = endpoints
        .first()
        .map(|e| e.member.clone())
        .unwrap_or_default();
    let writer = Writer::start(endpoints, run, WRITE_PERIOD);
    wait_steady(&writer, &steady_member, Duration::from_secs(30)).await?;
    Ok((writer, steady_member))
}

async fn run_once<T: Target>(
    target: &T,
    crash: Crash,
    run: i32,
    limit: Duration,
) -> Result<RunResult, RunError> {
    let profile = target.profile();
    let system = target.system();
    let leader = target.wait_whole(target.whole_limit()).await?;
    let timeline_before = leader_timeline(target, &leader).await;
    let (writer, _) = start_writer(target, &leader, run).await?;

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
    let mut event_at = Instant::now();
    let mut note = None;
    if crash.is_switchover() {
        if let Err(e) = target.switchover(&leader, candidate.as_deref()).await {
            note = Some(format!("switchover command failed: {e}"));
        }
    } else {
        event_at = crash::inflict(target, &leader, crash).await?;
    }
    let revive = if crash.is_node_crash() {
        vec![leader.clone()]
    } else {
        Vec::new()
    };
    let mut result = conclude(
        target,
        writer,
        Event {
            crash,
            run,
            leader: leader.clone(),
            candidate,
            event_at,
            note,
            revive,
        },
        limit,
    )
    .await?;
    result.leader_timeline_before = timeline_before;
    if crash.is_switchover() {
        result.rewound = Some(log_since(&log, log_offset).contains(rewind_marker));
    }
    Ok(result)
}

/// What happened to the leader, for [`conclude`].
pub struct Event {
    pub crash: Crash,
    pub run: i32,
    /// The leader the event hit.
    pub leader: String,
    /// A switchover's named target.
    pub candidate: Option<String>,
    /// When the kill signals were sent or the switchover command started.
    pub event_at: Instant,
    pub note: Option<String>,
    /// Members whose node was crashed in this run and must be brought back afterwards.
    pub revive: Vec<String>,
}

/// After the event: keep writing until the first write after it and 2 s without failure
/// (within `limit`), stop the client, bring crashed nodes back, and measure.
pub async fn conclude<T: Target>(
    target: &T,
    writer: Writer,
    ev: Event,
    limit: Duration,
) -> Result<RunResult, RunError> {
    let Event {
        crash,
        run,
        leader,
        candidate,
        event_at,
        note,
        revive,
    } = ev;
    let ports = member_ports(target);
    let timing = target.profile().effective_timing();
    // A switchover without a candidate is decided within the hand-over period (2 × ttl).
    let give_up_handover = Duration::from_secs_f64(2.0 * timing.ttl + 10.0);
    let mut measured = None;
    while event_at.elapsed() < limit {
        if let Some(g) = gap::measure(&writer.acks(), event_at) {
            measured = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Keep writing until 2 s passed without a failure (the proxy may still send some
    // writes to the old leader), within the limit; after a switchover, also until another
    // member (the candidate, if named) took a write.
    while measured.is_some() && event_at.elapsed() < limit {
        let handed_over = !crash.is_switchover()
            || handed_over(
                &writer.acks(),
                event_at,
                &ports,
                &leader,
                candidate.as_deref(),
            )
            || (candidate.is_none() && event_at.elapsed() > give_up_handover);
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
    let (acks, failures) = writer.stop_with_failures().await;
    let after: Vec<&writer::Failure> = failures.iter().filter(|f| f.at >= event_at).collect();
    let last_failure = after.iter().map(|f| f.at).max();
    let clean_at = acks
        .iter()
        .filter(|a| a.sent >= event_at && last_failure.is_none_or(|f| a.sent >= f))
        .map(|a| a.at)
        .min();

    let mut result = RunResult {
        system: target.system(),
        profile: target.profile(),
        crash,
        run,
        leader_before: leader.clone(),
        candidate: candidate.clone(),
        member_after: None,
        took_over: None,
        gap_s: None,
        crash_to_write_s: None,
        clean_s: clean_at.map(|c| (c - event_at).as_secs_f64()),
        failed_statements: after.len(),
        failed_writes: after.iter().filter(|f| f.op_failed).count(),
        lost_acked: None,
        rewound: None,
        old_leader_streams: None,
        limit_s: Some(limit.as_secs_f64()),
        leader_seen_s: None,
        leader_after: None,
        leader_timeline_before: None,
        leader_timeline_after: None,
        prior: None,
        settled_at_start: None,
        timelines_at_event: Vec::new(),
        note,
        acks_rel_s: acks.iter().map(|a| rel(a.at, event_at)).collect(),
    };
    for member in &revive {
        target.revive(member).await?;
    }
    let Some(g) = measured else {
        result.note = Some(format!(
            "no write succeeded within {} s of the event",
            limit.as_secs()
        ));
        // Measure how long the cluster stayed leaderless after all (the next run needs a
        // whole cluster anyway), from the member table.
        result.leader_seen_s = wait_leader(target, event_at, LEADERLESS_LIMIT).await;
        if let Some(s) = result.leader_seen_s {
            println!(
                "[{} {} {} run {run}] no write within {} s; `list` showed a running leader {s:.1} s after the event",
                result.system.name(),
                result.profile.name(),
                crash.name(),
                limit.as_secs()
            );
        }
        if let Ok(l) = target
            .wait_whole(target.whole_limit() + LEADERLESS_LIMIT)
            .await
        {
            result.leader_timeline_after = leader_timeline(target, &l).await;
            result.leader_after = Some(l);
        }
        return Ok(result);
    };
    let longest = gap::longest_gap(&acks, event_at).unwrap_or(g.gap);
    result.gap_s = Some(longest.max(g.gap).as_secs_f64());
    result.crash_to_write_s = Some(g.crash_to_write.as_secs_f64());
    // After a crash, the member that took the write ending the window (a write begun just
    // as the signals went out may still reach the dying leader); after a switchover (the
    // old leader keeps taking writes for a while), the one that took the last.
    let taker = if crash.is_switchover() {
        acks.iter()
            .filter(|a| a.sent >= event_at)
            .max_by_key(|a| a.at)
    } else {
        gap::after_longest_gap(&acks, event_at)
    };
    result.took_over = taker.and_then(|a| server_member(a, &ports));
    if crash.is_node_crash() && result.took_over.as_deref() == Some(leader.as_str()) {
        result.note = Some("the crashed node came back before any other member took writes".into());
    }
    let now_leader = match target.wait_whole(target.whole_limit()).await {
        Ok(l) => l,
        Err(e) if crash.is_switchover() => {
            result.old_leader_streams = Some(false);
            result.note = Some(format!("not whole after the switchover: {e}"));
            result.member_after = Some(g.member_after);
            return Ok(result);
        }
        Err(e) => return Err(e),
    };
    result.leader_timeline_after = leader_timeline(target, &now_leader).await;
    result.leader_after = Some(now_leader.clone());
    let writable = if target.members().contains(&g.member_after) {
        g.member_after.clone()
    } else {
        // Through a proxy: the member that leads once the cluster is whole again.
        now_leader.clone()
    };
    if crash.is_switchover() {
        result.old_leader_streams = Some(now_leader != leader);
        match candidate.as_deref() {
            Some(c) if c != now_leader => {
                result.note = Some(format!(
                    "{now_leader} leads after the switchover, not the candidate"
                ))
            }
            None if now_leader == leader => {
                result.note = Some(format!(
                    "{leader}, the old leader, leads again after the switchover"
                ))
            }
            _ => {}
        }
    }
    match writer::stored_seqs(&target.member_endpoint(&writable), run).await {
        Ok(stored) => result.lost_acked = Some(gap::lost(&g.acked_before, &stored).len()),
        Err(e) => tracing::warn!(run, "cannot count lost writes: {e}"),
    }
    result.member_after = Some(g.member_after);
    Ok(result)
}

/// How long a run that got no write in time waits for the cluster to elect a leader again.
const LEADERLESS_LIMIT: Duration = Duration::from_secs(600);

/// The member whose PostgreSQL took `ack` (its server port), else the endpoint written to
/// when that is a member.
pub fn server_member(ack: &Ack, ports: &[(String, u16)]) -> Option<String> {
    let by_port = ack
        .port
        .and_then(|p| ports.iter().find(|(_, q)| *q == p).map(|(m, _)| m.clone()));
    by_port.or_else(|| {
        ports
            .iter()
            .any(|(m, _)| *m == ack.member)
            .then(|| ack.member.clone())
    })
}

/// After a switchover begun at `event`: a write begun since then went to the candidate (or,
/// with none named, to any member but the old leader). True when no write says which
/// member took it (nothing to wait for).
pub fn handed_over(
    acks: &[Ack],
    event: Instant,
    ports: &[(String, u16)],
    leader: &str,
    candidate: Option<&str>,
) -> bool {
    let members: Vec<Option<String>> = acks
        .iter()
        .filter(|a| a.sent >= event)
        .map(|a| server_member(a, ports))
        .collect();
    if !members.is_empty() && members.iter().all(Option::is_none) {
        return true;
    }
    members.iter().flatten().any(|m| match candidate {
        Some(c) => m == c,
        None => m != leader,
    })
}

/// The first write begun at or after `since` that a member satisfying `pick` took.
pub fn first_write_on<'a>(
    acks: &'a [Ack],
    since: Instant,
    ports: &[(String, u16)],
    pick: impl Fn(&str) -> bool,
) -> Option<(&'a Ack, String)> {
    acks.iter()
        .filter(|a| a.sent >= since)
        .filter_map(|a| server_member(a, ports).map(|m| (a, m)))
        .filter(|(_, m)| pick(m))
        .min_by_key(|(a, _)| a.at)
}

/// Poll the member table until it shows a running leader; seconds since `since`.
async fn wait_leader<T: Target>(target: &T, since: Instant, limit: Duration) -> Option<f64> {
    while since.elapsed() < limit {
        if let Ok(rows) = target.list().await {
            if rows
                .iter()
                .any(|r| r.role == "Leader" && r.state == "running")
            {
                return Some(since.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// The leader's timeline as the member table shows it.
pub async fn leader_timeline<T: Target>(target: &T, leader: &str) -> Option<u64> {
    let rows = target.list().await.ok()?;
    rows.iter().find(|r| r.member == leader).and_then(|r| r.tl)
}

pub fn rel(t: Instant, event: Instant) -> f64 {
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

pub async fn wait_steady(writer: &Writer, leader: &str, limit: Duration) -> Result<(), RunError> {
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
    let mut extra = String::new();
    if let Some(m) = r
        .took_over
        .as_deref()
        .filter(|m| Some(*m) != r.member_after.as_deref())
    {
        extra.push_str(&format!(", taken by {m}"));
    }
    if let Some(l) = &r.leader_after {
        let tl = |t: Option<u64>| t.map_or("?".to_string(), |t| t.to_string());
        extra.push_str(&format!(
            ", leader once whole {l} (TL {} -> {})",
            tl(r.leader_timeline_before),
            tl(r.leader_timeline_after)
        ));
    }
    if r.settled_at_start == Some(false) {
        extra.push_str(", control files NOT current at the start");
    }
    if let Some(p) = &r.prior {
        extra.push_str(&format!(", {}", crate::succession::describe_prior(p)));
    }
    if !r.timelines_at_event.is_empty() {
        extra.push_str(&format!(
            ", timelines at the kill: {}",
            crate::succession::describe_timelines(&r.timelines_at_event)
        ));
    }
    format!(
        "[{} {} {} run {}] leader {} -> first write on {}: gap {}, event to write {}, all writes ok after {}, failed statements {}, failed writes {}, acked writes lost {}{switchover}{extra}{}",
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
