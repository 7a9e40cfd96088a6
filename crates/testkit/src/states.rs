//! Cluster states as read from the DCS, for the tests of the views (`pgbaton ctl list`,
//! `history`) and of the API's request checks, shaped like the 3-member Patroni 3.0.2
//! cluster observed on this machine (PATRONI-COMPAT.md).

use pgbaton_dcs::{
    ClusterState, HistoryEntry, LeaderKey, MemberDoc, StatusDoc, SyncDoc, Versioned,
};
use serde_json::{json, Value};

pub const SYSID: &str = "7712492421097396467";
pub const OPTIME: u64 = 67404768;

pub fn member(port: u16, role: &str, state: &str, xlog: Option<u64>) -> MemberDoc {
    MemberDoc {
        conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
        api_url: format!("http://127.0.0.1:{}/patroni", port + 2567),
        state: state.to_string(),
        role: role.to_string(),
        version: "0.1.0".to_string(),
        xlog_location: xlog,
        timeline: Some(3),
        ..MemberDoc::default()
    }
}

pub fn streaming(mut doc: MemberDoc) -> MemberDoc {
    doc.replication_state = Some("streaming".to_string());
    doc
}

/// node1 leads; node2 streams with no lag; node3 is 3 MB behind and not streaming.
pub fn healthy() -> ClusterState {
    let mut state = ClusterState {
        initialize: Some(SYSID.to_string()),
        leader: Some(LeaderKey {
            name: "node1".to_string(),
            lease_id: 1,
            mod_revision: 5,
        }),
        status: Some(StatusDoc {
            optime: Some(OPTIME),
            ..StatusDoc::default()
        }),
        ..ClusterState::default()
    };
    state.members.insert(
        "node1".into(),
        member(5441, "master", "running", Some(OPTIME)),
    );
    state.members.insert(
        "node2".into(),
        streaming(member(5442, "replica", "running", Some(OPTIME))),
    );
    state.members.insert(
        "node3".into(),
        member(5443, "replica", "running", Some(OPTIME - 3 * 1024 * 1024)),
    );
    state
}

pub fn with_sync(mut state: ClusterState, standby: &str) -> ClusterState {
    state.sync = Some(Versioned {
        value: SyncDoc {
            leader: Some("node1".into()),
            sync_standby: Some(standby.into()),
            ..SyncDoc::default()
        },
        mod_revision: 7,
    });
    state
}

pub fn with_config(mut state: ClusterState, config: Value) -> ClusterState {
    state.config = Some(Versioned {
        value: config,
        mod_revision: 3,
    });
    state
}

pub fn with_history(mut state: ClusterState) -> ClusterState {
    state.history = HistoryEntry::parse_list(
        &json!([
            [
                1,
                67271592,
                "no recovery target specified",
                "2026-11-26T14:50:25.970867+00:00",
                "node2"
            ],
            [2, 67404312, "no recovery target specified"]
        ])
        .to_string(),
    );
    state
}
