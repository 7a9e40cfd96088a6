//! What the agent publishes: its member document in the DCS and its status for the REST API.

use pgbaton_api::{NodeStatus, PgRole, ReplicationRow, SlotRow};
use pgbaton_core::{LocalPg, Observation, Phase};
use pgbaton_dcs::{Dcs, MemberDoc};

use super::{settings, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    pub(super) fn member_doc(&self, state_word: &str) -> MemberDoc {
        let mut doc = MemberDoc {
            conn_url: settings::conn_url(&self.cfg),
            api_url: settings::api_url(&self.cfg),
            state: state_word.to_string(),
            role: "replica".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            tags: self.cfg.tags.to_json_map(),
            ..Default::default()
        };
        if let Some(st) = &self.last_pg_status {
            doc.timeline = Some(st.timeline);
            if st.in_recovery {
                doc.receive_lsn = st.receive_lsn;
                doc.replay_lsn = st.replay_lsn;
                doc.xlog_location = match (st.receive_lsn, st.replay_lsn) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
                };
                doc.replication_state = st.wal_receiver.as_ref().map(|w| w.state().to_string());
                // For `ctl list --positions`: the lag in seconds is the age of this.
                if let Some(at) = &st.replay_timestamp {
                    doc.extra.insert(
                        "replay_timestamp".into(),
                        serde_json::Value::from(at.clone()),
                    );
                }
            } else {
                doc.role = "master".to_string();
                doc.xlog_location = st.wal_lsn;
            }
            if st.in_recovery && self.state.phase == Phase::StandbyLeader {
                // Patroni's role word for the leader of a standby cluster.
                doc.role = "standby_leader".to_string();
            }
            if st.pending_restart {
                doc.pending_restart = Some(true);
            }
        }
        if let Some(scheduled) = self.scheduled_restart_json() {
            doc.extra.insert("scheduled_restart".into(), scheduled);
        }
        // The watchdog is required and not usable: this member may not be promoted
        // (Patroni says so in GET /patroni; pgbaton also here, for the leader and ctl).
        if self.watchdog.failed(tokio::time::Instant::now()) {
            doc.extra
                .insert("watchdog_failed".into(), serde_json::Value::Bool(true));
        }
        // The leader's last pgbackrest check, for `ctl list -e`.
        if let Some(r) = self.repo_check.status() {
            doc.extra.insert("pgbackrest".into(), r.to_json());
        }
        doc
    }

    /// Leader: where the oldest WAL segment in its `pg_wal` starts, for `status` (replicas
    /// compare their position with it to tell that the WAL they need is gone).
    pub(super) fn oldest_wal(&self) -> Option<u64> {
        match self.pg.oldest_wal_lsn() {
            Ok(lsn) => lsn,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list pg_wal");
                None
            }
        }
    }

    /// Leader: each physical slot's `wal_status` and `safe_wal_size`, for `status`.
    pub(super) fn published_slots_wal(
        &self,
    ) -> std::collections::BTreeMap<String, pgbaton_dcs::SlotWal> {
        self.last_pg_status
            .iter()
            .filter(|st| !st.in_recovery)
            .flat_map(|st| st.slots.iter())
            .filter(|slot| slot.slot_type == "physical")
            .map(|slot| {
                (
                    slot.slot_name.clone(),
                    pgbaton_dcs::SlotWal {
                        wal_status: slot.wal_status.clone(),
                        safe_wal_size: slot.safe_wal_size,
                    },
                )
            })
            .collect()
    }

    /// Patroni's `scheduled_restart` object: `{"schedule", "restart_pending"?, "role"?}`.
    fn scheduled_restart_json(&self) -> Option<serde_json::Value> {
        let r = self.scheduled_restart.as_ref()?;
        let mut v = serde_json::json!({ "schedule": r.schedule });
        if r.restart_pending {
            v["restart_pending"] = true.into();
        }
        match r.role {
            Some(PgRole::Primary) => v["role"] = "primary".into(),
            Some(PgRole::Replica) => v["role"] = "replica".into(),
            _ => {}
        }
        Some(v)
    }

    /// Writable leader: PostgreSQL runs as a primary and the lease is certainly alive.
    fn writable_leader(&self, obs: &Observation) -> bool {
        let lease_ok = self
            .lease_valid_until()
            .is_some_and(|until| self.now() + self.ha.demote_margin_ms < until);
        let key_mine =
            self.cluster.as_ref().and_then(|c| c.leader_name()) == Some(self.cfg.name.as_str());
        // Failsafe: every member acknowledged us, and nobody else holds the key.
        let key_not_others = self
            .cluster
            .as_ref()
            .and_then(|c| c.leader_name())
            .is_none_or(|l| l == self.cfg.name);
        let failsafe_ok = key_not_others
            && self
                .failsafe_valid_until()
                .is_some_and(|until| self.now() + self.ha.demote_margin_ms < until);
        obs.pg.is_primary()
            && ((lease_ok && key_mine) || failsafe_ok)
            && self.state.phase == Phase::Leader
    }

    pub(super) fn publish_status(&self, obs: &Observation) {
        let st = self.last_pg_status.as_ref();
        let now_ms = self.host.unix_now_ms();
        let pg_role = match &obs.pg {
            LocalPg::Running(r) if r.in_recovery => PgRole::Replica,
            LocalPg::Running(_) => PgRole::Primary,
            _ => PgRole::Unknown,
        };
        let writable_leader = self.writable_leader(obs);
        self.repo_check.cycle(&self.spec, writable_leader);
        let status = NodeStatus {
            scope: self.cfg.scope.clone(),
            name: self.cfg.name.clone(),
            state: pgbaton_core::PublishedState::of_member(&self.state, &obs.pg, &obs.job)
                .as_str()
                .to_string(),
            pg_running: matches!(obs.pg, LocalPg::Running(_)),
            pg_role,
            writable_leader,
            holds_leader_key: self.cluster.as_ref().and_then(|c| c.leader_name())
                == Some(self.cfg.name.as_str()),
            standby_leader: pg_role == PgRole::Replica
                && self.state.phase == Phase::StandbyLeader
                && self.cluster.as_ref().and_then(|c| c.leader_name())
                    == Some(self.cfg.name.as_str()),
            server_version: st.map(|s| s.server_version),
            timeline: st.map(|s| s.timeline),
            postmaster_start_time: st.map(|s| s.postmaster_start_time.clone()),
            wal_position: st.and_then(|s| s.wal_lsn),
            received_location: st.and_then(|s| s.receive_lsn),
            replayed_location: st.and_then(|s| s.replay_lsn),
            replayed_timestamp: st.and_then(|s| s.replay_timestamp.clone()),
            replay_paused: st.is_some_and(|s| s.replay_paused),
            replication_state: st
                .and_then(|s| s.wal_receiver.as_ref().map(|w| w.state().to_string())),
            replication: st
                .map(|s| {
                    s.replication
                        .iter()
                        .map(|r| ReplicationRow {
                            usename: r.usename.clone(),
                            application_name: r.application_name.clone(),
                            client_addr: r.client_addr.clone(),
                            state: r.state.clone(),
                            sync_state: r.sync_state.clone(),
                            sync_priority: r.sync_priority,
                            replay_lag_bytes: match (s.wal_lsn, r.replay_lsn) {
                                (Some(w), Some(rp)) => Some(w.saturating_sub(rp)),
                                _ => None,
                            },
                        })
                        .collect()
                })
                .unwrap_or_default(),
            slots: st
                .map(|s| {
                    s.slots
                        .iter()
                        .map(|r| SlotRow {
                            slot_name: r.slot_name.clone(),
                            slot_type: r.slot_type.clone(),
                            active: r.active,
                            restart_lsn: r.restart_lsn,
                            retained_wal_bytes: r.retained_bytes,
                            wal_status: r.wal_status.clone(),
                            safe_wal_size: r.safe_wal_size,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            system_identifier: obs.pg.system_id().map(|id| id.to_string()),
            dcs_last_seen: self.dcs_last_seen_unix,
            failsafe_active: self.failsafe_active(),
            watchdog_failed: self.watchdog.failed(tokio::time::Instant::now()),
            pgbackrest: self.repo_check.status().map(|r| r.to_json()),
            logical: self.logical_report(writable_leader),
            last_cycle_unix_ms: now_ms,
            ttl_ms: self.ha.ttl_ms,
            tags: self.cfg.tags.to_json_map(),
            pending_restart: st.is_some_and(|s| s.pending_restart),
            scheduled_restart: self.scheduled_restart_json(),
            paused: self.ha.paused,
            last_decision: self.last_reason.clone(),
            leader_changes: self.leader_changes,
            cluster: self.cluster.clone(),
            no_leader_seen: obs.dcs.as_ref().is_some_and(|v| v.leader.is_none()),
            positions_read_at: st.and(self.last_pg_status_asked_at),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        self.status_tx.send_replace(status);
    }
}
