//! `logical:` of the dynamic configuration: the publications and subscriptions the leader
//! keeps as declared (pgbaton's key; Patroni has none and keeps it verbatim).
//!
//! ```yaml
//! logical:
//!   publications:
//!     app_pub: {database: postgres, all_tables: true}     # or tables: [...], schemas: [...]
//!                                                         # publish: [insert, update, delete, truncate]
//!   subscriptions:
//!     app_sub: {database: postgres, publication: app_pub, # or publications: [a, b]
//!               source: "host=... port=... user=... dbname=...",
//!               copy_data: true, enabled: true}
//!   drop:                                                 # written by `ctl edit-config --force`
//!     publications: {old_pub: postgres}                   # name: database
//!     subscriptions: {old_sub: postgres}
//! ```
//!
//! A publication or subscription removed from the declaration is left alone unless it is
//! named under `drop` (what `ctl edit-config --force` records when it removes one): the
//! leader drops those, on every leader to come, unless the name is declared again.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::walk::{self, Ctx, Result, Section};

/// What a publication publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicationScope {
    /// `FOR ALL TABLES`.
    AllTables,
    /// `FOR TABLE a, b` (names as written, schema-qualified or not).
    Tables(Vec<String>),
    /// `FOR TABLES IN SCHEMA a, b`.
    Schemas(Vec<String>),
}

/// One declared publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicationSpec {
    pub database: String,
    pub scope: PublicationScope,
    /// The operations published (`insert`, `update`, `delete`, `truncate`; all by default).
    pub publish: Vec<String>,
}

/// One declared subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriptionSpec {
    pub database: String,
    /// The publications subscribed to, on the source.
    pub publications: Vec<String>,
    /// libpq connection string of the publisher (or another cluster's router).
    pub source: String,
    /// Copy the existing rows when the subscription is created (default true).
    pub copy_data: bool,
    /// Apply changes (default true); `false` keeps the subscription disabled.
    pub enabled: bool,
}

/// The `logical` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogicalSpec {
    pub publications: BTreeMap<String, PublicationSpec>,
    pub subscriptions: BTreeMap<String, SubscriptionSpec>,
    /// Publications to drop (name → database), recorded by `ctl edit-config --force`.
    pub drop_publications: BTreeMap<String, String>,
    /// Subscriptions to drop (name → database); dropping one drops its slot on the publisher.
    pub drop_subscriptions: BTreeMap<String, String>,
}

impl LogicalSpec {
    pub fn is_empty(&self) -> bool {
        self.publications.is_empty()
            && self.subscriptions.is_empty()
            && self.drop_publications.is_empty()
            && self.drop_subscriptions.is_empty()
    }

    /// The databases the leader has something to do in (declared or to drop), sorted.
    pub fn databases(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .publications
            .values()
            .map(|p| p.database.clone())
            .chain(self.subscriptions.values().map(|s| s.database.clone()))
            .chain(self.drop_publications.values().cloned())
            .chain(self.drop_subscriptions.values().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The JSON written back to the DCS (the shape it is read from).
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if !self.publications.is_empty() {
            let pubs = self
                .publications
                .iter()
                .map(|(name, p)| {
                    let mut m = serde_json::Map::new();
                    m.insert("database".into(), Value::from(p.database.clone()));
                    match &p.scope {
                        PublicationScope::AllTables => {
                            m.insert("all_tables".into(), Value::Bool(true));
                        }
                        PublicationScope::Tables(t) => {
                            m.insert("tables".into(), Value::from(t.clone()));
                        }
                        PublicationScope::Schemas(s) => {
                            m.insert("schemas".into(), Value::from(s.clone()));
                        }
                    }
                    if p.publish != ALL_OPERATIONS {
                        m.insert("publish".into(), Value::from(p.publish.clone()));
                    }
                    (name.clone(), Value::Object(m))
                })
                .collect();
            out.insert("publications".into(), Value::Object(pubs));
        }
        if !self.subscriptions.is_empty() {
            let subs = self
                .subscriptions
                .iter()
                .map(|(name, s)| {
                    let mut m = serde_json::Map::new();
                    m.insert("database".into(), Value::from(s.database.clone()));
                    match s.publications.as_slice() {
                        [one] => m.insert("publication".into(), Value::from(one.clone())),
                        many => m.insert("publications".into(), Value::from(many.to_vec())),
                    };
                    m.insert("source".into(), Value::from(s.source.clone()));
                    m.insert("copy_data".into(), Value::Bool(s.copy_data));
                    m.insert("enabled".into(), Value::Bool(s.enabled));
                    (name.clone(), Value::Object(m))
                })
                .collect();
            out.insert("subscriptions".into(), Value::Object(subs));
        }
        if !self.drop_publications.is_empty() || !self.drop_subscriptions.is_empty() {
            let mut drop = serde_json::Map::new();
            for (key, names) in [
                ("publications", &self.drop_publications),
                ("subscriptions", &self.drop_subscriptions),
            ] {
                if !names.is_empty() {
                    let m = names
                        .iter()
                        .map(|(n, db)| (n.clone(), Value::from(db.clone())))
                        .collect();
                    drop.insert(key.into(), Value::Object(m));
                }
            }
            out.insert("drop".into(), Value::Object(drop));
        }
        Value::Object(out)
    }
}

const ALL_OPERATIONS: [&str; 4] = ["insert", "update", "delete", "truncate"];

/// A PostgreSQL identifier pgbaton creates objects with: lower-case letters, digits and
/// underscores, not starting with a digit, at most 63 bytes (no quoting surprises).
fn identifier(ctx: &Ctx, path: &str, name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ctx.invalid(
            path,
            format!("invalid {what} name {name:?}: use 1 to 63 lower-case letters, digits and underscores, not starting with a digit"),
        ))
    }
}

