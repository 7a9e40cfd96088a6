//! The web status page on the router's status port: `GET /` is one HTML page (embedded from
//! `assets/status.html`) whose few lines of JavaScript poll, every second, `GET /cluster`
//! (this module: the members with role, state, timeline, lag in bytes and seconds, the
//! failover history from the DCS `history` key, and the router's `/status` document) and
//! `GET /pools` (the router's pools). `/cluster` reads the cluster from etcd on each request
//! (read-only, as `pgbaton ctl list` does), so a page shows what etcd holds now, not only
//! what this router routes to.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use pgbaton_dcs::{ClusterPath, ClusterState};
use serde_json::{json, Value};

use crate::shared::Shared;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("../assets/status.html");

/// How long one `/cluster` read of etcd may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// `/` (and `/status.html`): the page; `/cluster`: its data.
pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/", get(page))
        .route("/status.html", get(page))
        .route("/cluster", get(cluster))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn cluster(State(shared): State<Arc<Shared>>) -> Response {
    let path = ClusterPath::new(&shared.cfg.namespace, &shared.cfg.scope);
    let loaded = pgbaton_dcs::load_cluster_with(
        &shared.cfg.etcd_hosts,
        &shared.cfg.etcd_access,
        &path,
        ETCD_TIMEOUT,
    )
    .await;
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut doc = match &loaded {
        Ok(state) => cluster_json(state, now_ms),
        Err(e) => json!({"members": [], "history": [], "leader": null, "dcs_error": e.to_string()}),
    };
    doc["scope"] = json!(shared.cfg.scope);
    doc["now_ms"] = json!(now_ms);
    doc["router"] = crate::api::status_json(&shared);
    ([(header::CACHE_CONTROL, "no-store")], Json(doc)).into_response()
}

/// The page's view of one cluster state read at `now_ms` (Unix milliseconds).
pub(crate) fn cluster_json(state: &ClusterState, now_ms: u64) -> Value {
    let leader = state.leader.as_ref().map(|l| l.name.clone());
    let leader_optime = state.leader_optime();
    let sync: Vec<String> = state
        .sync
        .as_ref()
        .map(|s| s.value.members())
        .unwrap_or_default();
    let members: Vec<Value> = state
        .members
        .iter()
        .map(|(name, doc)| {
            let is_leader = leader.as_deref() == Some(name.as_str());
            let role = if is_leader {
                "Leader"
            } else if sync.iter().any(|s| s == name) {
                "Sync Standby"
            } else {
                "Replica"
            };
            let behind = |lsn: Option<u64>| match (is_leader, leader_optime, lsn) {
                (true, _, _) => Some(0),
                (false, Some(l), Some(x)) => Some(l.saturating_sub(x)),
                _ => None,
            };
            let replay_lag = behind(doc.replay_lsn.or(doc.xlog_location));
            let replayed_at = doc
                .extra
                .get("replay_timestamp")
                .and_then(Value::as_str)
                .and_then(epoch_ms);
            let lag_seconds = match (is_leader, replay_lag, replayed_at) {
                (true, _, _) => Some(0.0),
                (false, Some(0), _) => Some(0.0),
                (false, Some(_), Some(at)) => Some(now_ms.saturating_sub(at) as f64 / 1000.0),
                _ => None,
            };
            json!({
                "name": name,
                "role": role,
                // As `ctl list` words it: a replica whose WAL receiver streams is "streaming".
                "state": if !is_leader && doc.is_running() && doc.replication_state.as_deref() == Some("streaming") {
                    "streaming"
                } else {
                    doc.state.as_str()
                },
                "timeline": doc.timeline,
                "host": doc.host_port().map(|(h, p)| format!("{h}:{p}")),
                "api_url": doc.api_url,
                "lsn": doc.xlog_location.map(lsn_text),
                "receive_lsn": doc.receive_lsn.map(lsn_text),
                "replay_lsn": doc.replay_lsn.map(lsn_text),
                "receive_lag_bytes": if is_leader { Some(0) } else { behind(doc.receive_lsn) },
                "lag_bytes": replay_lag,
                "lag_seconds": lag_seconds,
                "replication_state": doc.replication_state,
                "pending_restart": doc.pending_restart.unwrap_or(false),
                "tags": doc.tags,
            })
        })
        .collect();
    let history: Vec<Value> = state
        .history
        .iter()
        .map(|h| {
            json!({
                "timeline": h.timeline,
                "lsn": lsn_text(h.lsn),
                "reason": h.reason,
                "timestamp": h.timestamp,
                "new_leader": h.new_leader,
            })
        })
        .collect();
    json!({
        "leader": leader,
        "leader_lsn": leader_optime.map(lsn_text),
        "members": members,
        "history": history,
        "paused": state.config.as_ref().and_then(|c| c.value.get("pause")).and_then(Value::as_bool).unwrap_or(false),
        "dcs_error": null,
    })
}

