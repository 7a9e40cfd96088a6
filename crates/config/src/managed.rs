//! PostgreSQL settings pgbaton manages itself, and what to say when a user sets one.

use std::collections::BTreeMap;

use crate::dynamic::{DynamicConfig, SyncMode};

/// Warnings for parameters the user set that pgbaton overwrites: `synchronous_standby_names`
/// while synchronous mode is on (the leader keeps it in line with the DCS `sync` key).
/// `local` is the member file's `postgresql.parameters`; each warning names where the value
/// was set.
pub fn overwritten_parameters(
    dynamic: &DynamicConfig,
    local: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if dynamic.synchronous_mode == SyncMode::Off {
        return out;
    }
    let mode = match dynamic.synchronous_mode {
        SyncMode::Quorum => "synchronous_mode: quorum",
        _ => "synchronous_mode",
    };
    for (path, params) in [
        ("postgresql.parameters.synchronous_standby_names", local),
        (
            "bootstrap.dcs.postgresql.parameters.synchronous_standby_names",
            &dynamic.parameters,
        ),
    ] {
        if let Some(value) = params.get("synchronous_standby_names") {
            out.push((
                path.to_string(),
                format!(
                    "{value:?} is overwritten: under {mode} the leader sets synchronous_standby_names itself from the healthy members (the DCS sync key); remove it, or turn {mode} off to manage it by hand"
                ),
            ));
        }
    }
    out
}
