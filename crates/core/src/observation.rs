//! What a member observes at the start of a cycle: the input of [`crate::decide`].

use std::collections::BTreeMap;

use crate::{Lsn, Millis};

/// One complete snapshot, taken by the agent (or the simulator) before deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Monotonic now.
    pub now: Millis,
    /// Local PostgreSQL.
    pub pg: LocalPg,
    /// The long-running PostgreSQL operation the agent is carrying out, if any.
    pub job: JobView,
    /// The cluster as read from the DCS in this cycle; `None` when the DCS could not be read.
    pub dcs: Option<DcsView>,
    /// Until when this member's lease is certainly alive in the DCS: the send time of the last
    /// keepalive the DCS acknowledged, plus ttl. `None` when no keepalive was acknowledged.
    pub lease_valid_until: Option<Millis>,
    /// Fresh reports from the other members' REST APIs, gathered only when the cluster has
    /// no leader (to compare positions before racing for the leader key).
    pub peers: BTreeMap<String, PeerView>,
    /// The member the local replica is configured to stream from (what primary_conninfo
    /// names), as last written by the agent; `None` when unknown or none.
    pub configured_upstream: Option<String>,
    /// Standby cluster: the local replica streams from the remote primary of
    /// `standby_cluster` (primary_conninfo as last written by the agent); false when unknown.
    pub follows_remote_primary: bool,
    /// Wall-clock now in Unix milliseconds, only for scheduled switchovers.
    pub unix_now_ms: u64,
    /// The `synchronous_standby_names` the agent last put in force on this member
    /// (`None` when it never set one: asynchronous).
    pub configured_sync: Option<SyncStandbyNames>,
    /// Failsafe mode, leader without the DCS: the send time of the latest round of
    /// `POST /failsafe` that every member of the failsafe topology acknowledged (`None`:
    /// none yet). The right it gives is measured from the send time, like the lease.
    pub failsafe_acked_at: Option<Millis>,
    /// Until when this member promised a failsafe leader not to race for the leader key nor
    /// promote (receipt of its `POST /failsafe` plus ttl). A freshly started agent sets it to
    /// its start plus ttl: it may have promised in its previous life and forgotten.
    pub failsafe_promised_until: Option<Millis>,
    /// Replica: the local PostgreSQL's log says, since the agent last started it and after it
    /// last started streaming, that its upstream no longer has a WAL segment it asked for
    /// ("requested WAL segment ... has already been removed"): the segment's name.
    pub missing_wal_segment: Option<String>,
    /// Replica: the same log says, since it last started streaming, that its data forked off
    /// its upstream's history ("requested starting point ... is not in this server's
    /// history", "new timeline N forked off current database system timeline M before
    /// current recovery point ..."): only a rewind lets it follow.
    pub forked_from_upstream: bool,
    /// An operator command given to this member for this cycle (`POST /restart`, a due
    /// scheduled restart, `POST /reinitialize`); the decision answers it.
    pub command: Option<crate::MemberCommand>,
    /// Replica: copies of the leader's permanent logical slots are ready to install (read
    /// from the leader by the agent's background slot task; installing them needs
    /// PostgreSQL stopped).
    pub slot_copies_ready: bool,
    /// Whether a required watchdog lets this member lead (`NotRequired` unless
    /// `watchdog.mode: required`), see [`crate::watchdog`].
    pub watchdog: crate::WatchdogState,
}

/// `synchronous_standby_names` as pgbaton writes it: `FIRST n (a, b)`, `ANY n (a, b)` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStandbyNames {
    /// Commits wait for `count` of `members` in priority order.
    First { count: u32, members: Vec<String> },
    /// Commits wait for any `count` of `members` (quorum).
    Any { count: u32, members: Vec<String> },
    /// Strict mode without any synchronous standby: commits wait for a standby that is not there.
    Wildcard,
}

