//! The `pgbaton:` section: settings of pgbaton's own that Patroni has no key for.

use std::path::PathBuf;

use crate::model::PgbatonConfig;
use crate::walk::{Ctx, Result, Section};

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<PgbatonConfig> {
    let mut out = PgbatonConfig::default();
    let Some(mut sec) = sec else {
        return Ok(out);
    };
    for (key, slot) in [
        ("demote_margin", &mut out.demote_margin),
        ("primary_restart_timeout", &mut out.primary_restart_timeout),
        ("reclone_interval", &mut out.reclone_interval),
    ] {
        if let Some(x) = sec.seconds(ctx, key)? {
            if x < 0.0 {
                return Err(
                    ctx.invalid(&sec.at(key), format!("must be 0 or more seconds, got {x}"))
                );
            }
            *slot = x;
        }
    }
    if let Some(user) = sec.string(ctx, "run_as")? {
        out.run_as = user;
    }
    out.log_dir = sec.string(ctx, "log_dir")?.map(PathBuf::from);
    if let Some(mb) = sec.int(ctx, "slot_retained_wal_warning_mb")? {
        out.slot_retained_wal_warning_mb = u64::try_from(mb).map_err(|_| {
            ctx.invalid(
                &sec.at("slot_retained_wal_warning_mb"),
                format!("must be 0 (never warn) or more MB, got {mb}"),
            )
        })?;
    }
    if let Some(on) = sec.bool(ctx, "auto_reclone")? {
        out.auto_reclone = on;
    }
    sec.finish(ctx, "ignored");
    Ok(out)
}
