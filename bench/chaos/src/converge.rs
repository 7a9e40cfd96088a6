//! After the faults: waiting until the cluster is whole again (the leader key names a member
//! that accepts writes, every other member streams from it), then reading the final state the
//! checker needs — every member's ids once the replicas caught up, and the final leader's
//! timeline history.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::db;
use crate::history::parse_lsn;

const CALL: Duration = Duration::from_secs(3);

/// What one member says about itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemberView {
    pub in_recovery: bool,
    /// `pg_stat_wal_receiver.status` (replicas).
    pub receiver: Option<String>,
    /// `pg_stat_wal_receiver.sender_host`: whom it streams from.
    pub sender: Option<String>,
    /// `pg_stat_wal_receiver.received_tli`: the timeline it receives.
    pub received_tli: Option<i32>,
    /// A primary's own timeline.
    pub timeline: Option<i32>,
}

/// The members that have not rejoined: with a writable leader, every replica that does not
/// stream from it on its timeline (a replica whose WAL forked off stays on the old timeline
/// although its receiver says "streaming" between two retries); without one, every member.
pub fn unrecovered(
    views: &[Option<MemberView>],
    ips: &[Ipv4Addr],
    leader: Option<usize>,
) -> Vec<usize> {
    let leader = leader.filter(|l| matches!(&views[*l], Some(v) if !v.in_recovery));
    let Some(l) = leader else {
        return (0..views.len()).collect();
    };
    let leader_ip = ips[l].to_string();
    let leader_tl = views[l].as_ref().and_then(|v| v.timeline);
    (0..views.len())
        .filter(|k| *k != l)
        .filter(|k| {
            !matches!(&views[*k], Some(v) if v.in_recovery
                && v.receiver.as_deref() == Some("streaming")
                && v.sender.as_deref() == Some(leader_ip.as_str())
                && v.received_tli.is_some()
                && v.received_tli == leader_tl)
        })
        .collect()
}

pub async fn view(ip: Ipv4Addr) -> Option<MemberView> {
    let sql = "SELECT pg_is_in_recovery(), \
               (SELECT status FROM pg_stat_wal_receiver), \
               (SELECT sender_host FROM pg_stat_wal_receiver), \
               (SELECT received_tli FROM pg_stat_wal_receiver), \
               CASE WHEN pg_is_in_recovery() THEN NULL ELSE \
               ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
    let rows = db::rows(ip, sql, CALL).await.ok()?;
    let row = rows.into_iter().next()?;
    let int = |i: usize| row.get(i).cloned().flatten().and_then(|t| t.parse().ok());
    Some(MemberView {
        in_recovery: row.first()?.as_deref() == Some("t"),
        receiver: row.get(1).cloned().flatten(),
        sender: row.get(2).cloned().flatten(),
        received_tli: int(3),
        timeline: int(4),
    })
}

/// The outcome of waiting for the cluster to become whole.
#[derive(Debug, Clone)]
pub struct Convergence {
    pub leader: Option<usize>,
    pub unrecovered: Vec<usize>,
    pub waited_s: f64,
    /// The members that answered as writable primaries at the last poll (to compare with the
    /// member etcd's leader key names).
    pub writable: Vec<usize>,
}

/// Poll until one leader and every other member streaming (seen twice in a row, 0.5 s apart),
/// or `timeout`.
pub async fn wait(
    names: &[String],
    ips: &[Ipv4Addr],
    etcd: &[String],
    timeout: Duration,
    interrupted: impl Fn() -> bool,
) -> Convergence {
    let start = Instant::now();
    let mut whole_before = false;
    loop {
        let leader = match db::leader(etcd).await {
            Ok(Some(name)) => names.iter().position(|n| *n == name),
            _ => None,
        };
        let mut views = Vec::new();
        for ip in ips {
            views.push(view(*ip).await);
        }
        let bad = unrecovered(&views, ips, leader);
        let whole = bad.is_empty();
        if (whole && whole_before) || start.elapsed() >= timeout || interrupted() {
            let writable = views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.in_recovery))
                .map(|(k, _)| k)
                .collect();
            return Convergence {
                leader: leader.filter(|_| bad.len() < names.len()),
                unrecovered: bad,
                waited_s: start.elapsed().as_secs_f64(),
                writable,
            };
        }
        whole_before = whole;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the catch-up check found.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// Indexes (into `replicas`) of the replicas that did not replay the leader's position.
    pub behind: Vec<usize>,
    /// Why the leader's position could not be read (every replica then counts as behind).
    pub no_reference: Option<String>,
}