impl SyncStandbyNames {
    pub fn members(&self) -> &[String] {
        match self {
            SyncStandbyNames::First { members, .. } | SyncStandbyNames::Any { members, .. } => {
                members
            }
            SyncStandbyNames::Wildcard => &[],
        }
    }

    /// The value for postgresql.conf (member names are quoted as identifiers).
    pub fn to_setting(&self) -> String {
        let list = |m: &[String]| {
            m.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            SyncStandbyNames::First { count, members } => {
                format!("FIRST {count} ({})", list(members))
            }
            SyncStandbyNames::Any { count, members } => format!("ANY {count} ({})", list(members)),
            SyncStandbyNames::Wildcard => "*".to_string(),
        }
    }

    /// The setting as pgbaton writes it ([`Self::to_setting`]) read back: `Ok(None)` for an
    /// empty setting (asynchronous). Also reads a bare list (`a, b`: PostgreSQL's `FIRST 1`)
    /// and unquoted names; anything else is an error saying what was not understood.
    pub fn parse_setting(value: &str) -> Result<Option<Self>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if value == "*" {
            return Ok(Some(SyncStandbyNames::Wildcard));
        }
        let bad = |why: &str| format!("synchronous_standby_names {value:?}: {why}");
        let mut words = value.splitn(3, char::is_whitespace);
        let method = words.next().unwrap_or_default().to_ascii_uppercase();
        let (quorum, count, list) = match method.as_str() {
            "FIRST" | "ANY" => {
                let count: u32 = words
                    .next()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| bad("a count must follow FIRST or ANY"))?;
                let rest = words.next().unwrap_or_default().trim();
                let list = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad("the names must be in parentheses"))?;
                (method == "ANY", count, list)
            }
            _ => (false, 1, value),
        };
        let members: Vec<String> = list
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if members.is_empty() {
            return Err(bad("no standby names"));
        }
        Ok(Some(if quorum {
            SyncStandbyNames::Any { count, members }
        } else {
            SyncStandbyNames::First { count, members }
        }))
    }
}

/// One row of pg_stat_replication on the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConnection {
    /// `application_name`: the member name.
    pub name: String,
    /// `state = 'streaming'`.
    pub streaming: bool,
    /// `sync_state` is `sync` or `quorum`: PostgreSQL waits for it.
    pub synchronous: bool,
    pub flush_lsn: Option<Lsn>,
}

/// Local PostgreSQL as seen from the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalPg {
    /// No data directory (missing or empty).
    NoData,
    /// A data directory exists and PostgreSQL is not running.
    Stopped {
        system_id: u64,
        /// pg_control says the server last ran as a primary (shut down, or in production
        /// when it crashed): it may hold WAL that a newer leader never saw.
        was_primary: bool,
        timeline: u32,
        /// Latest checkpoint position.
        lsn: Lsn,
    },
    /// The postmaster runs but does not answer yet (starting up, crash recovery).
    Starting,
    /// Running and answering queries.
    Running(RunningPg),
}

/// A running, answering PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPg {
    pub system_id: u64,
    /// `pg_is_in_recovery()`: a replica. A primary is writable.
    pub in_recovery: bool,
    pub timeline: u32,
    /// Primary: current write position. Replica: the larger of received and replayed.
    pub lsn: Lsn,
    /// Replica: the WAL receiver is streaming.
    pub streaming: bool,
    /// Primary: the standbys connected to it (pg_stat_replication).
    pub replicas: Vec<ReplicaConnection>,
}

impl LocalPg {
    /// PostgreSQL is certainly not a primary: stopped, no data, or a running replica (a
    /// start under way might still become one).
    pub fn certainly_not_primary(&self) -> bool {
        match self {
            LocalPg::Running(pg) => pg.in_recovery,
            LocalPg::Stopped { .. } | LocalPg::NoData => true,
            LocalPg::Starting => false,
        }
    }

    pub fn running(&self) -> Option<&RunningPg> {
        match self {
            LocalPg::Running(r) => Some(r),
            _ => None,
        }
    }

