//! The `bootstrap:` section: initial dynamic configuration, initdb options, pg_hba lines and
//! roles of a new cluster.

use std::collections::BTreeMap;

use crate::dynamic::{self, DynamicConfig};
use crate::model::{BootstrapConfig, UserSpec};
use crate::walk::{self, Ctx, Result, Section};

use super::options::option_list;

pub(super) fn parse(ctx: &mut Ctx, sec: Option<Section>) -> Result<BootstrapConfig> {
    let mut out = BootstrapConfig {
        dcs: DynamicConfig::defaults(),
        initdb: Vec::new(),
        pg_hba: Vec::new(),
        users: BTreeMap::new(),
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
    if let Some(method) = sec.string(ctx, "method")? {
        let path = sec.at("method");
        if method != "initdb" {
            ctx.warn(
                &path,
                format!("custom bootstrap methods are not supported yet; \"{method}\" is ignored and initdb is used"),
            );
            sec.known(&method);
        }
    }
    sec.finish(ctx, "ignored");
    Ok(out)
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
