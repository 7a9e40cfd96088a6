//! Reading a dynamic configuration mapping (`bootstrap.dcs` or the DCS `config` key) over a
//! fallback, with validation of every value and unknown keys kept verbatim.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{DynamicConfig, SlotSpec, SyncMode};
use crate::walk::{self, Ctx, Result, Section};

/// Parse a dynamic configuration mapping at `path` (`bootstrap.dcs` in the file, the top level
/// in the DCS), over `fallback`.
pub(crate) fn parse(
    ctx: &mut Ctx,
    path: &str,
    v: &Value,
    fallback: &DynamicConfig,
) -> Result<DynamicConfig> {
    let mut sec = Section::new(ctx, path, v)?;
    let mut c = fallback.clone();
    c.extra = Map::new();
    c.pause = false;
    // Like `pause`: absent means a normal cluster, so that removing the section (edit-config)
    // promotes the standby leader.
    c.standby_cluster = None;

    if let Some(x) = sec.seconds(ctx, "ttl")? {
        if x < 2.0 {
            return Err(ctx.invalid(
                &sec.at("ttl"),
                format!("must be at least 2 seconds (etcd's minimum lease), got {x}"),
            ));
        }
        c.ttl = x;
    }
    c.loop_wait = positive(ctx, &mut sec, "loop_wait")?.unwrap_or(c.loop_wait);
    c.retry_timeout = positive(ctx, &mut sec, "retry_timeout")?.unwrap_or(c.retry_timeout);
    if let Some(x) = sec.int(ctx, "maximum_lag_on_failover")? {
        c.maximum_lag_on_failover = u64::try_from(x).map_err(|_| {
            ctx.invalid(
                &sec.at("maximum_lag_on_failover"),
                format!("must be 0 or more bytes, got {x}"),
            )
        })?;
    }
    let legacy_start = non_negative(ctx, &mut sec, "master_start_timeout")?;
    let start = non_negative(ctx, &mut sec, "primary_start_timeout")?;
    if legacy_start.is_some() && start.is_some() {
        let p = sec.at("master_start_timeout");
        ctx.warn(
            &p,
            "old name of primary_start_timeout, which is also set and wins; remove this key",
        );
    }
    if let Some(x) = start.or(legacy_start) {
        c.primary_start_timeout = x;
    }
    if let Some(v) = sec.get("synchronous_mode") {
        c.synchronous_mode = sync_mode(ctx, &sec.at("synchronous_mode"), v)?;
    }
    if let Some(b) = sec.bool(ctx, "synchronous_mode_strict")? {
        c.synchronous_mode_strict = b;
    }
    if let Some(n) = sec.int(ctx, "synchronous_node_count")? {
        c.synchronous_node_count = u32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
            ctx.invalid(
                &sec.at("synchronous_node_count"),
                format!("must be at least 1, got {n}"),
            )
        })?;
    }
    if let Some(b) = sec.bool(ctx, "failsafe_mode")? {
        c.failsafe_mode = b;
    }
    if let Some(b) = sec.bool(ctx, "pause")? {
        c.pause = b;
    }
    if let Some(pg) = sec.section(ctx, "postgresql")? {
        parse_postgresql(ctx, pg, &mut c)?;
    }
    if let Some(v) = sec.get("slots") {
        c.slots = slots(ctx, &sec.at("slots"), v)?;
    }
    if let Some(v) = sec.get("member_slots_ttl") {
        let p = sec.at("member_slots_ttl");
        let x = walk::as_duration_seconds(ctx, &p, v)?;
        if x < 0.0 {
            return Err(ctx.invalid(&p, format!("must be 0 or more seconds, got {x}")));
        }
        c.member_slots_ttl = x;
    }
    if let Some(v) = sec.get("logical") {
        let p = sec.at("logical");
        c.logical = super::logical::parse(ctx, &p, v)?;
    }
    if let Some(v) = sec.get("switchover_drain_timeout") {
        let p = sec.at("switchover_drain_timeout");
        let x = walk::as_duration_seconds(ctx, &p, v)?;
        if !(0.0..=3600.0).contains(&x) {
            return Err(ctx.invalid(&p, format!("must be 0 to 3600 seconds, got {x}")));
        }
        c.switchover_drain_timeout = x;
    }
    if let Some(v) = sec.get("standby_cluster") {
        let p = sec.at("standby_cluster");
        c.standby_cluster = Some(super::standby::parse(ctx, &p, v)?);
    }
    keep_known_extras(ctx, &mut sec, &mut c)?;

    for (key, value) in sec.finish(ctx, "kept verbatim in the DCS config, not used by pgbaton") {
        c.extra.insert(key, value);
    }
    if c.loop_wait + 2.0 * c.retry_timeout > c.ttl {
        ctx.warn(
            path,
            format!(
                "loop_wait ({}) + 2 x retry_timeout ({}) is more than ttl ({}): a leader may lose its lease during a short DCS hiccup; raise ttl or lower loop_wait/retry_timeout",
                c.loop_wait, c.retry_timeout, c.ttl
            ),
        );
    }
    Ok(c)
}

fn positive(ctx: &Ctx, sec: &mut Section, key: &str) -> Result<Option<f64>> {
    match sec.seconds(ctx, key)? {
        Some(x) if x <= 0.0 => Err(ctx.invalid(
            &sec.at(key),
            format!("must be more than 0 seconds, got {x}"),
        )),
        other => Ok(other),
    }
}

fn non_negative(ctx: &Ctx, sec: &mut Section, key: &str) -> Result<Option<f64>> {
    match sec.seconds(ctx, key)? {
        Some(x) if x < 0.0 => {
            Err(ctx.invalid(&sec.at(key), format!("must be 0 or more seconds, got {x}")))
        }
        other => Ok(other),
    }
}

