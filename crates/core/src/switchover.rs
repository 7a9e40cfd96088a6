//! Planned switchover and manual failover, requested through the `failover` key.
//!
//! The leader validates the request, stops PostgreSQL cleanly (CHECKPOINT, then a fast
//! shutdown, so every byte of WAL reaches the candidate and no rewind is needed afterwards)
//! and then releases the leader key; the candidate races for it at once, the other members
//! stand aside while the request names someone else.
//!
//! Before it stops PostgreSQL, the leader waits for the routers registered under `routers/`
//! to pause their write traffic at transaction boundaries and acknowledge the request's
//! revision ([`drain`]), at most `switchover_drain_timeout`: so that no client of a router
//! meets a server that shuts down under it.

use crate::observation::{DcsView, FailoverRequest, RunningPg};
use crate::{HaConfig, Millis};

/// What the leader does about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaderSide {
    /// Hand over to this member now.
    HandOver { to: String },
    /// Not yet: scheduled.
    Scheduled { in_ms: u64 },
    /// The request cannot be carried out; delete it.
    Refuse(String),
    /// The request is done or not about us; delete it.
    Done,
}

pub(crate) fn leader_side(
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    req: &FailoverRequest,
    unix_now_ms: u64,
) -> LeaderSide {
    if req.candidate.as_deref() == Some(cfg.name.as_str()) {
        return LeaderSide::Done;
    }
    if req.leader.as_deref().is_some_and(|l| l != cfg.name) {
        if req.candidate.is_none() {
            // A switchover from another member to whoever was healthiest: we took over.
            return LeaderSide::Done;
        }
        return LeaderSide::Refuse(format!(
            "switchover from {} requested, but {} is the leader",
            req.leader.as_deref().unwrap_or(""),
            cfg.name
        ));
    }
    if let Some(at) = req.scheduled_at_unix_ms {
        if at > unix_now_ms {
            return LeaderSide::Scheduled {
                in_ms: at - unix_now_ms,
            };
        }
    }
    match &req.candidate {
        Some(c) => match candidate_problem(cfg, view, pg, c) {
            None => LeaderSide::HandOver { to: c.clone() },
            Some(why) => LeaderSide::Refuse(why),
        },
        None => {
            let best = pg
                .replicas
                .iter()
                .filter(|r| candidate_problem(cfg, view, pg, &r.name).is_none())
                .max_by(|a, b| a.flush_lsn.cmp(&b.flush_lsn).then(b.name.cmp(&a.name)));
            match best {
                Some(r) => LeaderSide::HandOver { to: r.name.clone() },
                None => LeaderSide::Refuse("no healthy replica to hand over to".into()),
            }
        }
    }
}

/// Whether the routers let the leader stop PostgreSQL for the switchover `req`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Every registered router acknowledged (or none is registered).
    Paused,
    /// These routers have not acknowledged, and `switchover_drain_timeout` is over: go on.
    TimedOut { not_paused: Vec<String> },
    /// Wait for these routers, at most `remaining_ms` longer.
    Waiting {
        not_paused: Vec<String>,
        remaining_ms: u64,
    },
}

/// The routers' side of a due switchover. `started` is the member's memory of when the
/// leader began to wait for request revision `.0` (set here on the first call for a
/// revision); a router acknowledges by naming the revision in its key. A router that does
/// not answer holds the switchover up at most `switchover_drain_timeout`; routers that
/// register while the leader waits are waited for too, within the same bound.
pub(crate) fn drain(
    cfg: &HaConfig,
    view: &DcsView,
    req: &FailoverRequest,
    started: &mut Option<(i64, Millis)>,
    now: Millis,
) -> Drain {
    let since = match *started {
        Some((revision, at)) if revision == req.revision => at,
        _ => {
            *started = Some((req.revision, now));
            now
        }
    };
    let not_paused: Vec<String> = view
        .routers
        .iter()
        .filter(|(_, acked)| **acked != Some(req.revision))
        .map(|(name, _)| name.clone())
        .collect();
    if not_paused.is_empty() {
        return Drain::Paused;
    }
    let waited = now.saturating_sub(since);
    if waited >= cfg.switchover_drain_timeout_ms {
        return Drain::TimedOut { not_paused };
    }
    Drain::Waiting {
        not_paused,
        remaining_ms: cfg.switchover_drain_timeout_ms - waited,
    }
}

/// What is known of a member that would take over from the leader, however it was
/// observed: the leader carrying out a request reads its own `pg_stat_replication`; the REST
/// API checking a request before writing it reads the member documents in the DCS. Both
/// decide with [`candidate_refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateFacts<'a> {
    pub name: &'a str,
    /// Why it may never lead (tagged `nofailover`, `failover_priority` 0, a required
    /// watchdog it cannot use), as words after its name; None: it may.
    pub barred: Option<&'a str>,
    /// It runs as a replica (not stopped, starting or a primary); `state` says what it is.
    pub running_replica: bool,
    pub state: &'a str,
    /// It streams from the leader; `replication` says how it replicates otherwise.
    pub streaming: bool,
    pub replication: &'a str,
    /// Bytes behind the leader; None while its position is not known.
    pub lag: Option<u64>,
    /// In synchronous mode, the members the `sync` key names; None outside it.
    pub sync_standbys: Option<&'a [String]>,
}