/// A table name, optionally schema-qualified, each part an identifier.
fn table_name(ctx: &Ctx, path: &str, name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(ctx.invalid(
            path,
            format!("invalid table {name:?}: write table or schema.table"),
        ));
    }
    for part in parts {
        identifier(ctx, path, part, "table or schema")?;
    }
    Ok(())
}

pub(crate) fn parse(ctx: &mut Ctx, path: &str, v: &Value) -> Result<LogicalSpec> {
    let mut sec = Section::new(ctx, path, v)?;
    let mut out = LogicalSpec::default();
    if let Some(v) = sec.get("publications") {
        let p = sec.at("publications");
        for (name, spec) in walk::as_map(ctx, &p, v)? {
            let at = walk::join(&p, name);
            identifier(ctx, &at, name, "publication")?;
            out.publications
                .insert(name.clone(), publication(ctx, &at, spec)?);
        }
    }
    if let Some(v) = sec.get("subscriptions") {
        let p = sec.at("subscriptions");
        for (name, spec) in walk::as_map(ctx, &p, v)? {
            let at = walk::join(&p, name);
            identifier(ctx, &at, name, "subscription")?;
            out.subscriptions
                .insert(name.clone(), subscription(ctx, &at, spec)?);
        }
    }
    if let Some(v) = sec.get("drop") {
        let p = sec.at("drop");
        let mut drop = Section::new(ctx, &p, v)?;
        for (key, what) in [
            ("publications", "publication"),
            ("subscriptions", "subscription"),
        ] {
            let Some(v) = drop.get(key) else { continue };
            let at = drop.at(key);
            for (name, db) in walk::as_map(ctx, &at, v)? {
                let here = walk::join(&at, name);
                identifier(ctx, &here, name, what)?;
                let db = walk::as_nonempty_string(ctx, &here, db)?;
                if key == "publications" {
                    out.drop_publications.insert(name.clone(), db);
                } else {
                    out.drop_subscriptions.insert(name.clone(), db);
                }
            }
        }
        let unknown = drop.finish(ctx, "ignored");
        if let Some((key, _)) = unknown.first() {
            return Err(ctx.invalid(
                &walk::join(&p, key),
                "unknown key: `drop` has publications and subscriptions, each {name: database}",
            ));
        }
    }
    let unknown = sec.finish(ctx, "ignored");
    if let Some((key, _)) = unknown.first() {
        return Err(ctx.invalid(
            &walk::join(path, key),
            "unknown key: `logical` has publications, subscriptions and drop",
        ));
    }
    Ok(out)
}

