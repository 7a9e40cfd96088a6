//! Faults soon after a timeline switch: a node crash of the leader a few seconds after it
//! took over, by a planned switchover (`switchover-then-node`, 3 s after its first write) or
//! by a failover (`node-twice`, 10 s after its first write). Until their next restartpoint
//! (up to checkpoint_timeout later) the replicas' control files still name the timeline
//! before the switch; a tool that reads a replica's timeline there thinks every survivor is
//! behind and elects nobody. The window measured is the one of the last crash.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crash::{self, Crash};
use crate::scenario::{self, Event, RunError, RunResult};
use crate::target::Target;
use crate::writer::{self, Ack};

/// The leader change just before the measured crash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prior {
    /// "switchover" or "node crash".
    pub event: String,
    /// The leader it hit.
    pub leader: String,
    /// The member that took the first write after it.
    pub new_leader: String,
    /// Its write-unavailability window, as far as the measured crash (seconds).
    pub window_s: Option<f64>,
    /// From the event to the new leader's first acknowledged write (seconds).
    pub first_write_s: f64,
    /// From that write to the measured crash (seconds).
    pub crash_after_s: f64,
}

/// What one member's PostgreSQL said about its timelines just before the measured crash.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MemberTimelines {
    pub member: String,
    pub in_recovery: Option<bool>,
    /// A primary: the timeline of the WAL it writes (from `pg_walfile_name`).
    pub wal_tl: Option<u32>,
    /// The control file's (last checkpoint or restartpoint), `pg_control_checkpoint()`.
    pub control_tl: Option<u32>,
    /// A replica: the WAL receiver's timeline, `pg_stat_wal_receiver.received_tli`.
    pub receiver_tl: Option<u32>,
    /// Why nothing could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const TIMELINES_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL \
     ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
     (SELECT timeline_id FROM pg_control_checkpoint()), \
     (SELECT received_tli FROM pg_stat_wal_receiver)";

/// A WAL file name's timeline part ("00000002") as a number.
pub fn hex_timeline(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim(), 16).ok()
}

/// One member's row of [`TIMELINES_SQL`] (text values as the simple protocol gives them).
pub fn parse_timelines(member: &str, values: [Option<&str>; 4]) -> MemberTimelines {
    let [recovery, wal, control, receiver] = values;
    let num = |v: Option<&str>| v.and_then(|t| t.trim().parse::<u32>().ok());
    MemberTimelines {
        member: member.to_string(),
        in_recovery: recovery.map(|v| v == "t"),
        wal_tl: wal.and_then(hex_timeline),
        control_tl: num(control),
        receiver_tl: num(receiver),
        error: None,
    }
}

/// True when some replica's control file names an older timeline than the primary writes:
/// the situation the scenario is about.
pub fn control_file_behind(timelines: &[MemberTimelines]) -> bool {
    let Some(primary) = timelines
        .iter()
        .filter(|t| t.in_recovery == Some(false))
        .find_map(|t| t.wal_tl)
    else {
        return false;
    };
    timelines
        .iter()
        .filter(|t| t.in_recovery == Some(true))
        .any(|t| t.control_tl.is_some_and(|c| c < primary))
}

