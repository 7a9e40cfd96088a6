//! Checking a switchover or failover request against the cluster state before anything is
//! written: the REST API (and so `pgbaton ctl switchover/failover`) refuses a request here,
//! with the reason and the HTTP status to answer, and writes the `failover` key only when
//! this says yes. Pure: the state and the clock come in as values.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};
use pgbaton_core::{candidate_refusal, CandidateFacts};
use pgbaton_dcs::{ClusterState, FailoverDoc};

/// Why a switchover or failover request is refused; each carries the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The request itself is wrong (unparsable time, time in the past, missing candidate): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The cluster is not in a state that allows it (unknown or unhealthy candidate, a
    /// switchover already pending, wrong leader named): 412.
    #[error("{0}")]
    Precondition(String),
    /// There is no leader to hand over from: 503.
    #[error("{0}")]
    NoLeader(String),
}

impl OpError {
    /// The HTTP status code Patroni's API answers for this kind of refusal.
    pub fn status(&self) -> u16 {
        match self {
            OpError::BadRequest(_) => 400,
            OpError::Precondition(_) => 412,
            OpError::NoLeader(_) => 503,
        }
    }
}

/// What the checks need from the dynamic configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `maximum_lag_on_failover`: a candidate further behind the leader is refused.
    pub max_lag: u64,
    /// Synchronous mode: only a member the `sync` key names may take over.
    pub sync_mode: bool,
}

/// Check a switchover request (`POST /switchover`) against `state` now.
pub fn validate_switchover(
    state: &ClusterState,
    leader: Option<&str>,
    candidate: Option<&str>,
    scheduled_at: Option<&str>,
    max_lag: u64,
    sync_mode: bool,
) -> Result<FailoverDoc, OpError> {
    let limits = Limits { max_lag, sync_mode };
    validate_switchover_at(state, leader, candidate, scheduled_at, limits, Utc::now())
}

/// [`validate_switchover`] with the clock passed in.
pub fn validate_switchover_at(
    state: &ClusterState,
    leader: Option<&str>,
    candidate: Option<&str>,
    scheduled_at: Option<&str>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Result<FailoverDoc, OpError> {
    let leader = non_empty(leader);
    let candidate = non_empty(candidate);
    let scheduled_at = parse_schedule(scheduled_at, now)?;
    let Some(current) = healthy_leader(state) else {
        return Err(OpError::NoLeader(
            "switchover is not possible: the cluster has no running leader (use failover)".into(),
        ));
    };
    if let Some(named) = leader {
        if named != current {
            return Err(OpError::Precondition(format!(
                "leader name does not match: {current} is the leader, not {named}"
            )));
        }
    }
    if leader.is_none() && candidate.is_none() {
        return Err(OpError::BadRequest(
            "switchover needs the leader or a candidate".into(),
        ));
    }
    check_nothing_pending(state)?;
    match candidate {
        Some(c) => candidate_problem(state, current, c, limits)?,
        None => {
            let mut problems = Vec::new();
            let mut any = false;
            for m in state.members.keys().filter(|m| *m != current) {
                match candidate_problem(state, current, m, limits) {
                    Ok(()) => any = true,
                    Err(e) => problems.push(e.to_string()),
                }
            }
            if !any {
                let why = if problems.is_empty() {
                    "the cluster has no other member".to_string()
                } else {
                    problems.join("; ")
                };
                return Err(OpError::Precondition(format!(
                    "switchover is not possible: no member other than {current} is a healthy candidate ({why}); retry when one is"
                )));
            }
        }
    }
    Ok(FailoverDoc {
        leader: Some(current.to_string()),
        member: candidate.map(str::to_string),
        scheduled_at,
        ..FailoverDoc::default()
    })
}

/// Check a failover request (`POST /failover`): with a healthy leader it is a switchover to
/// `candidate` (as in Patroni 3); without one, `candidate` must be a running replica that
/// may be promoted.
pub fn validate_failover(
    state: &ClusterState,
    candidate: Option<&str>,
    max_lag: u64,
    sync_mode: bool,
) -> Result<FailoverDoc, OpError> {
    let candidate = non_empty(candidate);
    let limits = Limits { max_lag, sync_mode };
    if let Some(current) = healthy_leader(state) {
        let Some(c) = candidate else {
            return Err(OpError::BadRequest(format!(
                "failover needs a candidate ({current} is a healthy leader; use switchover)"
            )));
        };
        return validate_switchover_at(state, Some(current), Some(c), None, limits, Utc::now());
    }
    let Some(c) = candidate else {
        return Err(OpError::BadRequest(
            "failover needs a candidate when the cluster has no leader".into(),
        ));
    };
    check_nothing_pending(state)?;
    let Some(doc) = state.members.get(c) else {
        return Err(unknown_member(state, c));
    };
    if doc.never_promote() {
        return Err(OpError::Precondition(format!(
            "{c} is tagged nofailover (or failover_priority 0) and may not be promoted"
        )));
    }
    if doc.watchdog_failed() {
        return Err(OpError::Precondition(format!(
            "{c} {WATCHDOG_UNUSABLE} and may not be promoted"
        )));
    }
    if !doc.is_running() {
        return Err(OpError::Precondition(format!(
            "{c} is not running (state {})",
            doc.state
        )));
    }
    check_sync(state, c, limits)?;
    Ok(FailoverDoc {
        member: Some(c.to_string()),
        ..FailoverDoc::default()
    })
}

/// Parse `scheduled_at`: RFC 3339 / ISO 8601 with an offset, or a local time without one
/// (`2026-11-26 15:00[:00]`); `now` or empty means "not scheduled". The result is RFC 3339
/// with an offset, which the agents read.
pub fn parse_schedule(
    scheduled_at: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<String>, OpError> {
    let Some(text) = non_empty(scheduled_at) else {
        return Ok(None);
    };
    if text.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let at = parse_time(text).ok_or_else(|| {
        OpError::BadRequest(format!(
            "cannot parse scheduled_at {text:?}: use ISO 8601 such as 2026-11-26T15:00:00+00:00"
        ))
    })?;
    if at.with_timezone(&Utc) < now {
        return Err(OpError::BadRequest(format!(
            "cannot schedule a switchover in the past ({text})"
        )));
    }
    Ok(Some(at.to_rfc3339()))
}

fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Some(t);
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, fmt) {
            return Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.fixed_offset());
        }
    }
    None
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The leader key's holder when its member document says it runs.
fn healthy_leader(state: &ClusterState) -> Option<&str> {
    let name = state.leader_name()?;
    let doc = state.members.get(name)?;
    doc.is_running().then_some(name)
}

