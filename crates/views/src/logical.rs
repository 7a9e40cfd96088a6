//! Declared publications and subscriptions (`logical:`) on the CLI side: what an edit of
//! the dynamic configuration would drop (and the `logical.drop` list `edit-config --force`
//! records for the leader), and `ctl logical` / `ctl logical check`, drawn from the
//! `logical` object of the leader's `GET /patroni`.

use serde_json::{Map, Value};

use crate::table::{Align, Table};
use crate::OutputFormat;

/// A declared publication or subscription an edit removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// `publications` or `subscriptions`.
    pub kind: &'static str,
    pub name: String,
    pub database: String,
    /// A subscription's publisher (its `source`).
    pub source: Option<String>,
}

impl Removed {
    /// What dropping it does, in one line.
    pub fn describe(&self) -> String {
        match self.kind {
            "publications" => format!(
                "publication {} (database {}): the leader runs DROP PUBLICATION {}",
                self.name, self.database, self.name
            ),
            _ => format!(
                "subscription {0} (database {1}): the leader runs DROP SUBSCRIPTION {0}, which drops its slot {0} on the publisher ({2}) too; if the publisher's cluster keeps {0} as a permanent slot (slots:), remove it there as well or its leader creates it again",
                self.name,
                self.database,
                self.source.as_deref().unwrap_or("source unknown")
            ),
        }
    }
}

fn declared<'a>(config: &'a Value, kind: &str) -> Option<&'a Map<String, Value>> {
    config.get("logical")?.get(kind)?.as_object()
}