/// Wait (at most `timeout` in all) until every replica replayed the leader's current WAL
/// position.
pub async fn catch_up(leader: Ipv4Addr, replicas: &[Ipv4Addr], timeout: Duration) -> CatchUp {
    let position = |ip: Ipv4Addr, sql: &'static str| async move {
        db::rows(ip, sql, CALL)
            .await
            .ok()
            .and_then(|r| r.first().and_then(|r| r.first().cloned().flatten()))
            .and_then(|t| parse_lsn(&t))
    };
    let target = match db::rows(leader, "SELECT pg_current_wal_lsn()::text", CALL).await {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|t| parse_lsn(&t))
            .ok_or_else(|| "no position in the answer".to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    let target = match target {
        Ok(target) => target,
        Err(why) => {
            return CatchUp {
                behind: (0..replicas.len()).collect(),
                no_reference: Some(why),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let mut behind = Vec::new();
    for (i, ip) in replicas.iter().enumerate() {
        loop {
            let replayed = position(*ip, "SELECT pg_last_wal_replay_lsn()::text").await;
            if replayed.is_some_and(|r| r >= target) {
                break;
            }
            if Instant::now() >= deadline {
                behind.push(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    CatchUp {
        behind,
        no_reference: None,
    }
}

/// Every id in `chaos_writes` on the member, or None when it cannot be read.
pub async fn ids(ip: Ipv4Addr) -> Option<HashSet<i64>> {
    let rows = db::rows(ip, "SELECT id FROM chaos_writes", Duration::from_secs(15))
        .await
        .ok()?;
    Some(
        rows.into_iter()
            .filter_map(|r| r.first().cloned().flatten())
            .filter_map(|t| t.parse().ok())
            .collect(),
    )
}

/// The leader's timeline and its history: (timeline, LSN where it ended) for every ancestor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub timeline: i32,
    pub ended: Vec<(i32, u64)>,
}

/// Parse a `0000000N.history` file: `parent_tli <tab> switchpoint <tab> reason` lines.
pub fn parse_history(timeline: i32, text: &str) -> History {
    let ended = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tl = f.next()?.parse().ok()?;
            let lsn = parse_lsn(f.next()?)?;
            Some((tl, lsn))
        })
        .collect();
    History { timeline, ended }
}

pub async fn history(leader: Ipv4Addr) -> Option<History> {
    let sql = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";
    let rows = db::rows(leader, sql, CALL).await.ok()?;
    let timeline: i32 = rows.first()?.first()?.as_deref()?.parse().ok()?;
    if timeline <= 1 {
        return Some(History {
            timeline,
            ended: Vec::new(),
        });
    }
    let file = format!("pg_wal/{timeline:08X}.history");
    let rows = db::rows(leader, &format!("SELECT pg_read_file('{file}')"), CALL)
        .await
        .ok()?;
    let text = rows.first()?.first()?.clone()?;
    Some(parse_history(timeline, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, 1, 10 + k)
    }

    fn replica(of: u8, status: &str) -> Option<MemberView> {
        Some(MemberView {
            in_recovery: true,
            receiver: Some(status.into()),
            sender: Some(ip(of).to_string()),
            received_tli: Some(2),
            timeline: None,
        })
    }

    fn primary() -> Option<MemberView> {
        Some(MemberView {
            timeline: Some(2),
            ..Default::default()
        })
    }

    #[test]
    fn whole_when_every_replica_streams_from_the_writable_leader() {
        let ips = [ip(1), ip(2), ip(3)];
        let primary = primary();
        let views = vec![
            replica(2, "streaming"),
            primary.clone(),
            replica(2, "streaming"),
        ];
        assert!(unrecovered(&views, &ips, Some(1)).is_empty());
        let views = vec![
            replica(2, "streaming"),
            primary.clone(),
            replica(1, "streaming"),
        ];
        assert_eq!(unrecovered(&views, &ips, Some(1)), vec![2]);
        let views = vec![None, primary, replica(2, "waiting")];
        assert_eq!(unrecovered(&views, &ips, Some(1)), vec![0, 2]);
    }

    #[test]
    fn a_replica_stuck_on_an_older_timeline_has_not_rejoined() {
        let ips = [ip(1), ip(2)];
        let mut stuck = replica(1, "streaming");
        if let Some(v) = stuck.as_mut() {
            v.received_tli = Some(1);
        }
        assert_eq!(unrecovered(&[primary(), stuck], &ips, Some(0)), vec![1]);
    }

    #[test]
    fn without_a_writable_leader_nobody_has_rejoined() {
        let ips = [ip(1), ip(2)];
        let views = vec![replica(2, "streaming"), replica(1, "streaming")];
        assert_eq!(unrecovered(&views, &ips, Some(1)), vec![0, 1]);
        assert_eq!(unrecovered(&views, &ips, None), vec![0, 1]);
    }

    #[test]
    fn history_files_are_parsed() {
        let h = parse_history(
            3,
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5A000028\tno recovery target specified\n",
        );
        assert_eq!(h.timeline, 3);
        assert_eq!(h.ended, vec![(1, 0x3000158), (2, 0x5A000028)]);
    }
}
