//! Editing the dynamic configuration: `edit-config -s key=value` / `-p pg_param=value` turned into a JSON merge patch (applied by
//! `pgbaton_config::merge_patch`, as `PATCH /config` applies one), and
//! the YAML the operator sees in `$EDITOR`. Pure functions; the binary does the I/O.

use serde_json::{Map, Value};

/// Why an edit could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// `-s`/`-p` argument without `=` or with an empty key.
    #[error(
        "cannot read {arg:?}: write key=value (e.g. ttl=10, postgresql.parameters.work_mem=8MB)"
    )]
    NotKeyValue { arg: String },
    /// The edited text is not YAML.
    #[error("the edited configuration is not valid YAML: {message}")]
    Yaml { message: String },
    /// The edited text is YAML but not a mapping.
    #[error("the configuration must be a mapping of keys to values, got {got}")]
    NotMapping { got: String },
}

/// A YAML scalar as JSON: `10` is a number, `true` a bool, `null`/`~`/empty deletes,
/// anything else a string.
pub fn parse_scalar(text: &str) -> Value {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    match serde_saphyr::from_str::<Value>(trimmed) {
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(trimmed.to_string()),
    }
}

/// Split `key=value` (the key may be dotted: `postgresql.parameters.work_mem`).
fn split_assignment(arg: &str) -> Result<(Vec<String>, Value), EditError> {
    let not_kv = || EditError::NotKeyValue {
        arg: arg.to_string(),
    };
    let (key, value) = arg.split_once('=').ok_or_else(not_kv)?;
    let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(not_kv());
    }
    Ok((path, parse_scalar(value)))
}

fn insert_path(patch: &mut Map<String, Value>, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            patch.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let slot = patch
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// The merge patch for `edit-config -s key=value ... -p pg_param=value ...`: `-s` keys are
/// dotted paths from the top of the config, `-p` keys go under `postgresql.parameters`.
pub fn patch_from_args(sets: &[String], pg_params: &[String]) -> Result<Value, EditError> {
    let mut patch = Map::new();
    for arg in sets {
        let (path, value) = split_assignment(arg)?;
        insert_path(&mut patch, &path, value);
    }
    for arg in pg_params {
        let (path, value) = split_assignment(arg)?;
        let mut full = vec!["postgresql".to_string(), "parameters".to_string()];
        // A parameter name never contains dots we should split on (e.g. auto_explain.log_min_duration).
        full.push(path.join("."));
        insert_path(&mut patch, &full, value);
    }
    Ok(Value::Object(patch))
}

/// The configuration as the operator edits it: YAML with keys sorted.
pub fn to_yaml(config: &Value) -> String {
    crate::output::yaml(&crate::output::sort_keys(config))
}

/// The edited YAML back as JSON (an empty file is an empty mapping).
pub fn from_yaml(text: &str) -> Result<Value, EditError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|e| EditError::Yaml {
        message: e.to_string(),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(EditError::NotMapping {
            got: other.to_string(),
        }),
    }
}
