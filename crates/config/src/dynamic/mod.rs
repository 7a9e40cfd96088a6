//! The dynamic configuration: the cluster-wide settings kept in the DCS `config` key (Patroni's
//! shape) and seeded from `bootstrap.dcs` of the local file.
//!
//! Timing values are seconds as floats, so that fast settings like `ttl: 2.5` work. Keys pgbaton
//! does not use are kept verbatim in [`DynamicConfig::extra`] and written back by
//! [`DynamicConfig::to_dcs_json`], so that a cluster edited with Patroni's tools loses nothing.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::error::{ConfigError, Loaded};
use crate::walk::Ctx;

mod logical;
mod parse;
mod patch;
mod standby;
pub use logical::{LogicalSpec, PublicationScope, PublicationSpec, SubscriptionSpec};
pub(crate) use parse::parse;
pub use patch::merge_patch;
pub use standby::StandbyCluster;

/// Cluster-wide settings shared by all members through the DCS.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DynamicConfig {
    /// Leader lease time to live, seconds (etcd's minimum lease is 2).
    pub ttl: f64,
    /// Pause between two HA cycles, seconds.
    pub loop_wait: f64,
    /// How long DCS and PostgreSQL operations are retried before giving up, seconds.
    pub retry_timeout: f64,
    /// A replica further behind than this many bytes is not promoted automatically.
    pub maximum_lag_on_failover: u64,
    /// How long a failed primary may take to start before a failover is considered, seconds.
    pub primary_start_timeout: f64,
    /// Whether commits wait for synchronous standbys, and how they are chosen.
    pub synchronous_mode: SyncMode,
    /// Keep commits blocking when no synchronous standby is left.
    pub synchronous_mode_strict: bool,
    /// How many synchronous standbys the leader keeps.
    pub synchronous_node_count: u32,
    /// Let a primary that cannot reach the DCS keep running while all members can see it.
    pub failsafe_mode: bool,
    /// Rewind a diverged former primary instead of cloning it again.
    pub use_pg_rewind: bool,
    /// Keep a physical replication slot per member on the leader.
    pub use_slots: bool,
    /// PostgreSQL parameters applied on every member (normalised to strings).
    pub parameters: BTreeMap<String, String>,
    /// Permanent replication slots.
    pub slots: BTreeMap<String, SlotSpec>,
    /// Maintenance mode: no automatic failover while set.
    pub pause: bool,
    /// Seconds the leader keeps the physical slot of a member whose member key disappeared
    /// (Patroni 4's `member_slots_ttl`, default 30 min; 0 drops it at once).
    pub member_slots_ttl: f64,
    /// Declared publications and subscriptions (`logical`), kept as declared by the leader.
    pub logical: LogicalSpec,
    /// Seconds a leader with a switchover due waits for the routers registered for the
    /// cluster to pause their write traffic before it stops PostgreSQL anyway (pgbaton's
    /// addition, default 5; Patroni ignores the key).
    pub switchover_drain_timeout: f64,
    /// The cluster is a standby of a remote primary (`standby_cluster`); absent from the DCS
    /// `config` key means a normal cluster (removing it promotes the standby leader).
    pub standby_cluster: Option<StandbyCluster>,
    /// Keys pgbaton does not use, kept verbatim (unknown keys of the `postgresql` section are
    /// under `extra["postgresql"]`).
    pub extra: Map<String, Value>,
}

/// Synchronous replication mode (`synchronous_mode`: false, true or "quorum").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Off,
    On,
    Quorum,
}

impl SyncMode {
    /// The JSON Patroni stores: `false`, `true` or `"quorum"`.
    pub fn to_json(self) -> Value {
        match self {
            SyncMode::Off => Value::Bool(false),
            SyncMode::On => Value::Bool(true),
            SyncMode::Quorum => Value::String("quorum".to_string()),
        }
    }
}

impl Serialize for SyncMode {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A permanent replication slot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotSpec {
    /// "physical" or "logical".
    #[serde(rename = "type")]
    pub slot_type: String,
    /// Database of a logical slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Output plugin of a logical slot (e.g. pgoutput).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// Patroni 4's default `member_slots_ttl`: 30 minutes.
pub const DEFAULT_MEMBER_SLOTS_TTL: f64 = 1800.0;

/// pgbaton's default `switchover_drain_timeout`: 5 seconds.
pub const DEFAULT_SWITCHOVER_DRAIN_TIMEOUT: f64 = 5.0;

/// Where the DCS `config` key's errors say they come from.
const DCS_SOURCE: &str = "DCS config";

impl DynamicConfig {
    /// pgbaton's defaults, chosen for fast failover (Patroni's are ttl 30, loop_wait 10,
    /// retry_timeout 10): a leader that vanishes is replaced within about ttl + loop_wait = 5 s.
    pub fn defaults() -> Self {
        DynamicConfig {
            ttl: 4.0,
            loop_wait: 1.0,
            retry_timeout: 1.5,
            maximum_lag_on_failover: 1_048_576,
            primary_start_timeout: 300.0,
            synchronous_mode: SyncMode::Off,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            failsafe_mode: false,
            use_pg_rewind: true,
            use_slots: true,
            parameters: BTreeMap::new(),
            slots: BTreeMap::new(),
            pause: false,
            member_slots_ttl: DEFAULT_MEMBER_SLOTS_TTL,
            logical: LogicalSpec::default(),
            switchover_drain_timeout: DEFAULT_SWITCHOVER_DRAIN_TIMEOUT,
            standby_cluster: None,
            extra: Map::new(),
        }
    }

