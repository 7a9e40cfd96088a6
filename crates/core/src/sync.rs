//! Synchronous replication, managed by the leader from cluster state (Patroni's protocol).
//!
//! The `sync` key names the members that hold every commit the leader acknowledged. It only
//! ever names members PostgreSQL really waits for:
//! * a standby **leaves** the key before it leaves `synchronous_standby_names`;
//! * a standby **enters** `synchronous_standby_names` first, and the key only once
//!   pg_stat_replication shows it as `sync`/`quorum` *and* it has flushed past the position
//!   the leader had when the names changed (so it also holds what was acknowledged before).
//!
//! An automatic failover promotes only a member the key names (see `election.rs`).

use crate::action::Action;
use crate::config::SyncMode;
use crate::observation::{DcsView, ReplicaConnection, RunningPg, SyncStandbyNames};
use crate::state::MemberState;
use crate::HaConfig;

/// The members the key names for this leader (empty when the key names another leader).
pub(crate) fn key_members(cfg: &HaConfig, view: &DcsView) -> Vec<String> {
    match &view.sync {
        Some(key) if key.leader.as_deref() == Some(cfg.name.as_str()) => key.members.clone(),
        _ => Vec::new(),
    }
}

/// What `synchronous_standby_names` should be now.
pub(crate) fn desired_names(
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
) -> Option<SyncStandbyNames> {
    let current = key_members(cfg, view);
    let mut candidates: Vec<&ReplicaConnection> = pg
        .replicas
        .iter()
        .filter(|r| {
            r.streaming
                && r.name != cfg.name
                && view.members.get(&r.name).is_some_and(|m| !m.nosync)
        })
        .collect();
    // Keep the current synchronous standbys first (stability), then the most advanced.
    candidates.sort_by(|a, b| {
        current
            .contains(&b.name)
            .cmp(&current.contains(&a.name))
            .then(b.flush_lsn.cmp(&a.flush_lsn))
            .then(a.name.cmp(&b.name))
    });
    let wanted = cfg.synchronous.count.max(1) as usize;
    match cfg.synchronous.mode {
        SyncMode::Off => None,
        _ if candidates.is_empty() => cfg.synchronous.strict.then_some(SyncStandbyNames::Wildcard),
        SyncMode::On => {
            let members: Vec<String> = candidates
                .iter()
                .take(wanted)
                .map(|r| r.name.clone())
                .collect();
            Some(SyncStandbyNames::First {
                count: members.len() as u32,
                members,
            })
        }
        SyncMode::Quorum => {
            let members: Vec<String> = candidates.iter().map(|r| r.name.clone()).collect();
            let count = (wanted.min(members.len())) as u32;
            Some(SyncStandbyNames::Any { count, members })
        }
    }
}

/// The leader's synchronous-replication step for this cycle.
pub(crate) fn manage(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    configured: Option<&SyncStandbyNames>,
) -> Vec<Action> {
    let in_key = key_members(cfg, view);
    let key_is_ours = view
        .sync
        .as_ref()
        .is_some_and(|k| k.leader.as_deref() == Some(cfg.name.as_str()));
    let desired = desired_names(cfg, view, pg);
    let desired_members: Vec<String> = desired
        .as_ref()
        .map(|d| d.members().to_vec())
        .unwrap_or_default();
    let quorum = match &desired {
        Some(SyncStandbyNames::Any { count, .. }) => Some(*count),
        _ => None,
    };

    // 1. Removing: from the key first.
    let keep: Vec<String> = in_key
        .iter()
        .filter(|m| desired_members.contains(m))
        .cloned()
        .collect();
    if keep.len() != in_key.len() {
        return vec![Action::WriteSync {
            members: keep,
            quorum,
        }];
    }
    // 2. Then PostgreSQL.
    if configured != desired.as_ref() {
        s.sync_changed_at = Some(pg.lsn);
        return vec![Action::SetSyncStandbyNames { names: desired }];
    }
    if !cfg.synchronous.enabled() {
        if view.sync.as_ref().is_some_and(|k| !k.members.is_empty()) {
            return vec![Action::WriteSync {
                members: Vec::new(),
                quorum: None,
            }];
        }
        return vec![];
    }
    // 3. Adding: to the key once PostgreSQL waits for it and it caught up.
    let since = s.sync_changed_at.unwrap_or(0);
    let confirmed: Vec<String> = desired_members
        .iter()
        .filter(|name| {
            in_key.contains(name)
                || pg.replicas.iter().any(|r| {
                    &r.name == *name && r.synchronous && r.flush_lsn.is_some_and(|f| f >= since)
                })
        })
        .cloned()
        .collect();
    if confirmed != in_key || !key_is_ours {
        return vec![Action::WriteSync {
            members: confirmed,
            quorum,
        }];
    }
    vec![]
}

/// Sync mode: may this member be promoted automatically? Only a member the `sync` key names
/// (for quorum: when enough of the named members answered to intersect every quorum).
pub(crate) fn may_promote(
    cfg: &HaConfig,
    view: &DcsView,
    reachable_named: usize,
) -> Result<(), String> {
    let Some(key) = &view.sync else {
        return Err(
            "synchronous mode and no sync key: no member is known to hold every commit".into(),
        );
    };
    if !key.members.contains(&cfg.name) {
        return Err(format!(
            "synchronous mode: not a synchronous standby (sync key names {})",
            if key.members.is_empty() {
                "nobody".to_string()
            } else {
                key.members.join(", ")
            }
        ));
    }
    if let Some(q) = key.quorum {
        // Commits wait for q of n members; any n - q + 1 of them include one that has each commit.
        let n = key.members.len();
        let needed = n.saturating_sub(q as usize) + 1;
        let seen = reachable_named + 1;
        if seen < needed {
            return Err(format!(
                "quorum: {seen} of the {n} synchronous members answered, {needed} needed"
            ));
        }
    }
    Ok(())
}
