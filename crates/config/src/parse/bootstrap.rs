//! The `bootstrap:` section: initial dynamic configuration, initdb options, pg_hba lines and
//! roles of a new cluster.

use std::collections::BTreeMap;

use crate::dynamic::{self, DynamicConfig};
use crate::model::{BootstrapConfig, BootstrapMethod, UserSpec};
use crate::walk::{self, Ctx, Result, Section};

use super::options::option_list;

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<BootstrapConfig> {
    let mut out = BootstrapConfig {
        dcs: DynamicConfig::defaults(),
        initdb: Vec::new(),
        pg_hba: Vec::new(),
        users: BTreeMap::new(),
        method: None,
    };
    let Some(mut sec) = sec else {
        return Ok(out);
    };
    if let Some(v) = sec.get("dcs") {
        out.dcs = dynamic::parse(ctx, &sec.at("dcs"), v, &DynamicConfig::defaults())?;
    }
    if let Some(v) = sec.get("initdb") {
        out.initdb = option_list(ctx, &sec.at("initdb"), v)?;
    }
    if let Some(v) = sec.get("pg_hba") {
        out.pg_hba = walk::string_list(ctx, &sec.at("pg_hba"), v)?;
    }
    if let Some(users) = sec.section(ctx, "users")? {
        out.users = parse_users(ctx, users)?;
    }
    for key in ["post_bootstrap", "post_init"] {
        sec.unsupported(ctx, key, "bootstrap scripts are not supported yet; ignored");
    }
    if let Some(name) = sec.string(ctx, "method")? {
        if name != "initdb" {
            out.method = Some(method(ctx, &mut sec, &name)?);
        }
    }
    sec.finish(ctx, "ignored");
    Ok(out)
}

/// `bootstrap.<name>: {command, keep_existing_recovery_conf, no_params, recovery_conf, ...}`.
fn method(ctx: &mut Ctx, sec: &mut Section, name: &str) -> Result<BootstrapMethod> {
    let section_path = sec.at(name);
    if ["dcs", "initdb", "pg_hba", "users", "method"].contains(&name) {
        return Err(ctx.invalid(
            &sec.at("method"),
            format!("\"{name}\" is a key of bootstrap, not a method; name a method with its own section (e.g. pgbackrest) or initdb"),
        ));
    }
    let Some(mut m) = sec.section(ctx, name)? else {
        return Err(ctx.invalid(
            &sec.at("method"),
            format!("method \"{name}\" has no section {section_path}: add one with its command (e.g. `{name}: {{command: ..., recovery_conf: {{...}}}}`), or use initdb"),
        ));
    };
    let command = super::method_section::command(
        ctx,
        &mut m,
        format!("required key is missing (the command that creates the new cluster's data directory, e.g. `pgbackrest --stanza=main restore`; bootstrap.method is \"{name}\")"),
    )?;
    let keep_existing_recovery_conf = m.bool(ctx, "keep_existing_recovery_conf")?.unwrap_or(false);
    let no_params = m.bool(ctx, "no_params")?.unwrap_or(false);
    let recovery_conf = match m.get("recovery_conf") {
        Some(v) => walk::parameters(ctx, &m.at("recovery_conf"), v)?,
        None => BTreeMap::new(),
    };
    let params = super::method_section::extra_params(ctx, &m)?;
    Ok(BootstrapMethod {
        name: name.to_string(),
        command,
        keep_existing_recovery_conf,
        no_params,
        recovery_conf,
        params,
    })
}

fn parse_users(ctx: &mut Ctx, users: Section) -> Result<BTreeMap<String, UserSpec>> {
    let path = users.path.clone();
    let mut out = BTreeMap::new();
    // Every key of `users` is a role name, so none is "unknown": read the raw mapping.
    let raw = users.raw();
    for (name, spec) in raw {
        let p = walk::join(&path, name);
        let user = if spec.is_null() {
            UserSpec {
                password: None,
                options: Vec::new(),
            }
        } else {
            let mut s = Section::new(ctx, &p, spec)?;
            let password = s.any_string(ctx, "password")?;
            let options = match s.get("options") {
                Some(v) => walk::string_list(ctx, &s.at("options"), v)?,
                None => Vec::new(),
            };
            s.finish(ctx, "ignored");
            UserSpec { password, options }
        };
        out.insert(name.clone(), user);
    }
    Ok(out)
}