fn publication(ctx: &mut Ctx, path: &str, v: &Value) -> Result<PublicationSpec> {
    let mut sec = Section::new(ctx, path, v)?;
    let database = sec.string(ctx, "database")?.ok_or_else(|| {
        ctx.invalid(
            &sec.at("database"),
            "missing: the database the publication lives in",
        )
    })?;
    let all = sec.bool(ctx, "all_tables")?.unwrap_or(false);
    let tables = match sec.get("tables") {
        Some(v) => Some(walk::string_list(ctx, &sec.at("tables"), v)?),
        None => None,
    };
    let schemas = match sec.get("schemas") {
        Some(v) => Some(walk::string_list(ctx, &sec.at("schemas"), v)?),
        None => None,
    };
    let scope = match (all, tables, schemas) {
        (true, None, None) => PublicationScope::AllTables,
        (false, Some(t), None) if !t.is_empty() => {
            for name in &t {
                table_name(ctx, &sec.at("tables"), name)?;
            }
            PublicationScope::Tables(t)
        }
        (false, None, Some(s)) if !s.is_empty() => {
            for name in &s {
                identifier(ctx, &sec.at("schemas"), name, "schema")?;
            }
            PublicationScope::Schemas(s)
        }
        _ => {
            return Err(ctx.invalid(
                path,
                "say what it publishes with exactly one of all_tables: true, tables: [...] or schemas: [...]",
            ))
        }
    };
    let publish = match sec.get("publish") {
        Some(v) => {
            let ops = walk::string_list(ctx, &sec.at("publish"), v)?;
            for op in &ops {
                if !ALL_OPERATIONS.contains(&op.as_str()) {
                    return Err(ctx.invalid(
                        &sec.at("publish"),
                        format!("unknown operation {op:?}: use insert, update, delete, truncate"),
                    ));
                }
            }
            if ops.is_empty() {
                return Err(ctx.invalid(
                    &sec.at("publish"),
                    "publishes nothing: name at least one of insert, update, delete, truncate",
                ));
            }
            // PostgreSQL's order, so that a comparison with the catalog is exact.
            ALL_OPERATIONS
                .iter()
                .filter(|o| ops.iter().any(|x| x == *o))
                .map(|o| o.to_string())
                .collect()
        }
        None => ALL_OPERATIONS.iter().map(|o| o.to_string()).collect(),
    };
    let unknown = sec.finish(ctx, "ignored");
    if let Some((key, _)) = unknown.first() {
        return Err(ctx.invalid(
            &walk::join(path, key),
            "unknown key: a publication has database, all_tables | tables | schemas, publish",
        ));
    }
    Ok(PublicationSpec {
        database,
        scope,
        publish,
    })
}

fn subscription(ctx: &mut Ctx, path: &str, v: &Value) -> Result<SubscriptionSpec> {
    let mut sec = Section::new(ctx, path, v)?;
    let database = sec.string(ctx, "database")?.ok_or_else(|| {
        ctx.invalid(
            &sec.at("database"),
            "missing: the database the subscription applies changes to",
        )
    })?;
    let one = sec.string(ctx, "publication")?;
    let many = match sec.get("publications") {
        Some(v) => Some(walk::string_list(ctx, &sec.at("publications"), v)?),
        None => None,
    };
    let publications = match (one, many) {
        (Some(p), None) => vec![p],
        (None, Some(list)) if !list.is_empty() => list,
        _ => {
            return Err(ctx.invalid(
                path,
                "name what it subscribes to with publication: NAME or publications: [A, B]",
            ))
        }
    };
    for p in &publications {
        identifier(ctx, path, p, "publication")?;
    }
    let source = sec.string(ctx, "source")?.ok_or_else(|| {
        ctx.invalid(
            &sec.at("source"),
            "missing: the publisher's connection string, e.g. \"host=10.0.0.5 port=5432 user=replicator dbname=postgres\"",
        )
    })?;
    if !source.contains('=') && !source.starts_with("postgres") {
        return Err(ctx.invalid(
            &sec.at("source"),
            "not a libpq connection string: write key=value pairs (host=... port=... user=... dbname=...) or a postgresql:// URI",
        ));
    }
    let copy_data = sec.bool(ctx, "copy_data")?.unwrap_or(true);
    let enabled = sec.bool(ctx, "enabled")?.unwrap_or(true);
    let unknown = sec.finish(ctx, "ignored");
    if let Some((key, _)) = unknown.first() {
        return Err(ctx.invalid(
            &walk::join(path, key),
            "unknown key: a subscription has database, publication(s), source, copy_data, enabled",
        ));
    }
    Ok(SubscriptionSpec {
        database,
        publications,
        source,
        copy_data,
        enabled,
    })
}
