//! Role by database name (`databases:` in the configuration): a client that connects to an
//! alias database (e.g. `app_ro`) is routed by the alias's target, overriding the
//! listener's role (an explicit `pgbaton.target` or `target_session_attrs` in the startup
//! still wins), and the startup packet is rewritten so the server sees the real database
//! name. Databases that are not aliases pass through untouched.
//!
//! ```yaml
//! databases:
//!   app_ro: {dbname: app, target: read}
//!   app_rw: {dbname: app, target: write}
//! ```

use std::collections::BTreeMap;

use pgbaton_config::walk::{Ctx, Section};
use serde_json::Value;

use crate::error::RouterConfigError;
use crate::protocol::{StartupMessage, Target};
use crate::yaml::{self, invalid};

/// One entry of `databases:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseAlias {
    /// The database the server sees.
    pub dbname: String,
    /// The role the connection is routed to; None keeps the listener's role (a pure rename).
    pub target: Option<Target>,
    /// `pool_mode` for clients of this alias (pooling only), over the listener's.
    pub pool_mode: Option<crate::pool_config::PoolMode>,
    /// `pool_size` of the pools its clients use (pooling only), over `default_pool_size`.
    pub pool_size: Option<usize>,
}

/// The `databases` mapping: each key an alias, each value its entry.
pub(crate) fn parse(
    ctx: &Ctx,
    databases: &Section,
) -> Result<BTreeMap<String, DatabaseAlias>, RouterConfigError> {
    let mut aliases = BTreeMap::new();
    for (alias, entry) in databases.raw() {
        let prefix = databases.at(alias);
        if alias.is_empty() || alias.contains('\0') {
            return Err(invalid(&prefix, "is not a usable database name"));
        }
        let mut entry = Section::new(ctx, &prefix, entry)?;
        let dbname = entry.string(ctx, "dbname")?;
        if dbname.as_ref().is_some_and(|name| name.contains('\0')) {
            return Err(invalid(&entry.at("dbname"), "must be a database name"));
        }
        let targets = [
            ("write", Target::Write),
            ("primary", Target::Write),
            ("leader", Target::Write),
            ("read", Target::Read),
            ("replica", Target::Read),
            ("standby", Target::Read),
            ("any", Target::Any),
        ];
        let expected = "must be `read`, `write` or `any`";
        let target = yaml::choice(ctx, &mut entry, "target", &targets, expected)?;
        let pool_mode = crate::pool_config::pool_mode(ctx, &mut entry, "pool_mode")?;
        let pool_size = yaml::positive(ctx, &mut entry, "pool_size")?;
        entry.finish_strict(ctx)?;
        let dbname = dbname.ok_or_else(|| RouterConfigError::Missing {
            key: format!("{prefix}.dbname"),
            hint: "the real database an alias stands for, e.g. {dbname: app, target: read}",
        })?;
        aliases.insert(
            alias.clone(),
            DatabaseAlias {
                dbname,
                target,
                pool_mode,
                pool_size,
            },
        );
    }
    Ok(aliases)
}

/// The `databases` section as YAML (empty when there are no aliases).
pub(crate) fn to_yaml(aliases: &BTreeMap<String, DatabaseAlias>) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let q = |s: &str| Value::from(s).to_string();
    let mut out = String::from("databases:\n");
    for (alias, entry) in aliases {
        out.push_str(&format!(
            "  {}:\n    dbname: {}\n",
            q(alias),
            q(&entry.dbname)
        ));
        if let Some(target) = entry.target {
            out.push_str(&format!("    target: {}\n", target.label()));
        }
        if let Some(mode) = entry.pool_mode {
            out.push_str(&format!("    pool_mode: {}\n", mode.label()));
        }
        if let Some(size) = entry.pool_size {
            out.push_str(&format!("    pool_size: {size}\n"));
        }
    }
    out
}