/// Why the member of `facts` may not take over now (`None`: it may): the one rule of a
/// switchover's candidate, for the leader and for the API.
pub fn candidate_refusal(facts: &CandidateFacts, maximum_lag_on_failover: u64) -> Option<String> {
    let name = facts.name;
    if let Some(why) = facts.barred {
        return Some(format!("{name} {why} and may not become the leader"));
    }
    if !facts.running_replica || !facts.streaming {
        return Some(format!(
            "{name} is not a running, streaming replica (state {}, replication {})",
            facts.state, facts.replication
        ));
    }
    let Some(lag) = facts.lag else {
        return Some(format!("{name} has not published its WAL position yet"));
    };
    if lag > maximum_lag_on_failover {
        return Some(format!(
            "{name} lags {lag} bytes behind the leader, more than maximum_lag_on_failover ({maximum_lag_on_failover})"
        ));
    }
    if let Some(standbys) = facts.sync_standbys {
        if !standbys.iter().any(|m| m == name) {
            let named = if standbys.is_empty() {
                "nobody".to_string()
            } else {
                standbys.join(", ")
            };
            return Some(format!(
                "synchronous mode: {name} is not a synchronous standby (sync key names: {named})"
            ));
        }
    }
    None
}

/// Why `candidate` cannot take over now (`None`: it can), from the leader's observations.
pub(crate) fn candidate_problem(
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    candidate: &str,
) -> Option<String> {
    let Some(member) = view.members.get(candidate) else {
        return Some(format!("{candidate} is not a member of the cluster"));
    };
    let connection = pg.replicas.iter().find(|r| r.name == candidate);
    let streaming = connection.is_some_and(|r| r.streaming);
    let state = member.state.to_string();
    let sync_standbys = cfg
        .synchronous
        .enabled()
        .then(|| crate::sync::key_members(cfg, view));
    let facts = CandidateFacts {
        name: candidate,
        barred: member
            .nofailover
            .then_some("is tagged nofailover (or failover_priority 0), or its required watchdog is not usable,"),
        running_replica: member.state.is_running() && !member.is_primary,
        state: &state,
        streaming,
        replication: if streaming {
            "streaming"
        } else {
            "not streaming from the leader"
        },
        lag: connection
            .and_then(|r| r.flush_lsn)
            .map(|flushed| pg.lsn.saturating_sub(flushed)),
        sync_standbys: sync_standbys.as_deref(),
    };
    candidate_refusal(&facts, cfg.maximum_lag_on_failover)
}

/// What a replica does about a request while the cluster has no leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplicaSide {
    /// No request, or it names nobody in particular: ordinary election.
    Ordinary,
    /// We are the requested candidate: race now.
    RaceNow,
    /// Another member is the candidate: stand aside.
    StandAside { candidate: String },
    /// We are the leader the switchover hands over from: never race for the key back.
    FormerLeader,
}

/// How long a switchover holds the election to its terms after the leader key is released:
/// a candidate that has not taken the key by then has failed, and everyone may race.
fn switchover_window_open(cfg: &HaConfig, leaderless_for: Millis) -> bool {
    leaderless_for < 2 * cfg.ttl_ms
}

/// The leader a switchover in progress hands over from, while the switchover still holds
/// the election to its terms: that member neither races nor competes with the others
/// (with or without a named candidate). `None` for a manual failover, a request that is
/// scheduled for later, or once the window has passed.
pub(crate) fn handing_over_from<'a>(
    cfg: &HaConfig,
    view: &'a DcsView,
    leaderless_for: Millis,
    unix_now_ms: u64,
) -> Option<&'a str> {
    let req = view.failover.as_ref()?;
    let scheduled_later = req.scheduled_at_unix_ms.is_some_and(|at| at > unix_now_ms);
    if scheduled_later || !switchover_window_open(cfg, leaderless_for) {
        return None;
    }
    req.leader
        .as_deref()
        .filter(|l| req.candidate.as_deref() != Some(*l))
}

pub(crate) fn replica_side(
    cfg: &HaConfig,
    view: &DcsView,
    leaderless_for: Millis,
    unix_now_ms: u64,
) -> ReplicaSide {
    let Some(req) = &view.failover else {
        return ReplicaSide::Ordinary;
    };
    // A switchover scheduled for later has not handed anything over yet: the leader was lost
    // before it was due, and the election is an ordinary one (its terms start when it is due).
    if req.scheduled_at_unix_ms.is_some_and(|at| at > unix_now_ms) {
        return ReplicaSide::Ordinary;
    }
    if handing_over_from(cfg, view, leaderless_for, unix_now_ms) == Some(cfg.name.as_str()) {
        return ReplicaSide::FormerLeader;
    }
    let Some(candidate) = &req.candidate else {
        return ReplicaSide::Ordinary;
    };
    if candidate == &cfg.name {
        return ReplicaSide::RaceNow;
    }
    // A candidate that does not take the key within 2 × ttl has failed: elect normally.
    if !switchover_window_open(cfg, leaderless_for) {
        return ReplicaSide::Ordinary;
    }
    ReplicaSide::StandAside {
        candidate: candidate.clone(),
    }
}