/// The declared publications and subscriptions `new` no longer has.
pub fn removed_logical(old: &Value, new: &Value) -> Vec<Removed> {
    let mut out = Vec::new();
    for kind in ["publications", "subscriptions"] {
        let Some(before) = declared(old, kind) else {
            continue;
        };
        let after = declared(new, kind);
        for (name, spec) in before {
            if after.is_some_and(|a| a.contains_key(name)) {
                continue;
            }
            out.push(Removed {
                kind,
                name: name.clone(),
                database: spec
                    .get("database")
                    .and_then(Value::as_str)
                    .unwrap_or("postgres")
                    .to_string(),
                source: spec
                    .get("source")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
    }
    out
}

/// Records `removed` in `new`'s `logical.drop` (name: database) and takes out of it the
/// names `new` declares again (they are kept, not dropped). Returns whether `new` changed.
pub fn record_drops(new: &mut Value, removed: &[Removed]) -> bool {
    let before = new.clone();
    let Some(root) = new.as_object_mut() else {
        return false;
    };
    let logical = root
        .entry("logical")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(logical) = logical.as_object_mut() else {
        return false;
    };
    let mut drop = logical
        .remove("drop")
        .and_then(|d| d.as_object().cloned())
        .unwrap_or_default();
    for r in removed {
        let list = drop
            .entry(r.kind)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(list) = list.as_object_mut() {
            list.insert(r.name.clone(), Value::from(r.database.clone()));
        }
    }
    for kind in ["publications", "subscriptions"] {
        let again: Vec<String> = logical
            .get(kind)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(list) = drop.get_mut(kind).and_then(Value::as_object_mut) {
            list.retain(|name, _| !again.contains(name));
        }
        if drop
            .get(kind)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            drop.remove(kind);
        }
    }
    if !drop.is_empty() {
        logical.insert("drop".into(), Value::Object(drop));
    }
    if logical.is_empty() {
        root.remove("logical");
    }
    *new != before
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn seconds(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|s| format!("{s:.1}"))
        .unwrap_or_default()
}

/// `ctl logical`: the publications (with their subscribers' slots) and the subscriptions
/// of the `logical` object of `GET /patroni`.
pub fn render_logical(logical: &Value, format: OutputFormat) -> String {
    if format != OutputFormat::Pretty {
        return serde_json::to_string_pretty(logical).unwrap_or_default() + "\n";
    }
    let empty = Vec::new();
    let list = |key: &str| logical.get(key).and_then(Value::as_array).unwrap_or(&empty);
    let mut out = String::new();
    let mut rows = Vec::new();
    for p in list("publications") {
        let subscribers = p
            .get("subscribers")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        if subscribers.is_empty() {
            rows.push(vec![
                text(p, "name"),
                text(p, "database"),
                wrap(&text(p, "state"), 50),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for s in subscribers {
            rows.push(vec![
                text(p, "name"),
                text(p, "database"),
                wrap(&text(p, "state"), 50),
                text(s, "slot"),
                if s.get("active").and_then(Value::as_bool) == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                if s.get("permanent").and_then(Value::as_bool) == Some(true) {
                    "yes".into()
                } else {
                    "NO".into()
                },
                text(s, "lag_bytes"),
                seconds(s, "lag_seconds"),
            ]);
        }
    }
    if !rows.is_empty() {
        out.push_str(
            &Table {
                title: Some(" Publications ".into()),
                columns: [
                    ("Publication", Align::Left),
                    ("Database", Align::Left),
                    ("State", Align::Left),
                    ("Subscriber slot", Align::Left),
                    ("Active", Align::Left),
                    ("Permanent", Align::Left),
                    ("Lag bytes", Align::Right),
                    ("Lag s", Align::Right),
                ]
                .map(|(c, a)| (c.to_string(), a))
                .to_vec(),
                rows,
            }
            .render(),
        );
    }
    let rows: Vec<Vec<String>> = list("subscriptions")
        .iter()
        .map(|s| {
            vec![
                text(s, "name"),
                text(s, "database"),
                text(s, "state"),
                text(s, "tables_syncing"),
                text(s, "lag_bytes"),
                seconds(s, "lag_seconds"),
                text(s, "apply_error_count"),
                text(s, "sync_error_count"),
                wrap(&text(s, "last_error"), 60),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(
            &Table {
                title: Some(" Subscriptions ".into()),
                columns: [
                    ("Subscription", Align::Left),
                    ("Database", Align::Left),
                    ("State", Align::Left),
                    ("Tables syncing", Align::Right),
                    ("Lag bytes", Align::Right),
                    ("Last message s", Align::Right),
                    ("Apply errors", Align::Right),
                    ("Sync errors", Align::Right),
                    ("Last error", Align::Left),
                ]
                .map(|(c, a)| (c.to_string(), a))
                .to_vec(),
                rows,
            }
            .render(),
        );
    }
    let problems = list("problems").len();
    if problems > 0 {
        out.push_str(&format!(
            "{problems} problem(s) found: see `pgbaton ctl logical check`\n"
        ));
    }
    if out.is_empty() {
        out.push_str("Nothing declared under logical: in the dynamic configuration\n");
    }
    out
}

/// `ctl logical check`: each problem with the SQL that fixes it.
pub fn render_logical_check(logical: &Value, format: OutputFormat) -> String {
    let empty = Vec::new();
    let problems = logical
        .get("problems")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if format != OutputFormat::Pretty {
        return serde_json::to_string_pretty(problems).unwrap_or_default() + "\n";
    }
    if problems.is_empty() {
        return "No problems found: every published table has a replica identity, the subscribed tables match the publishers', the subscribers' slots are permanent\n".into();
    }
    Table {
        title: Some(" Logical replication check ".into()),
        columns: [
            ("Object", Align::Left),
            ("Table / slot", Align::Left),
            ("Problem", Align::Left),
            ("Fix", Align::Left),
        ]
        .map(|(c, a)| (c.to_string(), a))
        .to_vec(),
        rows: problems
            .iter()
            .map(|p| {
                vec![
                    text(p, "object"),
                    text(p, "target"),
                    wrap(&text(p, "problem"), 50),
                    wrap(&text(p, "fix"), 60),
                ]
            })
            .collect(),
    }
    .render()
}

/// Words of `text` in lines of at most `width` characters (a longer word stays whole).
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removing_a_declaration_records_the_drop_and_declaring_it_again_takes_it_back() {
        let old = json!({"logical": {
            "publications": {"app_pub": {"database": "shop", "all_tables": true}},
            "subscriptions": {"app_sub": {"database": "postgres", "publication": "p", "source": "host=a"}}
        }});
        let mut new = json!({"logical": {
            "publications": {"app_pub": {"database": "shop", "all_tables": true}}
        }});
        let removed = removed_logical(&old, &new);
        assert_eq!(
            removed,
            vec![Removed {
                kind: "subscriptions",
                name: "app_sub".into(),
                database: "postgres".into(),
                source: Some("host=a".into()),
            }]
        );
        assert!(removed[0]
            .describe()
            .contains("drops its slot app_sub on the publisher (host=a)"));
        assert!(record_drops(&mut new, &removed));
        assert_eq!(
            new["logical"]["drop"],
            json!({"subscriptions": {"app_sub": "postgres"}})
        );
        // Declared again: no longer to drop.
        let mut again = new.clone();
        again["logical"]["subscriptions"] =
            json!({"app_sub": {"database": "postgres", "publication": "p", "source": "host=a"}});
        assert!(record_drops(&mut again, &[]));
        assert!(again["logical"].get("drop").is_none(), "{again}");
        // Nothing declared nor dropped: nothing added.
        let mut plain = json!({"ttl": 30});
        assert!(!record_drops(&mut plain, &[]));
        assert_eq!(plain, json!({"ttl": 30}));
    }

    #[test]
    fn the_views_show_state_lag_errors_and_fixes() {
        let logical = json!({
            "publications": [{"name": "app_pub", "database": "postgres", "state": "present",
                "subscribers": [{"slot": "app_sub", "active": true, "lag_bytes": 0,
                                 "lag_seconds": 0.002, "permanent": false}]}],
            "subscriptions": [{"name": "in_sub", "database": "postgres", "state": "error",
                "enabled": true, "tables_syncing": 0, "lag_bytes": null, "lag_seconds": null,
                "apply_error_count": 4, "sync_error_count": 0,
                "last_error": "could not connect to the publisher: Connection refused"}],
            "problems": [{"object": "app_pub", "target": "public.nopk",
                "problem": "no replica identity", "fix": "ALTER TABLE public.nopk REPLICA IDENTITY FULL;"}],
            "checked_at": 0
        });
        let shown = render_logical(&logical, OutputFormat::Pretty);
        for needle in [
            "app_pub",
            "app_sub",
            "NO",
            "in_sub",
            "error",
            " 4 |",
            "Connection refused",
            "1 problem(s) found",
        ] {
            assert!(shown.contains(needle), "{needle:?} in\n{shown}");
        }
        let check = render_logical_check(&logical, OutputFormat::Pretty);
        assert!(
            check.contains("public.nopk") && check.contains("REPLICA IDENTITY FULL"),
            "{check}"
        );
        let none = render_logical_check(&json!({"problems": []}), OutputFormat::Pretty);
        assert!(none.starts_with("No problems found"));
    }
}
