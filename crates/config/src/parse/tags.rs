//! The `tags:` section: Patroni's member tags; any other key is a user tag kept verbatim.

use crate::model::Tags;
use crate::walk::{self, Ctx, Result, Section};

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<Tags> {
    let Some(mut sec) = sec else {
        return Ok(Tags::default());
    };
    let mut tags = Tags {
        nofailover: sec.bool(ctx, "nofailover")?.unwrap_or(false),
        noloadbalance: sec.bool(ctx, "noloadbalance")?.unwrap_or(false),
        clonefrom: sec.bool(ctx, "clonefrom")?.unwrap_or(false),
        nosync: sec.bool(ctx, "nosync")?.unwrap_or(false),
        replicatefrom: sec.string(ctx, "replicatefrom")?,
        failover_priority: sec.int(ctx, "failover_priority")?,
        other: Default::default(),
    };
    if let Some(p) = tags.failover_priority {
        if p < 0 {
            return Err(ctx.invalid(
                &sec.at("failover_priority"),
                format!("must be 0 (never promote) or more, got {p}"),
            ));
        }
    }
    if let Some(v) = sec.get("nostream") {
        let b = walk::as_bool(ctx, &sec.at("nostream"), v)?;
        tags.other.insert("nostream".to_string(), b.into());
    }
    for (key, value) in sec.raw() {
        if !value.is_null() && !tags.other.contains_key(key) && !sec.is_asked(key) {
            tags.other.insert(key.clone(), value.clone());
        }
    }
    Ok(tags)
}
