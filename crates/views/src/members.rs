//! The per-member facts that `list` and `topology` show, derived from the DCS documents the
//! way patronictl's `cluster_as_json` and `output_members` derive them.

use pgbaton_dcs::{ClusterState, MemberDoc};
use serde_json::Value;

/// How far a member is behind the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lag {
    /// The leader has no lag column.
    Leader,
    Bytes(u64),
    /// The member's or the leader's position is not known.
    Unknown,
}

/// One member as the views show it.
pub(crate) struct MemberView<'a> {
    pub name: &'a str,
    pub doc: &'a MemberDoc,
    /// `leader`, `standby_leader`, `sync_standby` or `replica` (Patroni's `/cluster` words).
    pub role: &'static str,
    /// `host` or `host:port`, empty when `conn_url` cannot be parsed.
    pub host: String,
    pub state: String,
    pub lag: Lag,
}

impl MemberView<'_> {
    /// patronictl's `role.replace('_', ' ').title()`.
    pub fn role_title(&self) -> &'static str {
        match self.role {
            "leader" => "Leader",
            "standby_leader" => "Standby Leader",
            "sync_standby" => "Sync Standby",
            "quorum_standby" => "Quorum Standby",
            _ => "Replica",
        }
    }

    /// The lag in whole MB as patronictl rounds it (Python's `round`, ties to even), or
    /// `unknown`, or empty for the leader.
    pub fn lag_in_mb(&self) -> Value {
        match self.lag {
            Lag::Leader => Value::from(""),
            Lag::Unknown => Value::from("unknown"),
            Lag::Bytes(bytes) => {
                Value::from((bytes as f64 / 1024.0 / 1024.0).round_ties_even() as u64)
            }
        }
    }
}

/// All members, sorted by name.
pub(crate) fn member_views(state: &ClusterState) -> Vec<MemberView<'_>> {
    let leader = state.leader_name();
    let sync = state
        .sync
        .as_ref()
        .map(|s| s.value.members())
        .unwrap_or_default();
    // Quorum commit (`synchronous_mode: quorum`): the named members are quorum standbys.
    let quorum = state.config.as_ref().is_some_and(|c| {
        c.value
            .get("synchronous_mode")
            .and_then(serde_json::Value::as_str)
            == Some("quorum")
    });
    let sync_role = if quorum {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let leader_optime = state.leader_optime();
    let addresses: Vec<Option<(String, u16)>> =
        state.members.values().map(MemberDoc::host_port).collect();
    let append_port = show_ports(&addresses);

    state
        .members
        .iter()
        .zip(addresses)
        .map(|((name, doc), address)| {
            let is_leader = Some(name.as_str()) == leader;
            let role = if state.leads_as_standby(name, doc) {
                "standby_leader"
            } else if is_leader {
                "leader"
            } else if sync.iter().any(|s| s == name) {
                sync_role
            } else {
                "replica"
            };
            let host = match address {
                Some((host, port)) if append_port => format!("{host}:{port}"),
                Some((host, _)) => host,
                None => String::new(),
            };
            let streaming =
                doc.is_running() && doc.replication_state.as_deref() == Some("streaming");
            let state_word = if !is_leader && streaming {
                "streaming".to_string()
            } else {
                doc.state.clone()
            };
            let lag = if is_leader {
                Lag::Leader
            } else {
                match (leader_optime, doc.xlog_location) {
                    (Some(leader), Some(member)) => Lag::Bytes(leader.saturating_sub(member)),
                    _ => Lag::Unknown,
                }
            };
            MemberView {
                name,
                doc,
                role,
                host,
                state: state_word,
                lag,
            }
        })
        .collect()
}

/// patronictl shows `host:port` for every member as soon as one runs on a port other than
/// 5432 or two members share a host; otherwise the bare host.
fn show_ports(addresses: &[Option<(String, u16)>]) -> bool {
    let known: Vec<&(String, u16)> = addresses.iter().flatten().collect();
    let mut hosts: Vec<&str> = known.iter().map(|(h, _)| h.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    known.iter().any(|(_, port)| *port != 5432) || hosts.len() < known.len()
}

/// `--positions`: Receive LSN, Receive Lag, Replay LSN, Replay Lag (MB, as patronictl 4.1
/// shows them) and the lag in seconds: 0 while the replica has replayed the leader's last
/// known position, else the age at `now_unix_ms` of the last transaction it replayed (the
/// `replay_timestamp` it publishes). Empty cells for the leader and where unknown.
pub(crate) fn position_cells(
    m: &MemberView<'_>,
    state: &ClusterState,
    now_unix_ms: u64,
) -> Vec<Value> {
    if m.lag == Lag::Leader {
        return vec![Value::from(""); 5];
    }
    let leader = state.leader_optime();
    let mb = |lsn: Option<u64>| match (leader, lsn) {
        (Some(l), Some(x)) => {
            Value::from((l.saturating_sub(x) as f64 / 1024.0 / 1024.0).round_ties_even() as u64)
        }
        _ => Value::from("unknown"),
    };
    let text = |lsn: Option<u64>| {
        lsn.map(format_lsn)
            .map(Value::from)
            .unwrap_or_else(|| Value::from(""))
    };
    let behind = matches!((leader, m.doc.replay_lsn), (Some(l), Some(r)) if r < l);
    let replayed_at = m
        .doc
        .extra
        .get("replay_timestamp")
        .and_then(Value::as_str)
        .and_then(epoch_ms);
    let seconds = match (behind, replayed_at) {
        (false, _) if m.doc.replay_lsn.is_some() => Value::from(0),
        (true, Some(at)) => Value::from(now_unix_ms.saturating_sub(at) / 1000),
        _ => Value::from("unknown"),
    };
    vec![
        text(m.doc.receive_lsn),
        mb(m.doc.receive_lsn),
        text(m.doc.replay_lsn),
        mb(m.doc.replay_lsn),
        seconds,
    ]
}

use pgbaton_core::pg_text::format_lsn;

/// `2026-11-26 14:51:02.232496+00` (PostgreSQL's text) or RFC 3339, in Unix milliseconds.
fn epoch_ms(text: &str) -> Option<u64> {
    u64::try_from(pgbaton_core::pg_text::timestamp_micros(text)? / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag_mb(bytes: u64) -> Value {
        let doc = MemberDoc::default();
        MemberView {
            name: "n",
            doc: &doc,
            role: "replica",
            host: String::new(),
            state: String::new(),
            lag: Lag::Bytes(bytes),
        }
        .lag_in_mb()
    }

    #[test]
    fn lag_rounds_like_python_round() {
        assert_eq!(lag_mb(0), Value::from(0));
        assert_eq!(lag_mb(524_287), Value::from(0));
        assert_eq!(lag_mb(524_288), Value::from(0)); // 0.5 → 0 (ties to even)
        assert_eq!(lag_mb(1_572_864), Value::from(2)); // 1.5 → 2
        assert_eq!(lag_mb(2_621_440), Value::from(2)); // 2.5 → 2
        assert_eq!(lag_mb(3 * 1_048_576 + 1), Value::from(3));
    }

    #[test]
    fn ports_are_shown_when_not_5432_or_hosts_repeat() {
        let at = |h: &str, p: u16| Some((h.to_string(), p));
        assert!(!show_ports(&[at("a", 5432), at("b", 5432)]));
        assert!(show_ports(&[at("a", 5432), at("b", 5433)]));
        assert!(show_ports(&[at("a", 5432), at("a", 5432)]));
        assert!(!show_ports(&[at("a", 5432), None]));
    }
}