fn check_nothing_pending(state: &ClusterState) -> Result<(), OpError> {
    match &state.failover {
        Some(f) => {
            let what = match (&f.value.member, &f.value.scheduled_at) {
                (Some(m), Some(at)) => format!(" (to {m} at {at})"),
                (Some(m), None) => format!(" (to {m})"),
                (None, Some(at)) => format!(" (at {at})"),
                (None, None) => String::new(),
            };
            Err(OpError::Precondition(format!(
                "a switchover is already pending{what}: cancel it first (DELETE /switchover)"
            )))
        }
        None => Ok(()),
    }
}

fn unknown_member(state: &ClusterState, name: &str) -> OpError {
    let known: Vec<&str> = state.members.keys().map(String::as_str).collect();
    OpError::Precondition(format!(
        "{name} is not a member of the cluster (members: {})",
        known.join(", ")
    ))
}

/// Why `candidate` cannot take over from `leader` now: the core's rule
/// ([`pgbaton_core::candidate_refusal`]) over what the member documents say.
fn candidate_problem(
    state: &ClusterState,
    leader: &str,
    candidate: &str,
    limits: Limits,
) -> Result<(), OpError> {
    let Some(doc) = state.members.get(candidate) else {
        return Err(unknown_member(state, candidate));
    };
    if candidate == leader {
        return Err(OpError::Precondition(format!(
            "{candidate} is already the leader: name another member as candidate"
        )));
    }
    let barred = if doc.never_promote() {
        Some("is tagged nofailover (or failover_priority 0)")
    } else if doc.watchdog_failed() {
        Some(WATCHDOG_UNUSABLE)
    } else {
        None
    };
    let standbys = sync_standbys(state);
    let facts = CandidateFacts {
        name: candidate,
        barred,
        running_replica: doc.is_running() && !doc.is_primary_role(),
        state: &doc.state,
        streaming: doc.replication_state.as_deref() == Some("streaming"),
        replication: doc.replication_state.as_deref().unwrap_or("none"),
        lag: doc
            .xlog_location
            .map(|position| state.leader_optime().unwrap_or(0).saturating_sub(position)),
        sync_standbys: limits.sync_mode.then_some(standbys.as_slice()),
    };
    match candidate_refusal(&facts, limits.max_lag) {
        Some(why) => Err(OpError::Precondition(why)),
        None => Ok(()),
    }
}

/// The members the `sync` key names.
fn sync_standbys(state: &ClusterState) -> Vec<String> {
    state
        .sync
        .as_ref()
        .map(|s| s.value.members())
        .unwrap_or_default()
}

fn check_sync(state: &ClusterState, candidate: &str, limits: Limits) -> Result<(), OpError> {
    if !limits.sync_mode {
        return Ok(());
    }
    let named = sync_standbys(state);
    if named.iter().any(|m| m == candidate) {
        Ok(())
    } else {
        Err(OpError::Precondition(format!(
            "synchronous mode: {candidate} is not a synchronous standby (sync key names: {})",
            if named.is_empty() {
                "nobody".to_string()
            } else {
                named.join(", ")
            }
        )))
    }
}

/// A candidate whose configuration requires a watchdog it cannot use never leads (the words
/// after its name).
const WATCHDOG_UNUSABLE: &str =
    "has watchdog.mode required and its watchdog is not usable (see its log or GET /patroni)";