fn sync_mode(ctx: &Ctx, path: &str, v: &Value) -> Result<SyncMode> {
    if v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("quorum")) {
        return Ok(SyncMode::Quorum);
    }
    match walk::as_bool(ctx, path, v) {
        Ok(true) => Ok(SyncMode::On),
        Ok(false) => Ok(SyncMode::Off),
        Err(_) => Err(ctx.invalid(
            path,
            format!(
                "expected true, false or \"quorum\", got {}",
                walk::describe(v)
            ),
        )),
    }
}

/// `postgresql` of the dynamic configuration: use_pg_rewind, use_slots, parameters; other keys
/// (pg_hba, pg_ident, recovery_conf, unknown) are kept verbatim under `extra["postgresql"]`.
fn parse_postgresql(ctx: &mut Ctx, mut pg: Section, c: &mut DynamicConfig) -> Result<()> {
    if let Some(b) = pg.bool(ctx, "use_pg_rewind")? {
        c.use_pg_rewind = b;
    }
    if let Some(b) = pg.bool(ctx, "use_slots")? {
        c.use_slots = b;
    }
    if let Some(v) = pg.get("parameters") {
        c.parameters = walk::parameters(ctx, &pg.at("parameters"), v)?;
    }
    let mut kept = Map::new();
    if let Some(v) = pg.get("pg_hba") {
        walk::string_list(ctx, &pg.at("pg_hba"), v)?;
        kept.insert("pg_hba".into(), v.clone());
    }
    for key in ["pg_ident", "recovery_conf"] {
        if let Some(v) = pg.get(key) {
            kept.insert(key.into(), v.clone());
        }
    }
    for (key, value) in pg.finish(ctx, "kept verbatim in the DCS config, not used by pgbaton") {
        kept.insert(key, value);
    }
    if !kept.is_empty() {
        c.extra.insert("postgresql".into(), Value::Object(kept));
    }
    Ok(())
}

/// Patroni keys pgbaton knows but does not act on: validated, then kept verbatim in `extra`.
fn keep_known_extras(ctx: &mut Ctx, sec: &mut Section, c: &mut DynamicConfig) -> Result<()> {
    for key in ["primary_stop_timeout", "master_stop_timeout"] {
        if let Some(v) = sec.get(key) {
            non_negative(ctx, sec, key)?;
            c.extra.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = sec.get("check_timeline") {
        walk::as_bool(ctx, &sec.at("check_timeline"), v)?;
        c.extra.insert("check_timeline".into(), v.clone());
    }
    if let Some(v) = sec.get("max_timelines_history") {
        let n = walk::as_int(ctx, &sec.at("max_timelines_history"), v)?;
        if n < 0 {
            return Err(ctx.invalid(
                &sec.at("max_timelines_history"),
                format!("must be 0 (keep all) or more, got {n}"),
            ));
        }
        c.extra.insert("max_timelines_history".into(), v.clone());
    }
    if let Some(v) = sec.get("ignore_slots") {
        walk::as_list(ctx, &sec.at("ignore_slots"), v)?;
        c.extra.insert("ignore_slots".into(), v.clone());
    }
    Ok(())
}

fn slots(ctx: &mut Ctx, path: &str, v: &Value) -> Result<BTreeMap<String, SlotSpec>> {
    let map = walk::as_map(ctx, path, v)?;
    let mut out = BTreeMap::new();
    for (name, spec) in map {
        let p = walk::join(path, name);
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !valid_name {
            return Err(ctx.invalid(
                &p,
                "invalid slot name: use 1 to 63 lower-case letters, digits and underscores",
            ));
        }
        out.insert(name.clone(), slot(ctx, &p, spec)?);
    }
    Ok(out)
}

fn slot(ctx: &mut Ctx, path: &str, v: &Value) -> Result<SlotSpec> {
    if v.is_null() {
        return Ok(SlotSpec {
            slot_type: "physical".into(),
            database: None,
            plugin: None,
        });
    }
    let mut sec = Section::new(ctx, path, v)?;
    let slot_type = sec
        .string(ctx, "type")?
        .unwrap_or_else(|| "physical".into());
    let database = sec.string(ctx, "database")?;
    let plugin = sec.string(ctx, "plugin")?;
    match slot_type.as_str() {
        "physical" => {}
        "logical" => {
            for (key, value) in [("database", &database), ("plugin", &plugin)] {
                if value.is_none() {
                    return Err(ctx.invalid(
                        &sec.at(key),
                        "required key is missing (a logical slot needs a database and an output plugin)",
                    ));
                }
            }
        }
        other => {
            return Err(ctx.invalid(
                &sec.at("type"),
                format!("expected \"physical\" or \"logical\", got \"{other}\""),
            ))
        }
    }
    sec.finish(ctx, "ignored");
    Ok(SlotSpec {
        slot_type,
        database,
        plugin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sync_mode_accepts_bools_and_quorum() {
        let ctx = Ctx::new("f");
        assert_eq!(sync_mode(&ctx, "p", &json!(true)).ok(), Some(SyncMode::On));
        assert_eq!(
            sync_mode(&ctx, "p", &json!("off")).ok(),
            Some(SyncMode::Off)
        );
        assert_eq!(
            sync_mode(&ctx, "p", &json!("quorum")).ok(),
            Some(SyncMode::Quorum)
        );
        let err = sync_mode(&ctx, "p", &json!(3)).expect_err("3 is not a mode");
        assert_eq!(
            err.to_string(),
            "f: p: expected true, false or \"quorum\", got 3"
        );
    }
}