    /// The "fast" profile: ttl 2 (etcd's minimum lease), loop_wait 0.5, retry_timeout 0.5, for
    /// clusters on a reliable local network that want failover in about 2.5 s. Everything
    /// else is as in [`DynamicConfig::defaults`].
    pub fn fast_profile() -> Self {
        DynamicConfig {
            ttl: 2.0,
            loop_wait: 0.5,
            retry_timeout: 0.5,
            ..Self::defaults()
        }
    }

    /// Parse the DCS `config` key's JSON (Patroni shape: ttl, loop_wait, ...,
    /// postgresql{use_pg_rewind, use_slots, parameters}). Missing keys take `fallback`'s
    /// values, except `pause` (absent means not paused, as in Patroni) and `extra` (only this
    /// document's unknown keys).
    pub fn from_dcs_json(
        v: &Value,
        fallback: &DynamicConfig,
    ) -> std::result::Result<Loaded<DynamicConfig>, ConfigError> {
        let mut ctx = Ctx::new(DCS_SOURCE);
        let value = parse(&mut ctx, "", v, fallback)?;
        Ok(Loaded {
            value,
            warnings: ctx.warnings,
        })
    }

    /// The JSON to store in the DCS `config` key, in Patroni's shape (numbers that are whole
    /// print as integers: ttl 30 not 30.0).
    pub fn to_dcs_json(&self) -> Value {
        let mut postgresql = Map::new();
        postgresql.insert("use_pg_rewind".into(), json!(self.use_pg_rewind));
        postgresql.insert("use_slots".into(), json!(self.use_slots));
        postgresql.insert("parameters".into(), json!(self.parameters));
        let mut out = Map::new();
        out.insert("ttl".into(), seconds_json(self.ttl));
        out.insert("loop_wait".into(), seconds_json(self.loop_wait));
        out.insert("retry_timeout".into(), seconds_json(self.retry_timeout));
        out.insert(
            "maximum_lag_on_failover".into(),
            json!(self.maximum_lag_on_failover),
        );
        out.insert(
            "primary_start_timeout".into(),
            seconds_json(self.primary_start_timeout),
        );
        out.insert("synchronous_mode".into(), self.synchronous_mode.to_json());
        out.insert(
            "synchronous_mode_strict".into(),
            json!(self.synchronous_mode_strict),
        );
        out.insert(
            "synchronous_node_count".into(),
            json!(self.synchronous_node_count),
        );
        out.insert("failsafe_mode".into(), json!(self.failsafe_mode));
        if !self.slots.is_empty() {
            out.insert("slots".into(), json!(self.slots));
        }
        if self.pause {
            out.insert("pause".into(), json!(true));
        }
        if self.member_slots_ttl != DEFAULT_MEMBER_SLOTS_TTL {
            out.insert(
                "member_slots_ttl".into(),
                seconds_json(self.member_slots_ttl),
            );
        }
        if !self.logical.is_empty() {
            out.insert("logical".into(), self.logical.to_json());
        }
        if self.switchover_drain_timeout != DEFAULT_SWITCHOVER_DRAIN_TIMEOUT {
            out.insert(
                "switchover_drain_timeout".into(),
                seconds_json(self.switchover_drain_timeout),
            );
        }
        if let Some(standby) = &self.standby_cluster {
            out.insert("standby_cluster".into(), standby.to_json());
        }
        for (key, value) in &self.extra {
            match (key.as_str(), value) {
                ("postgresql", Value::Object(more)) => {
                    for (k, v) in more {
                        postgresql.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                _ => {
                    out.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        out.insert("postgresql".into(), Value::Object(postgresql));
        Value::Object(out)
    }
}

/// Whole numbers as JSON integers (Patroni's tools print `30`, not `30.0`).
fn seconds_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_satisfy_the_timing_rule() {
        for c in [DynamicConfig::defaults(), DynamicConfig::fast_profile()] {
            assert!(c.loop_wait + 2.0 * c.retry_timeout <= c.ttl, "{c:?}");
            assert!(c.ttl >= 2.0);
        }
        let fast = DynamicConfig::fast_profile();
        assert_eq!(
            (fast.ttl, fast.loop_wait, fast.retry_timeout),
            (2.0, 0.5, 0.5)
        );
    }

    #[test]
    fn seconds_print_as_integers_when_whole() {
        assert_eq!(seconds_json(30.0), json!(30));
        assert_eq!(seconds_json(2.5), json!(2.5));
    }
}