/// If the startup's database (without one, its user name, as PostgreSQL defaults) is an
/// alias, rewrite `database` to the real name and return the alias.
pub(crate) fn apply<'a>(
    startup: &mut StartupMessage,
    aliases: &'a BTreeMap<String, DatabaseAlias>,
) -> Option<(&'a str, &'a DatabaseAlias)> {
    if aliases.is_empty() {
        return None;
    }
    let requested = startup
        .param("database")
        .or_else(|| startup.param("user"))?;
    let requested = std::str::from_utf8(requested).ok()?;
    let (alias, entry) = aliases.get_key_value(requested)?;
    startup.set_param("database", entry.dbname.as_bytes());
    Some((alias.as_str(), entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_first_packet, startup_body_length, FirstPacket, PROTOCOL_V3};

    fn parse_text(yaml: &str) -> Result<BTreeMap<String, DatabaseAlias>, RouterConfigError> {
        let value: Value = serde_saphyr::from_str(yaml).expect("yaml");
        let ctx = crate::yaml::context();
        parse(&ctx, &Section::new(&ctx, "databases", &value)?)
    }

    fn aliases() -> BTreeMap<String, DatabaseAlias> {
        let yaml = "app_ro: {dbname: app, target: read}\napp_rw: {dbname: app, target: write}\nold: {dbname: new}\n";
        parse_text(yaml).expect("aliases")
    }

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            version: PROTOCOL_V3,
            params: params
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// Encode, then parse back as the server would (checking the length word).
    fn reparse(message: &StartupMessage) -> StartupMessage {
        let bytes = message.encode();
        let header: [u8; 4] = bytes[..4].try_into().expect("header");
        let len = startup_body_length(header).expect("length");
        assert_eq!(
            len + 4,
            bytes.len(),
            "the length word counts the whole message"
        );
        match parse_first_packet(&bytes[4..]).expect("parse") {
            FirstPacket::Startup(m) => m,
            other => panic!("not a startup: {other:?}"),
        }
    }

    #[test]
    fn an_alias_is_rewritten_to_the_real_database_with_a_correct_length() {
        let aliases = aliases();
        let mut message = startup(&[
            ("user", "alice"),
            ("database", "app_ro"),
            ("application_name", "psql"),
        ]);
        let before = message.encode().len();
        let (alias, entry) = apply(&mut message, &aliases).expect("an alias");
        assert_eq!((alias, entry.target), ("app_ro", Some(Target::Read)));
        let back = reparse(&message);
        assert_eq!(back.param("database"), Some(&b"app"[..]));
        assert_eq!(back.param("user"), Some(&b"alice"[..]));
        assert_eq!(back.param("application_name"), Some(&b"psql"[..]));
        assert_eq!(back.params.len(), 3, "no parameter added or lost");
        assert_eq!(message.encode().len(), before - 3, "`app_ro` became `app`");
        let mut message = startup(&[("user", "bob"), ("database", "app_rw")]);
        let (_, entry) = apply(&mut message, &aliases).expect("an alias");
        assert_eq!(entry.target, Some(Target::Write));
        assert_eq!(reparse(&message).param("database"), Some(&b"app"[..]));
    }

    #[test]
    fn without_a_database_the_user_name_is_the_database() {
        let aliases = aliases();
        let mut message = startup(&[("user", "old")]);
        let (_, entry) = apply(&mut message, &aliases).expect("the user name is an alias");
        assert_eq!(entry.target, None);
        let back = reparse(&message);
        assert_eq!(back.param("database"), Some(&b"new"[..]));
        assert_eq!(back.param("user"), Some(&b"old"[..]));
    }

    #[test]
    fn unknown_databases_pass_untouched() {
        let aliases = aliases();
        let mut message = startup(&[("user", "alice"), ("database", "app")]);
        let original = message.encode();
        assert!(apply(&mut message, &aliases).is_none());
        assert_eq!(message.encode(), original);
        let mut message = startup(&[("user", "alice"), ("database", "app_ro")]);
        assert!(apply(&mut message, &BTreeMap::new()).is_none());
        assert_eq!(message.param("database"), Some(&b"app_ro"[..]));
    }

    #[test]
    fn bad_entries_name_their_key() {
        let err = |yaml: &str| parse_text(yaml).expect_err("rejected").to_string();
        let e = err("ro: {target: read}\n");
        assert!(e.contains("databases.ro.dbname"), "{e}");
        let e = err("ro: {dbname: app, target: sideways}\n");
        assert!(e.contains("databases.ro.target"), "{e}");
        let e = err("ro: {dbname: app, traget: read}\n");
        assert!(e.contains("databases.ro.traget"), "{e}");
        let e = err("ro: app\n");
        assert!(e.contains("databases.ro") && e.contains("mapping"), "{e}");
    }
}
