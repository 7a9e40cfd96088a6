//! The health-check endpoints (`/primary`, `/replica`, `/liveness`, ...) as pure functions:
//! given the latest [`NodeStatus`], the query string and the time, is the answer 200 or 503?
//! HAProxy, PgBouncer setups and Kubernetes probes read only these status codes.

use serde_json::Value;

use crate::lag::{own_lag, parse_lag, LagParseError};
use crate::status::{NodeStatus, PgRole};

/// A health-check endpoint; several paths map to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `/`, `/primary`, `/master`, `/read-write`
    Primary,
    Leader,
    StandbyLeader,
    Replica,
    ReadOnly,
    ReadOnlySync,
    /// `/synchronous`, `/sync`
    Sync,
    /// `/asynchronous`, `/async`
    Async,
    Health,
    Liveness,
    Readiness,
}

impl Check {
    /// Every path served by a check, with its check.
    pub const PATHS: &'static [(&'static str, Check)] = &[
        ("/", Check::Primary),
        ("/primary", Check::Primary),
        ("/master", Check::Primary),
        ("/read-write", Check::Primary),
        ("/leader", Check::Leader),
        ("/standby-leader", Check::StandbyLeader),
        ("/standby_leader", Check::StandbyLeader),
        ("/replica", Check::Replica),
        ("/read-only", Check::ReadOnly),
        ("/read-only-sync", Check::ReadOnlySync),
        ("/synchronous", Check::Sync),
        ("/sync", Check::Sync),
        ("/asynchronous", Check::Async),
        ("/async", Check::Async),
        ("/health", Check::Health),
        ("/liveness", Check::Liveness),
        ("/readiness", Check::Readiness),
    ];
}

/// The query-string filters of the replica checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `?lag=`: the largest lag in bytes still accepted.
    pub max_lag: Option<u64>,
    /// `?replication_state=`: e.g. `streaming`.
    pub replication_state: Option<String>,
    /// `?tag_<key>=<value>`: tags that must have these values.
    pub tags: Vec<(String, String)>,
}

impl Filters {
    /// Reads the filters out of the query pairs; other keys are ignored (as Patroni does).
    pub fn from_query(pairs: &[(String, String)]) -> Result<Filters, LagParseError> {
        let mut filters = Filters::default();
        for (key, value) in pairs {
            if key == "lag" {
                filters.max_lag = Some(parse_lag(value)?);
            } else if key == "replication_state" {
                filters.replication_state = Some(value.clone());
            } else if let Some(tag) = key.strip_prefix("tag_") {
                filters.tags.push((tag.to_string(), value.clone()));
            }
        }
        Ok(filters)
    }
}

/// True when the check passes (HTTP 200), false for 503.
pub fn passes(check: Check, status: &NodeStatus, filters: &Filters, now_ms: u64) -> bool {
    match check {
        Check::Primary => status.writable_leader,
        Check::Leader => status.holds_leader_key && status.pg_running,
        Check::StandbyLeader => status.standby_leader && status.pg_running,
        Check::Replica => replica_passes(status, filters, false),
        Check::ReadOnly => {
            // Like Patroni, `/read-only` honours `?lag=` but not the replica-only filters.
            let lag_only = Filters {
                max_lag: filters.max_lag,
                ..Filters::default()
            };
            status.pg_running
                && (status.writable_leader
                    || status.standby_leader
                    || replica_passes(status, &lag_only, true))
        }
        Check::ReadOnlySync => {
            status.writable_leader
                || (is_sync_standby(status) && replica_passes(status, filters, false))
        }
        Check::Sync => is_sync_standby(status) && replica_passes(status, filters, false),
        Check::Async => !is_sync_standby(status) && replica_passes(status, filters, false),
        Check::Health => status.pg_running,
        Check::Liveness => {
            let allowed = if status.writable_leader {
                status.ttl_ms
            } else {
                status.ttl_ms.saturating_mul(2)
            };
            now_ms.saturating_sub(status.last_cycle_unix_ms) <= allowed
        }
        Check::Readiness => {
            if status.holds_leader_key {
                status.writable_leader || (status.standby_leader && status.pg_running)
            } else {
                status.pg_running
                    && status.replication_state.as_deref() == Some("streaming")
                    && within_lag(status, filters.max_lag)
            }
        }
    }
}

/// A running replica that matches the filters; `noloadbalance` keeps it out of `/replica`
/// unless `ignore_noloadbalance` (for `/read-only`).
fn replica_passes(status: &NodeStatus, filters: &Filters, ignore_noloadbalance: bool) -> bool {
    status.pg_running
        && status.pg_role == PgRole::Replica
        // Patroni: the standby leader's role is `standby_leader`, not `replica`.
        && !status.standby_leader
        && (ignore_noloadbalance || !tag_true(status.tags.get("noloadbalance")))
        && within_lag(status, filters.max_lag)
        && filters
            .replication_state
            .as_ref()
            .is_none_or(|wanted| status.replication_state.as_deref() == Some(wanted.as_str()))
        && filters
            .tags
            .iter()
            .all(|(key, wanted)| status.tags.get(key).is_some_and(|v| tag_matches(v, wanted)))
}

/// An unknown lag counts as within the bound, as in Patroni (a replica that cannot say how
/// far behind it is is not taken out of rotation for that alone).
fn within_lag(status: &NodeStatus, max_lag: Option<u64>) -> bool {
    match (max_lag, own_lag(status)) {
        (Some(max), Some(lag)) => lag <= max,
        _ => true,
    }
}

/// True when this member is named in the cluster's `sync` key.
pub fn is_sync_standby(status: &NodeStatus) -> bool {
    status
        .cluster
        .as_ref()
        .and_then(|c| c.sync.as_ref())
        .is_some_and(|sync| sync.value.members().iter().any(|m| m == &status.name))
}

fn bool_word(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// A tag value is truthy as Patroni reads tags: `true`, `"true"`/`"on"`/`"yes"`, non-zero.
pub(crate) fn tag_true(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => bool_word(s).unwrap_or(false) || s == "1",
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// The tag equals the query value as a string, or both are the same boolean word.
fn tag_matches(value: &Value, wanted: &str) -> bool {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text == wanted {
        return true;
    }
    match (bool_word(&text), bool_word(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
