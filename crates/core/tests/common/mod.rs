//! Builders shared by the core's switchover tests: a three-member cluster (node1..node3,
//! system id 42) seen by node1, its observations and decisions.
#![allow(dead_code)] // each test file uses some of them

use pgbaton_core::{DcsAction, PgAction};
use std::collections::BTreeMap;

use pgbaton_core::*;

pub const ME: &str = "node1";

pub fn cfg() -> HaConfig {
    HaConfig::with_defaults(ME)
}

pub fn conn(name: &str, flush: Lsn, synchronous: bool) -> ReplicaConnection {
    ReplicaConnection {
        name: name.into(),
        streaming: true,
        synchronous,
        flush_lsn: Some(flush),
    }
}

pub fn primary(lsn: Lsn, replicas: Vec<ReplicaConnection>) -> LocalPg {
    LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery: false,
        timeline: 1,
        lsn,
        streaming: false,
        replicas,
    })
}

/// A replica streaming at `lsn`, with no replica of its own.
pub fn replica(lsn: Lsn) -> LocalPg {
    replica_of(lsn, vec![])
}

/// A replica streaming at `lsn` with these replicas cascading from it.
pub fn replica_of(lsn: Lsn, replicas: Vec<ReplicaConnection>) -> LocalPg {
    LocalPg::Running(RunningPg {
        system_id: 42,
        in_recovery: true,
        timeline: 1,
        lsn,
        streaming: true,
        replicas,
    })
}

pub fn view(leader: Option<&str>) -> DcsView {
    let mut members = BTreeMap::new();
    for m in ["node1", "node2", "node3"] {
        members.insert(
            m.to_string(),
            MemberView {
                state: "running".into(),
                is_primary: Some(m) == leader,
                is_standby_leader: false,
                lsn: Some(1000),
                timeline: Some(1),
                nofailover: false,
                replicatefrom: None,
                nosync: false,
                clonefrom: false,
            },
        );
    }
    DcsView {
        initialize: Initialize::SystemId(42),
        leader: leader.map(str::to_string),
        members,
        leader_optime: Some(1000),
        history: Default::default(),
        config_revision: None,
        failover: None,
        sync: None,
        failsafe: None,
        leader_oldest_wal: None,
        routers: Default::default(),
    }
}

pub fn obs(pg: LocalPg, view: DcsView) -> Observation {
    Observation {
        now: 50_000,
        pg,
        job: JobView::Idle,
        dcs: Some(view),
        lease_valid_until: Some(53_000),
        peers: BTreeMap::new(),
        configured_upstream: None,
        follows_remote_primary: false,
        unix_now_ms: 1_800_000_000_000,
        configured_sync: None,
        failsafe_acked_at: None,
        failsafe_promised_until: None,
        missing_wal_segment: None,
        forked_from_upstream: false,
        slot_copies_ready: false,
        command: None,
        watchdog: Default::default(),
    }
}

/// A stopped data directory of system 42 at `lsn` (`was_primary`: pg_control says it last ran
/// as a primary).
pub fn stopped(was_primary: bool, lsn: Lsn) -> LocalPg {
    LocalPg::Stopped {
        system_id: 42,
        was_primary,
        timeline: 1,
        lsn,
    }
}

/// A fresh member state in `phase`.
pub fn in_phase(phase: Phase) -> MemberState {
    MemberState {
        phase,
        ..MemberState::new()
    }
}

pub fn leader_state() -> MemberState {
    MemberState {
        phase: Phase::Leader,
        ..MemberState::new()
    }
}

pub fn ops(d: &Decision) -> Vec<Action> {
    d.actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::Dcs(DcsAction::RenewLease)
                    | Action::Dcs(DcsAction::PublishMember)
                    | Action::Pg(PgAction::SyncSlots { .. })
                    | Action::Dcs(DcsAction::WriteStatus { .. })
            )
        })
        .cloned()
        .collect()
}

pub fn request(leader: Option<&str>, candidate: Option<&str>) -> Option<FailoverRequest> {
    Some(FailoverRequest {
        leader: leader.map(str::to_string),
        candidate: candidate.map(str::to_string),
        scheduled_at_unix_ms: None,
        revision: 1,
    })
}
