//! Synchronous replication, managed by the leader from cluster state (Patroni's protocol).
//!
//! The `sync` key (members K, and for quorum mode the quorum q) says who may be promoted
//! without losing an acknowledged commit. The leader keeps it consistent with the
//! `synchronous_standby_names` in force on PostgreSQL:
//!
//! * **FIRST n** (`synchronous_mode: true`): every acknowledged commit is on every member of
//!   K, because K ⊆ the names PostgreSQL waits for. A standby *leaves* K before it leaves the
//!   names; it *enters* the names first and K only once pg_stat_replication shows it
//!   synchronous and it has flushed past the leader's position observed once the new names
//!   were in force (so it also holds what was acknowledged before).
//! * **ANY k** (`synchronous_mode: quorum`): every acknowledged commit is on k members of the
//!   names S, so K must *contain* S and q ≤ k; a promotion then needs |K| − q + 1 members of
//!   K, which always include one holding each commit. So K grows (and q shrinks) *before* the
//!   names change, and K shrinks to S only after k members of S flushed past the position
//!   observed once the new names were in force.
//!
//! A new leader first empties K (leader = itself) and starts with `'*'`; a leader that
//! restarts PostgreSQL without knowing the names in force reuses K's. An automatic failover
//! promotes only a member K names, or the leader that wrote K (see `election.rs`).

use crate::action::Action;
use crate::action::{DcsAction, PgAction};
use crate::config::SyncMode;
use crate::observation::{DcsView, ReplicaConnection, RunningPg, SyncStandbyNames};
use crate::state::MemberState;
use crate::{HaConfig, Lsn};

/// The `sync` key is ours (we wrote it as leader).
pub(crate) fn key_is_ours(cfg: &HaConfig, view: &DcsView) -> bool {
    view.sync
        .as_ref()
        .is_some_and(|k| k.leader.as_deref() == Some(cfg.name.as_str()))
}

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
    configured: Option<&SyncStandbyNames>,
) -> Option<SyncStandbyNames> {
    let in_force: Vec<String> = configured.map(|c| c.members().to_vec()).unwrap_or_default();
    let in_key: Vec<String> = view
        .sync
        .as_ref()
        .map(|k| k.members.clone())
        .unwrap_or_default();
    let mut candidates: Vec<&ReplicaConnection> = pg
        .replicas
        .iter()
        .filter(|r| {
            r.streaming
                && r.name != cfg.name
                && view.members.get(&r.name).is_some_and(|m| !m.nosync)
        })
        .collect();
    // Stability first (the names in force, then the key's), then the most advanced.
    candidates.sort_by(|a, b| {
        let rank = |r: &ReplicaConnection| (!in_force.contains(&r.name), !in_key.contains(&r.name));
        rank(a)
            .cmp(&rank(b))
            .then(b.flush_lsn.cmp(&a.flush_lsn))
            .then(a.name.cmp(&b.name))
    });
    let wanted = cfg.synchronous.count.max(1) as usize;
    match cfg.synchronous.mode {
        SyncMode::Off => None,
        _ if candidates.is_empty() => cfg.synchronous.strict.then_some(SyncStandbyNames::Wildcard),
        SyncMode::On => {
            let mut members: Vec<String> = candidates
                .iter()
                .take(wanted)
                .map(|r| r.name.clone())
                .collect();
            members.sort();
            Some(SyncStandbyNames::First {
                count: members.len() as u32,
                members,
            })
        }
        SyncMode::Quorum => {
            let mut members: Vec<String> = candidates.iter().map(|r| r.name.clone()).collect();
            members.sort();
            let count = wanted.min(members.len()) as u32;
            Some(SyncStandbyNames::Any { count, members })
        }
    }
}

/// The names to put in force when PostgreSQL starts as primary and the names in force are
/// unknown (a restarted agent): the key's, so that the key stays true.
pub(crate) fn names_from_key(cfg: &HaConfig, view: &DcsView) -> Option<SyncStandbyNames> {
    let members = key_members(cfg, view);
    if members.is_empty() {
        return cfg.synchronous.strict.then_some(SyncStandbyNames::Wildcard);
    }
    let quorum = view.sync.as_ref().and_then(|k| k.quorum);
    Some(match (cfg.synchronous.mode, quorum) {
        (SyncMode::Quorum, Some(q)) => SyncStandbyNames::Any {
            count: q.max(1),
            members,
        },
        _ => SyncStandbyNames::First {
            count: members.len() as u32,
            members,
        },
    })
}

/// Members of `names` that flushed at least to `since` (and stream).
fn caught_up<'a>(
    pg: &'a RunningPg,
    names: &'a [String],
    since: Lsn,
) -> impl Iterator<Item = &'a String> {
    names.iter().filter(move |n| {
        pg.replicas
            .iter()
            .any(|r| &r.name == *n && r.streaming && r.flush_lsn.is_some_and(|f| f >= since))
    })
}

/// The leader's synchronous-replication step for this cycle.
pub(crate) fn manage(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    configured: Option<&SyncStandbyNames>,
) -> Vec<Action> {
    let desired = desired_names(cfg, view, pg, configured);
    match cfg.synchronous.mode {
        SyncMode::Quorum => manage_quorum(s, cfg, view, pg, configured, desired),
        _ => manage_first(s, cfg, view, pg, configured, desired),
    }
}

