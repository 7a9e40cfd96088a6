//! Option lists as Patroni writes them for initdb and pg_basebackup: a list whose entries are
//! flags (`- data-checksums`) or single-key mappings (`- encoding: UTF8`), or one mapping.

use serde_json::Value;

use crate::model::InitdbOption;
use crate::walk::{self, Ctx, Result};

pub(super) fn option_list(ctx: &Ctx, path: &str, v: &Value) -> Result<Vec<InitdbOption>> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let p = walk::index(path, i);
                match item {
                    Value::Object(map) if map.len() == 1 => {
                        for (k, value) in map {
                            out.extend(key_value(ctx, &walk::join(&p, k), k, value)?);
                        }
                    }
                    Value::Object(_) => {
                        return Err(ctx.invalid(
                            &p,
                            "expected one option per entry (e.g. \"- encoding: UTF8\"), got a mapping with several keys",
                        ))
                    }
                    other => out.push(InitdbOption::Flag(walk::as_nonempty_string(ctx, &p, other)?)),
                }
            }
            Ok(out)
        }
        Value::Object(map) => {
            let mut out = Vec::new();
            for (k, value) in map {
                out.extend(key_value(ctx, &walk::join(path, k), k, value)?);
            }
            Ok(out)
        }
        other => Err(ctx.invalid(
            path,
            format!(
                "expected a list of options (e.g. \"- data-checksums\" or \"- encoding: UTF8\"), got {}",
                walk::describe(other)
            ),
        )),
    }
}

/// `key: value`; `key: true` is the flag `key`, `key: false` leaves it out.
fn key_value(ctx: &Ctx, path: &str, key: &str, v: &Value) -> Result<Option<InitdbOption>> {
    match v {
        Value::Bool(true) => Ok(Some(InitdbOption::Flag(key.to_string()))),
        Value::Bool(false) => Ok(None),
        other => Ok(Some(InitdbOption::KeyValue(
            key.to_string(),
            walk::as_string(ctx, path, other)?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_flags_pairs_and_mappings() {
        let ctx = Ctx::new("f");
        let args = |v: Value| -> Vec<String> {
            option_list(&ctx, "p", &v)
                .expect("valid options")
                .iter()
                .map(InitdbOption::to_arg)
                .collect()
        };
        assert_eq!(
            args(json!([{"encoding": "UTF8"}, "data-checksums"])),
            ["--encoding=UTF8", "--data-checksums"]
        );
        assert_eq!(
            args(json!({"max-rate": "100M", "verbose": true, "progress": false})),
            ["--max-rate=100M", "--verbose"]
        );
    }

    #[test]
    fn rejects_multi_key_entries_with_their_index() {
        let ctx = Ctx::new("f");
        let err = option_list(&ctx, "bootstrap.initdb", &json!(["x", {"a": 1, "b": 2}]))
            .expect_err("two keys in one entry");
        assert!(
            err.to_string()
                .starts_with("f: bootstrap.initdb[1]: expected one option per entry"),
            "{err}"
        );
    }
}
