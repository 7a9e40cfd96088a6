//! Permanent logical slots (`slots: {name: {type: logical, database, plugin}}` in the dynamic
//! configuration) kept through failovers on PostgreSQL 15, which has no failover slots.
//!
//! - The leader creates the missing slots and publishes each slot's `confirmed_flush_lsn`
//!   in the DCS `status` key (`slots`, Patroni's shape).
//! - A replica that may be promoted holds a copy of each slot: when one is missing, it reads
//!   the slot's state file from the leader, and — only if its own `pg_wal` still has the WAL
//!   the slot needs — stops PostgreSQL and installs the copies (one restart for all; the HA
//!   core starts it again as a replica). It advances its copies to the positions the leader
//!   published, never further, so a promoted replica resumes the consumer at (at most
//!   slightly before) what the consumer confirmed: no change lost, a few maybe resent.
//! - A replica drops its copies of slots that left the configuration (all of them when it
//!   is tagged `nofailover`).
//!
//! The queries run in a background task, never in the HA loop (a slow server must not delay
//! a lease renewal); the loop only reads the results: the positions to publish, and copies
//! ready to install. The HA core decides when a replica restarts to install them (the
//! observation `slot_copies_ready`, the action `InstallSlotCopies`, run as a `Stop` job:
//! never while another operation runs or a switchover is under way); the rounds themselves
//! ride on the `SyncSlots` action, like the physical slots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use pgbaton_core::JobKind;
use pgbaton_dcs::Dcs;
use pgbaton_postgres as pg;
use tokio::time::Instant;

