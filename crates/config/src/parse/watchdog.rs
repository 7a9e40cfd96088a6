//! The `watchdog:` section, in Patroni's keys: `mode` (off, automatic, required), `device`
//! (default /dev/watchdog) and `safety_margin` (seconds, default 5; -1: the watchdog fires
//! after half of ttl).

use std::path::PathBuf;

use serde_json::Value;

use crate::model::{WatchdogConfig, WatchdogMode};
use crate::walk::{Ctx, Result, Section};

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<WatchdogConfig> {
    let mut out = WatchdogConfig::default();
    let Some(mut sec) = sec else {
        return Ok(out);
    };
    out.explicit = true;
    if let Some(v) = sec.get("mode") {
        out.mode = mode(ctx, &sec.at("mode"), v)?;
    }
    if let Some(device) = sec.string(ctx, "device")? {
        out.device = PathBuf::from(device);
    }
    if let Some(margin) = sec.int(ctx, "safety_margin")? {
        if margin < -1 {
            return Err(ctx.invalid(
                &sec.at("safety_margin"),
                format!("must be -1 (half of ttl) or 0 or more seconds, got {margin}"),
            ));
        }
        out.safety_margin = margin;
    }
    sec.unsupported(
        ctx,
        "driver",
        "only the Linux watchdog device interface is supported; ignored",
    );
    sec.finish(ctx, "ignored");
    Ok(out)
}

/// Patroni's words: `off` (also `disable`, `disabled`, YAML false), `automatic` (`auto`),
/// `required` (`require`).
fn mode(ctx: &Ctx, path: &str, v: &Value) -> Result<WatchdogMode> {
    let text = match v {
        Value::Bool(false) => return Ok(WatchdogMode::Off),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        _ => String::new(),
    };
    match text.as_str() {
        "off" | "disable" | "disabled" | "false" => Ok(WatchdogMode::Off),
        "automatic" | "auto" => Ok(WatchdogMode::Automatic),
        "required" | "require" => Ok(WatchdogMode::Required),
        _ => Err(ctx.invalid(
            path,
            format!(
                "expected off, automatic or required, got {}",
                crate::walk::describe(v)
            ),
        )),
    }
}