use pgbaton_core::pg_text::format_lsn as lsn_text;

/// `2026-11-26 14:51:02.232496+00` (PostgreSQL's text) or RFC 3339, in Unix milliseconds.
fn epoch_ms(text: &str) -> Option<u64> {
    u64::try_from(pgbaton_core::pg_text::timestamp_micros(text)? / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbaton_dcs::{HistoryEntry, LeaderKey, MemberDoc};

    fn member(
        role: &str,
        tl: u32,
        xlog: u64,
        replay: Option<u64>,
        replayed: Option<&str>,
    ) -> MemberDoc {
        let mut doc = MemberDoc {
            conn_url: "postgres://10.0.0.1:5432/postgres".into(),
            api_url: "http://10.0.0.1:8008/patroni".into(),
            state: "running".into(),
            role: role.into(),
            xlog_location: Some(xlog),
            replay_lsn: replay,
            receive_lsn: replay,
            timeline: Some(tl),
            ..MemberDoc::default()
        };
        if let Some(t) = replayed {
            doc.extra.insert("replay_timestamp".into(), json!(t));
        }
        doc
    }

    #[test]
    fn members_get_roles_lag_in_bytes_and_seconds_and_history_rows() {
        let mut state = ClusterState {
            leader: Some(LeaderKey {
                name: "b".into(),
                lease_id: 1,
                mod_revision: 1,
            }),
            ..ClusterState::default()
        };
        state.members.insert(
            "a".into(),
            member("replica", 2, 900, Some(900), Some("2026-11-26 14:51:00+00")),
        );
        state
            .members
            .insert("b".into(), member("master", 2, 1000, None, None));
        state
            .members
            .insert("c".into(), member("replica", 2, 1000, Some(1000), None));
        state.history.push(HistoryEntry {
            timeline: 1,
            lsn: 0x3000060,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-11-26T14:50:00+00:00".into()),
            new_leader: Some("b".into()),
        });
        // 14:51:02.5 UTC that day.
        let now = 1_795_704_662_500;
        let v = cluster_json(&state, now);
        assert_eq!(v["leader"], "b");
        let m = v["members"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0]["name"].as_str(), m[0]["role"].as_str()),
            (Some("a"), Some("Replica"))
        );
        assert_eq!(m[0]["lag_bytes"], 100);
        assert_eq!(m[0]["lag_seconds"], 2.5);
        assert_eq!(m[1]["role"], "Leader");
        assert_eq!(m[1]["lag_bytes"], 0);
        assert_eq!(m[2]["lag_bytes"], 0);
        assert_eq!(m[2]["lag_seconds"], 0.0);
        assert_eq!(m[0]["host"], "10.0.0.1:5432");
        let h = v["history"].as_array().unwrap();
        assert_eq!(h[0]["timeline"], 1);
        assert_eq!(h[0]["lsn"], "0/3000060");
        assert_eq!(h[0]["new_leader"], "b");
    }

    #[test]
    fn the_page_polls_its_two_json_endpoints() {
        assert!(PAGE.contains("fetch('cluster'"));
        assert!(PAGE.contains("fetch('pools'"));
        assert!(PAGE.contains("setInterval"));
    }
}