/// Put new names in force; the position to confirm against is taken once they are.
fn set_names(s: &mut MemberState, names: Option<SyncStandbyNames>) -> Vec<Action> {
    s.sync_changed_at = None;
    vec![Action::Pg(PgAction::SetSyncStandbyNames { names })]
}

fn manage_first(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    configured: Option<&SyncStandbyNames>,
    desired: Option<SyncStandbyNames>,
) -> Vec<Action> {
    let in_key = key_members(cfg, view);
    let desired_members: Vec<String> = desired
        .as_ref()
        .map(|d| d.members().to_vec())
        .unwrap_or_default();
    // 1. Removing: from the key first.
    let keep: Vec<String> = in_key
        .iter()
        .filter(|m| desired_members.contains(m))
        .cloned()
        .collect();
    if keep.len() != in_key.len() || (!key_is_ours(cfg, view) && view.sync.is_some()) {
        return vec![Action::Dcs(DcsAction::WriteSync {
            members: keep,
            quorum: None,
        })];
    }
    // 2. Then PostgreSQL.
    if configured != desired.as_ref() {
        return set_names(s, desired);
    }
    // 3. Adding: to the key once PostgreSQL waits for it and it caught up.
    let Some(since) = s.sync_changed_at else {
        s.sync_changed_at = Some(pg.lsn);
        return Vec::new();
    };
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
    if confirmed != in_key || !key_is_ours(cfg, view) {
        return vec![Action::Dcs(DcsAction::WriteSync {
            members: confirmed,
            quorum: None,
        })];
    }
    Vec::new()
}

fn manage_quorum(
    s: &mut MemberState,
    cfg: &HaConfig,
    view: &DcsView,
    pg: &RunningPg,
    configured: Option<&SyncStandbyNames>,
    desired: Option<SyncStandbyNames>,
) -> Vec<Action> {
    let in_key = key_members(cfg, view);
    let key_quorum = if key_is_ours(cfg, view) {
        view.sync.as_ref().and_then(|k| k.quorum)
    } else {
        None
    };
    let (names, k) = match &desired {
        Some(SyncStandbyNames::Any { count, members }) => (members.clone(), *count),
        _ => (Vec::new(), 0),
    };
    if names.is_empty() {
        // No standby left: an empty key first (it only restricts promotion), then
        // asynchronous (or '*' in strict mode) in PostgreSQL.
        if !in_key.is_empty() || !key_is_ours(cfg, view) {
            return vec![Action::Dcs(DcsAction::WriteSync {
                members: Vec::new(),
                quorum: None,
            })];
        }
        if configured != desired.as_ref() {
            return set_names(s, desired);
        }
        return Vec::new();
    }
    let Some(SyncStandbyNames::Any {
        count: k_in_force,
        members: in_force,
    }) = configured
    else {
        // Asynchronous or '*' in force: any standby (or none) may acknowledge, so only an
        // empty key is true. Empty it, put the names in force, and write the key once k of
        // the names caught up (step 3).
        if !in_key.is_empty() || !key_is_ours(cfg, view) {
            return vec![Action::Dcs(DcsAction::WriteSync {
                members: Vec::new(),
                quorum: None,
            })];
        }
        if configured != desired.as_ref() {
            return set_names(s, desired);
        }
        return Vec::new();
    };
    let safe_q = k.min(*k_in_force).min(key_quorum.unwrap_or(k)).max(1);
    // 1. Growing: the key first (more members or a lower quorum only restrict promotion).
    // The key must contain everyone who may acknowledge now (the names in force) and after
    // the change (the new names).
    let grows = names
        .iter()
        .chain(in_force.iter())
        .any(|n| !in_key.contains(n));
    if grows || key_quorum.is_none_or(|q| q > safe_q) {
        let mut members = in_key.clone();
        for n in names.iter().chain(in_force.iter()) {
            if !members.contains(n) {
                members.push(n.clone());
            }
        }
        members.sort();
        return vec![Action::Dcs(DcsAction::WriteSync {
            members,
            quorum: Some(safe_q),
        })];
    }
    // 2. Then PostgreSQL.
    if configured != desired.as_ref() {
        return set_names(s, desired);
    }
    // 3. Shrinking the key to the names, once k of them hold everything acknowledged before.
    let Some(since) = s.sync_changed_at else {
        s.sync_changed_at = Some(pg.lsn);
        return Vec::new();
    };
    if (in_key != names || key_quorum != Some(k))
        && caught_up(pg, &names, since).count() >= k as usize
    {
        return vec![Action::Dcs(DcsAction::WriteSync {
            members: names,
            quorum: Some(k),
        })];
    }
    Vec::new()
}

/// Sync mode: may this member be promoted automatically? Only a member the `sync` key names
/// (for quorum: when enough of the named members answered to intersect every quorum), or
/// the leader that wrote the key (it has everything it acknowledged).
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
    if key.leader.as_deref() == Some(cfg.name.as_str()) {
        return Ok(());
    }
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