use super::{settings, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

/// At most one copy (a replica restart) per this long.
const COPY_BACKOFF: Duration = Duration::from_secs(30);

/// What the background task found; read by the HA loop.
#[derive(Default)]
pub(super) struct LogicalShared {
    /// Leader: `confirmed_flush_lsn` per permanent logical slot.
    pub positions: BTreeMap<String, u64>,
    /// Replica: state files read from the leader, ready to install while stopped.
    pub ready_copies: Vec<(String, Vec<u8>)>,
    /// A task runs.
    pub busy: bool,
    /// The last problem logged (not repeated every cycle).
    pub last_error: Option<String>,
}

pub(super) type SharedLogical = Arc<Mutex<LogicalShared>>;

/// What one round of the task needs to know.
struct Round<G> {
    pg: G,
    wanted: Vec<pg::LogicalSlotSpec>,
    /// Replica: copies of slots no longer configured, to drop.
    stale: Vec<String>,
    timeout: Duration,
    role: Role,
}

enum Role {
    Leader,
    Replica {
        published: BTreeMap<String, u64>,
        leader: Option<pg::Upstream>,
        copy_allowed: bool,
    },
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// Start a round of logical slot maintenance in the background (none if one runs), and
    /// install copies a previous round found ready.
    pub(super) fn logical_slots(&mut self, in_recovery: bool, timeout: Duration) {
        let mut wanted = settings::permanent_logical_slots(&self.dynamic);
        if in_recovery && self.ha.nofailover {
            // Never promoted: it keeps no copies (they would only hold WAL back).
            wanted.clear();
        }
        // On a replica every logical slot is a copy of ours (PostgreSQL 15 cannot create
        // one on a standby): those that left the configuration are dropped.
        let stale: Vec<String> = self
            .last_pg_status
            .iter()
            .filter(|st| st.in_recovery)
            .flat_map(|st| st.slots.iter())
            .filter(|slot| slot.slot_type == "logical" && !slot.active)
            .filter(|slot| !wanted.iter().any(|w| w.name == slot.slot_name))
            .map(|slot| slot.slot_name.clone())
            .collect();
        if wanted.is_empty() && stale.is_empty() {
            lock(&self.logical).positions.clear();
            return;
        }
        let role = if in_recovery {
            let leader = self
                .cluster
                .as_ref()
                .and_then(|c| c.leader_name())
                .and_then(|l| self.upstream_of(l));
            Role::Replica {
                published: self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .map(|s| s.slots.clone())
                    .unwrap_or_default(),
                leader,
                copy_allowed: !self.jobs.is_running()
                    && self
                        .last_slot_copy
                        .is_none_or(|at| at.elapsed() >= COPY_BACKOFF),
            }
        } else {
            Role::Leader
        };
        {
            let mut shared = lock(&self.logical);
            if shared.busy {
                return;
            }
            shared.busy = true;
        }
        let round = Round {
            pg: self.pg.clone(),
            wanted,
            stale,
            timeout,
            role,
        };
        let shared = self.logical.clone();
        tokio::spawn(
            async move {
                let outcome = round.run().await;
                let mut s = lock(&shared);
                s.busy = false;
                match outcome {
                    Ok(Outcome::Positions(p)) => s.positions = p,
                    Ok(Outcome::Copies(c)) => {
                        s.positions.clear();
                        if !c.is_empty() {
                            s.ready_copies = c;
                        }
                    }
                    Err(message) => {
                        if s.last_error.as_deref() != Some(message.as_str()) {
                            tracing::warn!("{message}");
                            s.last_error = Some(message);
                        }
                        return;
                    }
                }
                s.last_error = None;
            }
            .in_current_span(),
        );
    }

    /// The positions the leader publishes in `status` (Patroni 3's `slots`): each physical
    /// slot's `restart_lsn` and each permanent logical slot's `confirmed_flush_lsn`.
    pub(super) fn published_slot_positions(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .last_pg_status
            .iter()
            .filter(|st| !st.in_recovery)
            .flat_map(|st| st.slots.iter())
            .filter(|slot| slot.slot_type == "physical")
            .filter_map(|slot| slot.restart_lsn.map(|lsn| (slot.slot_name.clone(), lsn)))
            .collect();
        out.extend(lock(&self.logical).positions.clone());
        out
    }

    /// Warn once when a slot starts keeping more WAL than `pgbaton.slot_retained_wal_warning_mb`
    /// (and once when it is back under): a forgotten slot fills the disk.
    pub(super) fn warn_retained_wal(&mut self) {
        let limit_mb = self.cfg.pgbaton.slot_retained_wal_warning_mb;
        if limit_mb == 0 {
            return;
        }
        let Some(st) = self.last_pg_status.as_ref() else {
            return;
        };
        for slot in &st.slots {
            let mb = slot.retained_bytes.unwrap_or(0) / 1024 / 1024;
            let warned = self.slots_over_limit.contains(&slot.slot_name);
            if mb > limit_mb && !warned {
                tracing::warn!(slot = %slot.slot_name, retained_mb = mb, limit_mb, active = slot.active,
                    "replication slot keeps more WAL than pgbaton.slot_retained_wal_warning_mb: its consumer is behind or gone; drop the slot if it is not needed");
                self.slots_over_limit.insert(slot.slot_name.clone());
            } else if mb <= limit_mb && warned {
                tracing::info!(slot = %slot.slot_name, retained_mb = mb, "replication slot back under the retained WAL limit");
                self.slots_over_limit.remove(&slot.slot_name);
            }
        }
    }

    /// Copies of the leader's slots wait to be installed (an observation for the core,
    /// which decides when the replica restarts for them: `JobAction::InstallSlotCopies`).
    pub(super) fn slot_copies_ready(&self) -> bool {
        !lock(&self.logical).ready_copies.is_empty()
    }

    /// Stop PostgreSQL and install the copies (the core starts it again as a replica).
    pub(super) fn install_ready_copies(&mut self) {
        if self.jobs.is_running() {
            return;
        }
        let copies = std::mem::take(&mut lock(&self.logical).ready_copies);
        if copies.is_empty() {
            return;
        }
        self.last_slot_copy = Some(Instant::now());
        let names: Vec<&str> = copies.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(slots = ?names, "restarting PostgreSQL to install copies of the leader's logical slots");
        let local = self.pg.clone();
        self.jobs.start(JobKind::Stop, async move {
            local
                .stop(pg::StopMode::Fast, Duration::from_secs(30))
                .await?;
            for (name, state) in copies {
                local
                    .install_slot_state(&name, &state)
                    .map_err(|e| e.to_string())?;
                tracing::info!(slot = %name, "installed a copy of the leader's logical slot");
            }
            Ok::<(), String>(())
        });
    }
}

enum Outcome {
    Positions(BTreeMap<String, u64>),
    Copies(Vec<(String, Vec<u8>)>),
}

impl<G: Postgres> Round<G> {
    async fn run(self) -> Result<Outcome, String> {
        match &self.role {
            Role::Leader => self.leader().await.map(Outcome::Positions),
            Role::Replica {
                published,
                leader,
                copy_allowed,
            } => self
                .replica(published, leader.as_ref(), *copy_allowed)
                .await
                .map(Outcome::Copies),
        }
    }

    /// Create the missing slots; read their positions.
    async fn leader(&self) -> Result<BTreeMap<String, u64>, String> {
        let created = self
            .pg
            .ensure_logical_slots(&self.wanted, self.timeout)
            .await
            .map_err(|e| format!("cannot create permanent logical slots: {e}"))?;
        for s in created {
            tracing::info!(slot = %s, "created permanent logical slot");
        }
        let positions = self
            .pg
            .logical_slot_positions(self.timeout)
            .await
            .map_err(|e| format!("cannot read logical slot positions: {e}"))?;
        Ok(positions
            .into_iter()
            .filter(|(name, _)| self.wanted.iter().any(|w| &w.name == name))
            .filter_map(|(name, p)| p.confirmed_flush.map(|lsn| (name, lsn)))
            .collect())
    }

    /// Advance the copies to the published positions; read missing ones from the leader.
    async fn replica(
        &self,
        published: &BTreeMap<String, u64>,
        leader: Option<&pg::Upstream>,
        copy_allowed: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        if !self.stale.is_empty() {
            let dropped = self
                .pg
                .drop_logical_slots(&self.stale, self.timeout)
                .await
                .map_err(|e| format!("cannot drop logical slot copies: {e}"))?;
            for slot in dropped {
                tracing::info!(slot = %slot, "dropped the copy of a logical slot that left the configuration");
            }
        }
        if self.wanted.is_empty() {
            return Ok(Vec::new());
        }
        let local = self
            .pg
            .logical_slot_positions(self.timeout)
            .await
            .map_err(|e| format!("cannot read the logical slot copies: {e}"))?;
        let mut missing = Vec::new();
        for slot in &self.wanted {
            let Some(copy) = local.get(&slot.name).filter(|c| !c.lost) else {
                missing.push(slot);
                continue;
            };
            let Some(&target) = published.get(&slot.name) else {
                continue;
            };
            if copy.confirmed_flush.is_some_and(|at| at >= target) {
                continue;
            }
            match self
                .pg
                .advance_slot(&slot.name, &slot.database, target, self.timeout)
                .await
            {
                Ok(_) => {}
                Err(pg::PgError::SlotWalMissing { .. }) => missing.push(slot),
                Err(e) => {
                    tracing::debug!(slot = %slot.name, error = %e, "cannot advance the logical slot copy")
                }
            }
        }
        let (Some(leader), true, false) = (leader, copy_allowed, missing.is_empty()) else {
            return Ok(Vec::new());
        };
        let oldest_local = match self.pg.oldest_wal_lsn() {
            Ok(Some(lsn)) => lsn,
            _ => return Ok(Vec::new()),
        };
        let mut copies = Vec::new();
        for slot in missing {
            let state = match self
                .pg
                .read_slot_state(leader, &slot.name, self.timeout)
                .await
            {
                Ok(state) => state,
                Err(e) => {
                    tracing::debug!(slot = %slot.name, error = %e, "cannot read the slot from the leader yet");
                    continue;
                }
            };
            match pg::parse_slot_state(&slot.name, &state) {
                Ok(parsed) if parsed.restart_lsn >= oldest_local => {
                    copies.push((slot.name.clone(), state))
                }
                Ok(parsed) => tracing::info!(
                    slot = %slot.name,
                    slot_restart_lsn = %pg::format_lsn(parsed.restart_lsn),
                    oldest_local_wal = %pg::format_lsn(oldest_local),
                    "not copying the logical slot yet: this replica no longer has the WAL it needs (it will once the consumer confirms newer changes)"
                ),
                Err(e) => {
                    tracing::warn!(slot = %slot.name, error = %e, "the leader's slot state is unusable")
                }
            }
        }
        Ok(copies)
    }
}

fn lock(shared: &SharedLogical) -> std::sync::MutexGuard<'_, LogicalShared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