    /// Running as a primary (writable).
    pub fn is_primary(&self) -> bool {
        matches!(self, LocalPg::Running(r) if !r.in_recovery)
    }

    pub fn is_replica(&self) -> bool {
        matches!(self, LocalPg::Running(r) if r.in_recovery)
    }

    pub fn system_id(&self) -> Option<u64> {
        match self {
            LocalPg::Stopped { system_id, .. } => Some(*system_id),
            LocalPg::Running(r) => Some(r.system_id),
            _ => None,
        }
    }
}

/// The kinds of long-running operation on PostgreSQL the agent carries out in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Bootstrap,
    Clone,
    Rewind,
    Start,
    Stop,
    Promote,
}

/// State of the background operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobView {
    Idle,
    Running(JobKind),
    /// The last operation failed (kept until another one starts).
    Failed {
        kind: JobKind,
        error: String,
    },
    /// The last operation could not reach the member it reads from (pg_rewind's source did
    /// not answer) and changed nothing locally: it can simply be tried again.
    SourceUnreachable {
        kind: JobKind,
        error: String,
    },
}

/// The `initialize` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialize {
    /// Absent: the cluster was never bootstrapped.
    Absent,
    /// Claimed by a member that is running initdb (value names the member).
    ClaimedBy(String),
    /// Bootstrapped: the cluster's system identifier.
    SystemId(u64),
}

/// One snapshot of the cluster state in the DCS, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq)]
pub struct DcsView {
    pub initialize: Initialize,
    /// Holder of the `leader` key.
    pub leader: Option<String>,
    pub members: BTreeMap<String, MemberView>,
    /// The freshest leader position the DCS knows (`status` optime or the leader's document).
    pub leader_optime: Option<Lsn>,
    /// The `history` key: each recorded timeline and the position where it ended (the
    /// switch point of the promotion that left it).
    pub history: BTreeMap<u32, Lsn>,
    /// The `config` key's modification revision (`None`: there is no `config` key).
    pub config_revision: Option<i64>,
    /// A pending switchover or failover (`failover` key).
    pub failover: Option<FailoverRequest>,
    /// The `sync` key: the members every acknowledged commit has reached.
    pub sync: Option<SyncKey>,
    /// The `failsafe` key: the members of the failsafe topology the leader last wrote
    /// (sorted; `None` when absent or unreadable).
    pub failsafe: Option<Vec<String>>,
    /// Where the oldest WAL segment in the leader's `pg_wal` starts, as the leader last
    /// published it in `status` (WAL before this position is gone from the leader).
    pub leader_oldest_wal: Option<Lsn>,
    /// The routers registered under `routers/` (pgbaton's addition): each router's name and
    /// the `failover` key revision it has paused its write traffic for, if any.
    pub routers: BTreeMap<String, Option<i64>>,
}

impl DcsView {
    /// The highest timeline recorded in `history` (0 when empty).
    pub fn last_history_timeline(&self) -> u32 {
        self.history.keys().next_back().copied().unwrap_or(0)
    }

    /// The newest timeline the DCS knows of: the members' published timelines and the one
    /// after the last timeline `history` records as ended (0 when nothing is known).
    pub fn newest_timeline(&self) -> u32 {
        let published = self.members.values().filter_map(|m| m.timeline).max();
        let recorded = match self.last_history_timeline() {
            0 => 0,
            last => last + 1,
        };
        published.unwrap_or(0).max(recorded)
    }

    /// The newest timeline known to this view or to the peers' fresh reports.
    pub fn newest_timeline_with(&self, peers: &BTreeMap<String, PeerView>) -> u32 {
        peers
            .values()
            .filter_map(|p| match p {
                PeerView::Report { timeline, .. } => *timeline,
                PeerView::Unreachable => None,
            })
            .fold(self.newest_timeline(), u32::max)
    }