/// "node2 primary TL 3 (control file 2); node1 replica control file TL 2, receiver TL 3".
pub fn describe_timelines(timelines: &[MemberTimelines]) -> String {
    let tl = |t: Option<u32>| t.map_or("?".to_string(), |t| t.to_string());
    timelines
        .iter()
        .map(|t| match (&t.error, t.in_recovery) {
            (Some(e), _) => format!("{} unreadable ({e})", t.member),
            (None, Some(false)) => format!(
                "{} primary TL {} (control file {})",
                t.member,
                tl(t.wal_tl),
                tl(t.control_tl)
            ),
            (None, _) => format!(
                "{} replica control file TL {}, receiver TL {}",
                t.member,
                tl(t.control_tl),
                tl(t.receiver_tl)
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "after a switchover node1 -> node2 (window 0.21 s, new leader's first write 1.10 s
/// after it, crash 3.00 s later)".
pub fn describe_prior(p: &Prior) -> String {
    format!(
        "after a {} {} -> {} (window {}, new leader's first write {:.2} s after it, crash {:.2} s later)",
        p.event,
        p.leader,
        p.new_leader,
        p.window_s.map_or("-".to_string(), |w| format!("{w:.2} s")),
        p.first_write_s,
        p.crash_after_s
    )
}

/// How long after the new leader's first write the measured crash comes.
pub fn pause_for(crash: Crash) -> Duration {
    match crash {
        Crash::NodeTwice => Duration::from_secs(10),
        _ => Duration::from_secs(3),
    }
}

async fn read_timelines<T: Target>(target: &T, member: &str) -> MemberTimelines {
    let failed = |e: String| MemberTimelines {
        member: member.to_string(),
        error: Some(e),
        ..MemberTimelines::default()
    };
    let client = match writer::connect(&target.member_endpoint(member)).await {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let messages = match tokio::time::timeout(
        Duration::from_secs(2),
        client.simple_query(TIMELINES_SQL),
    )
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return failed(e.to_string()),
        Err(_) => return failed("no answer within 2 s".into()),
    };
    for m in &messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
            return parse_timelines(member, [row.get(0), row.get(1), row.get(2), row.get(3)]);
        }
    }
    failed("no row".into())
}

/// Make every member's control file name the timeline it replays, as long after a switch:
/// CHECKPOINT on the leader, then, once each replica replayed that checkpoint, CHECKPOINT
/// on the replica (a restartpoint). Then only the run's own events are "recent". Returns
/// whether every member's control file then names the leader's timeline.
async fn settle<T: Target>(target: &T, leader: &str) -> Result<bool, String> {
    sql_owned(target, leader, "CHECKPOINT".into()).await?;
    let lsn = sql_owned(target, leader, "SELECT pg_current_wal_lsn()::text".into())
        .await?
        .ok_or("no LSN")?;
    let replicas: Vec<String> = target
        .members()
        .into_iter()
        .filter(|m| m != leader)
        .collect();
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let caught_up = sql_owned(
                target,
                r,
                format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            )
            .await?;
            if caught_up.as_deref() == Some("t") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{r} did not replay up to {lsn} within 20 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sql_owned(target, r, "CHECKPOINT".into()).await?;
    }
    let mut all = vec![read_timelines(target, leader).await];
    for r in &replicas {
        all.push(read_timelines(target, r).await);
    }
    Ok(control_files_current(&all))
}

async fn sql_owned<T: Target>(
    target: &T,
    member: &str,
    sql: String,
) -> Result<Option<String>, String> {
    let client = writer::connect(&target.member_endpoint(member))
        .await
        .map_err(|e| e.to_string())?;
    let rows = tokio::time::timeout(Duration::from_secs(30), client.simple_query(&sql))
        .await
        .map_err(|_| format!("{member}: no answer to {sql} within 30 s"))?
        .map_err(|e| format!("{member}: {e}"))?;
    Ok(rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

/// Every member's control file names the timeline the primary writes.
pub fn control_files_current(timelines: &[MemberTimelines]) -> bool {
    let Some(primary) = timelines
        .iter()
        .filter(|t| t.in_recovery == Some(false))
        .find_map(|t| t.wal_tl)
    else {
        return false;
    };
    timelines.iter().all(|t| t.control_tl == Some(primary))
}

/// Wait (within `limit` of `since`) for the first write begun after `since` that a member
/// other than `not` (or exactly `only`, when given) took.
async fn wait_first_write(
    writer: &writer::Writer,
    since: Instant,
    ports: &[(String, u16)],
    not: &str,
    only: Option<&str>,
    limit: Duration,
) -> Option<(Ack, String)> {
    while since.elapsed() < limit {
        let acks = writer.acks();
        let found = scenario::first_write_on(&acks, since, ports, |m| match only {
            Some(c) => m == c,
            None => m != not,
        });
        if let Some((a, m)) = found {
            return Some((a.clone(), m));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// One run of a succession scenario.
pub async fn run_once<T: Target>(
    target: &T,
    crash: Crash,
    run: i32,
    limit: Duration,
) -> Result<RunResult, RunError> {
    let first = target.wait_whole(target.whole_limit()).await?;
    let settled = match settle(target, &first).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(run, "could not settle the control files: {e}");
            None
        }
    };
    let timeline_before = scenario::leader_timeline(target, &first).await;
    let (writer, _) = scenario::start_writer(target, &first, run).await?;
    let ports = scenario::member_ports(target);
    let candidate = match crash {
        Crash::SwitchoverThenNode => scenario::candidate_for(&target.members(), &first, run),
        _ => None,
    };
    tracing::info!(
        system = target.system().name(),
        profile = target.profile().name(),
        run,
        "{}: first event on leader {first}",
        crash.name()
    );
    let mut first_at = Instant::now();
    let mut note = None;
    let mut revive = Vec::new();
    let event = if crash == Crash::SwitchoverThenNode {
        if let Err(e) = target.switchover(&first, candidate.as_deref()).await {
            note = Some(format!("switchover command failed: {e}"));
        }
        "switchover"
    } else {
        first_at = crash::inflict(target, &first, Crash::Node).await?;
        revive.push(first.clone());
        "node crash"
    };
    let took = wait_first_write(
        &writer,
        first_at,
        &ports,
        &first,
        candidate.as_deref(),
        limit,
    )
    .await;
    let Some((first_write, second)) = took else {
        // No new leader after the first event: nothing to crash. Measure that event.
        let ev = Event {
            crash,
            run,
            leader: first.clone(),
            candidate: candidate.clone(),
            event_at: first_at,
            note,
            revive,
        };
        // Measure the first event's window from what the client saw so far.
        let now = first_at.elapsed() + Duration::from_secs(5);
        let mut result = scenario::conclude(target, writer, ev, now).await?;
        result.note = Some(format!(
            "no member but {first}{} took a write within {} s of the first event, so no second crash; the first event's own window: {} (taken by {}){}",
            candidate
                .as_deref()
                .map(|c| format!(" (candidate {c})"))
                .unwrap_or_default(),
            limit.as_secs(),
            result
                .gap_s
                .map_or("none".to_string(), |g| format!("{g:.2} s")),
            result.took_over.as_deref().unwrap_or("nobody"),
            result
                .note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        ));
        result.gap_s = None;
        result.crash_to_write_s = None;
        result.clean_s = None;
        result.settled_at_start = settled;
        return Ok(result);
    };
    let pause = pause_for(crash);
    tokio::time::sleep_until((first_write.at + pause).into()).await;
    let mut survivors = Vec::new();
    for m in target.members() {
        if !revive.contains(&m) {
            survivors.push(read_timelines(target, &m).await);
        }
    }
    let prior_window = crate::gap::longest_gap(&writer.acks(), first_at);
    tracing::info!(run, "{}: crashing the new leader {second}", crash.name());
    let event_at = crash::inflict(target, &second, Crash::Node).await?;
    revive.push(second.clone());
    let prior = Prior {
        event: event.into(),
        leader: first.clone(),
        new_leader: second.clone(),
        window_s: prior_window.map(|d| d.as_secs_f64()),
        first_write_s: (first_write.at - first_at).as_secs_f64(),
        crash_after_s: (event_at - first_write.at).as_secs_f64(),
    };
    let ev = Event {
        crash,
        run,
        leader: second,
        candidate: None,
        event_at,
        note,
        revive,
    };
    let mut result = scenario::conclude(target, writer, ev, limit).await?;
    result.prior = Some(prior);
    result.settled_at_start = settled;
    result.timelines_at_event = survivors;
    result.leader_timeline_before = timeline_before;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_file_timeline_is_hex() {
        assert_eq!(hex_timeline("00000002"), Some(2));
        assert_eq!(hex_timeline("0000000A"), Some(10));
        assert_eq!(hex_timeline("x"), None);
    }

    fn primary(tl: u32, control: u32) -> MemberTimelines {
        parse_timelines(
            "node2",
            [
                Some("f"),
                Some(&format!("{tl:08X}")),
                Some(&control.to_string()),
                None,
            ],
        )
    }

    fn replica(member: &str, control: u32, receiver: Option<u32>) -> MemberTimelines {
        let receiver = receiver.map(|r| r.to_string());
        parse_timelines(
            member,
            [
                Some("t"),
                None,
                Some(&control.to_string()),
                receiver.as_deref(),
            ],
        )
    }

    #[test]
    fn parses_a_primary_and_a_replica() {
        let p = primary(3, 2);
        assert_eq!(p.in_recovery, Some(false));
        assert_eq!(p.wal_tl, Some(3));
        assert_eq!(p.control_tl, Some(2));
        let r = replica("node1", 2, Some(3));
        assert_eq!(r.in_recovery, Some(true));
        assert_eq!(
            (r.control_tl, r.receiver_tl, r.wal_tl),
            (Some(2), Some(3), None)
        );
    }

    #[test]
    fn a_replica_control_file_behind_the_primary_is_seen() {
        assert!(control_file_behind(&[
            primary(3, 3),
            replica("node1", 2, Some(3))
        ]));
        assert!(!control_file_behind(&[
            primary(3, 3),
            replica("node1", 3, Some(3))
        ]));
        // Without a primary there is nothing to compare with.
        assert!(!control_file_behind(&[replica("node1", 2, Some(3))]));
    }

    #[test]
    fn settled_means_every_control_file_names_the_primary_timeline() {
        assert!(control_files_current(&[
            primary(3, 3),
            replica("node1", 3, Some(3))
        ]));
        assert!(!control_files_current(&[
            primary(3, 2),
            replica("node1", 3, Some(3))
        ]));
        assert!(!control_files_current(&[
            primary(3, 3),
            replica("node1", 2, Some(3))
        ]));
        assert!(!control_files_current(&[replica("node1", 3, None)]));
    }

    #[test]
    fn descriptions() {
        let text = describe_timelines(&[
            primary(3, 2),
            replica("node1", 2, Some(3)),
            MemberTimelines {
                member: "node3".into(),
                error: Some("refused".into()),
                ..MemberTimelines::default()
            },
        ]);
        assert_eq!(
            text,
            "node2 primary TL 3 (control file 2); node1 replica control file TL 2, receiver TL 3; node3 unreadable (refused)"
        );
        let p = Prior {
            event: "switchover".into(),
            leader: "node1".into(),
            new_leader: "node2".into(),
            window_s: Some(0.214),
            first_write_s: 1.1,
            crash_after_s: 3.0,
        };
        assert_eq!(
            describe_prior(&p),
            "after a switchover node1 -> node2 (window 0.21 s, new leader's first write 1.10 s after it, crash 3.00 s later)"
        );
    }

    #[test]
    fn pauses() {
        assert_eq!(pause_for(Crash::NodeTwice), Duration::from_secs(10));
        assert_eq!(pause_for(Crash::SwitchoverThenNode), Duration::from_secs(3));
    }
}