    /// Whether a member at `(timeline, lsn)` holds only WAL that the cluster's newest
    /// timeline also holds: its timeline is the newest known, or it ended (per `history`)
    /// at or after `lsn`. `false` when the end of an older timeline is not recorded.
    pub fn on_cluster_history(&self, timeline: u32, lsn: Lsn, newest_timeline: u32) -> bool {
        timeline >= newest_timeline || self.history.get(&timeline).is_some_and(|end| lsn <= *end)
    }
}

/// The `failover` key: a planned switchover (`leader` set) or a manual failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRequest {
    /// The member to hand over from (a switchover); `None` for a failover.
    pub leader: Option<String>,
    /// The member to promote; `None`: the healthiest.
    pub candidate: Option<String>,
    /// Not before this wall-clock time (Unix ms).
    pub scheduled_at_unix_ms: Option<u64>,
    /// The key's mod_revision: what the routers acknowledge when they have paused for it.
    pub revision: i64,
}

/// The `sync` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncKey {
    /// The leader that wrote it.
    pub leader: Option<String>,
    /// Synchronous standbys: each has every commit the leader acknowledged.
    pub members: Vec<String>,
    /// Quorum mode: commits wait for this many of `members`.
    pub quorum: Option<u32>,
}

/// A member's document in the DCS.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Its state word (running, stopped, ...).
    pub state: crate::DocState,
    pub is_primary: bool,
    /// Role `standby_leader`: the leader of a standby cluster (a replica of the remote primary).
    pub is_standby_leader: bool,
    pub lsn: Option<Lsn>,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    /// Tag `replicatefrom`: the member this one streams from (cascading).
    pub replicatefrom: Option<String>,
    /// Tag `nosync`: never a synchronous standby.
    pub nosync: bool,
    /// Tag `clonefrom`: new replicas may take their base backup from this member.
    pub clonefrom: bool,
}

/// What a peer's REST API answered just now.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerView {
    /// Did not answer in time.
    Unreachable,
    Report {
        /// PostgreSQL runs as a replica.
        replica_running: bool,
        /// PostgreSQL runs as a primary (a leader that lost its key but still runs).
        primary_running: bool,
        lsn: Option<Lsn>,
        timeline: Option<u32>,
        nofailover: bool,
        /// Tag `failover_priority` (1 when the peer does not say).
        failover_priority: u32,
        /// The peer read its position after finding no leader key in the DCS
        /// (`pgbaton_no_leader_seen`): the position is final, since the former leader's
        /// primary stopped before its key went. A position read while the peer still saw a
        /// leader may be older than commits that leader acknowledged with the peer's flush.
        settled: bool,
        /// At most how long before this observation's `now` the peer read the position it
        /// reported (its `pgbaton_position_age_ms` plus the time since the question went out;
        /// None: the peer does not say). A position read after this member itself found the
        /// leader key gone is final as well, whatever the peer's own DCS view then was.
        read_within_ms: Option<Millis>,
    },
}

#[cfg(test)]
mod sync_standby_names_tests {
    use super::SyncStandbyNames;

    #[test]
    fn what_to_setting_writes_parses_back() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for ssn in [
            SyncStandbyNames::First {
                count: 2,
                members: names(&["m2", "m3"]),
            },
            SyncStandbyNames::Any {
                count: 1,
                members: names(&["m1"]),
            },
            SyncStandbyNames::Wildcard,
        ] {
            assert_eq!(
                SyncStandbyNames::parse_setting(&ssn.to_setting()),
                Ok(Some(ssn))
            );
        }
        assert_eq!(SyncStandbyNames::parse_setting("  "), Ok(None));
        assert_eq!(
            SyncStandbyNames::parse_setting("a, b"),
            Ok(Some(SyncStandbyNames::First {
                count: 1,
                members: names(&["a", "b"])
            }))
        );
        let err = SyncStandbyNames::parse_setting("FIRST two (a)").unwrap_err();
        assert!(err.contains("a count must follow"), "{err}");
        let err = SyncStandbyNames::parse_setting("ANY 1 a, b").unwrap_err();
        assert!(err.contains("parentheses"), "{err}");
    }
}
