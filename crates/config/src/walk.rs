//! A small path-tracking walker over a parsed YAML/JSON tree.
//!
//! The configuration is first read into a `serde_json::Value`, then walked section by section
//! with [`Section`]: every getter records the key it asked for, so that [`Section::finish`]
//! can report every key nobody asked for as unknown (with a "did you mean" suggestion), and
//! every error carries the exact dotted key path. The agent's file and the DCS `config` key
//! are read with it, and so is the router's `router.yml`, where a key nobody asked for is an
//! error ([`Section::finish_strict`]) rather than a warning.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::error::{ConfigError, ConfigWarning};
use crate::suggest;

/// Where values come from (file name or "DCS config") and the warnings gathered so far.
pub struct Ctx {
    pub file: String,
    pub warnings: Vec<ConfigWarning>,
}

impl Ctx {
    pub fn new(file: &str) -> Self {
        Ctx {
            file: file.to_string(),
            warnings: Vec::new(),
        }
    }

    /// An error about the value at `path`.
    pub fn invalid(&self, path: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            path: display_path(path),
            reason: reason.into(),
        }
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: display_path(path),
            message: message.into(),
        });
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.to_string()
    }
}

/// `parent.key`, or `key` at the top level.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// How a value is described in "expected X, got Y" messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => v.to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// A string; numbers are accepted and printed (a password of `12345` is a string to the user).
pub fn as_string(ctx: &Ctx, path: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ctx.invalid(path, format!("expected a string, got {}", describe(other)))),
    }
}

/// A non-empty string.
pub fn as_nonempty_string(ctx: &Ctx, path: &str, v: &Value) -> Result<String> {
    let s = as_string(ctx, path, v)?;
    if s.trim().is_empty() {
        return Err(ctx.invalid(path, "must not be empty"));
    }
    Ok(s)
}

/// A boolean; YAML 1.1 words in strings (`"on"`, `"yes"`, ...) are accepted like Patroni does.
pub fn as_bool(ctx: &Ctx, path: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(ctx.invalid(path, format!("expected true or false, got {}", describe(v)))),
        },
        other => Err(ctx.invalid(
            path,
            format!("expected true or false, got {}", describe(other)),
        )),
    }
}

/// A finite number of seconds (integer or float; a numeric string is accepted too).
pub fn as_seconds(ctx: &Ctx, path: &str, v: &Value) -> Result<f64> {
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(ctx.invalid(
            path,
            format!("expected a number of seconds, got {}", describe(v)),
        )),
    }
}

/// A duration in seconds: a number of seconds, or a string with PostgreSQL's (and Patroni's)
/// time units `ms`, `s`, `min`, `h`, `d` (`"30min"`, `"1h"`, `"90 s"`).
pub fn as_duration_seconds(ctx: &Ctx, path: &str, v: &Value) -> Result<f64> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        _ => return as_seconds(ctx, path, v),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor = match unit.trim() {
        "" | "s" => Some(1.0),
        "ms" => Some(0.001),
        "min" => Some(60.0),
        "h" => Some(3600.0),
        "d" => Some(86400.0),
        _ => None,
    };
    match (number.parse::<f64>().ok(), factor) {
        (Some(x), Some(f)) if (x * f).is_finite() => Ok(x * f),
        _ => Err(ctx.invalid(
            path,
            format!(
                "expected a duration (seconds, or a number with ms, s, min, h or d), got {}",
                describe(v)
            ),
        )),
    }
}

/// A whole number (a float with no fractional part is accepted).
pub fn as_int(ctx: &Ctx, path: &str, v: &Value) -> Result<i64> {
    let parsed = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                .map(|x| x as i64)
        }),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ctx.invalid(
            path,
            format!("expected a whole number, got {}", describe(v)),
        )
    })
}

/// A PostgreSQL parameter value as PostgreSQL's configuration file would spell it.
pub fn as_parameter(ctx: &Ctx, path: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(true) => Ok("on".to_string()),
        Value::Bool(false) => Ok("off".to_string()),
        other => Err(ctx.invalid(
            path,
            format!(
                "expected a parameter value (string, number or boolean), got {}",
                describe(other)
            ),
        )),
    }
}

/// A mapping of PostgreSQL parameters, normalised to strings.
pub fn parameters(ctx: &Ctx, path: &str, v: &Value) -> Result<BTreeMap<String, String>> {
    let map = as_map(ctx, path, v)?;
    let mut out = BTreeMap::new();
    for (k, value) in map {
        let p = join(path, k);
        if value.is_null() {
            return Err(ctx.invalid(&p, "parameter has no value; give one or remove the line"));
        }
        out.insert(k.clone(), as_parameter(ctx, &p, value)?);
    }
    Ok(out)
}

pub fn as_map<'a>(ctx: &Ctx, path: &str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ctx.invalid(path, format!("expected a mapping, got {}", describe(other)))),
    }
}

pub fn as_list<'a>(ctx: &Ctx, path: &str, v: &'a Value) -> Result<&'a Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(ctx.invalid(path, format!("expected a list, got {}", describe(other)))),
    }
}

/// A list of strings (each entry non-empty).
pub fn string_list(ctx: &Ctx, path: &str, v: &Value) -> Result<Vec<String>> {
    as_list(ctx, path, v)?
        .iter()
        .enumerate()
        .map(|(i, item)| as_nonempty_string(ctx, &index(path, i), item))
        .collect()
}

/// One mapping of the configuration, at a known path, remembering which keys were asked for.
pub struct Section<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    asked: BTreeSet<String>,
}

impl<'a> Section<'a> {
    /// The mapping at `path`; an error when the value is not a mapping.
    pub fn new(ctx: &Ctx, path: &str, v: &'a Value) -> Result<Self> {
        Ok(Section {
            path: path.to_string(),
            map: as_map(ctx, path, v)?,
            asked: BTreeSet::new(),
        })
    }

    /// Path of a key of this section.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; an explicit null counts as absent (Patroni files often leave
    /// sections empty).
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.asked.insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present at all (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn string(&mut self, ctx: &Ctx, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| as_nonempty_string(ctx, &self.at(key), v))
            .transpose()
    }

    /// A string that may legitimately be empty (passwords).
    pub fn any_string(&mut self, ctx: &Ctx, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| as_string(ctx, &self.at(key), v))
            .transpose()
    }

    pub fn bool(&mut self, ctx: &Ctx, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| as_bool(ctx, &self.at(key), v))
            .transpose()
    }

    pub fn seconds(&mut self, ctx: &Ctx, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| as_seconds(ctx, &self.at(key), v))
            .transpose()
    }

    pub fn int(&mut self, ctx: &Ctx, key: &str) -> Result<Option<i64>> {
        self.get(key)
            .map(|v| as_int(ctx, &self.at(key), v))
            .transpose()
    }

    /// A nested mapping.
    pub fn section(&mut self, ctx: &Ctx, key: &str) -> Result<Option<Section<'a>>> {
        let path = self.at(key);
        self.get(key)
            .map(|v| Section::new(ctx, &path, v))
            .transpose()
    }

    /// Accept `key` (it is known) and warn, when it is present, that pgbaton does not act on it.
    pub fn unsupported(&mut self, ctx: &mut Ctx, key: &str, why: &str) {
        if self.has(key) {
            let path = self.at(key);
            ctx.warn(&path, why);
        }
        self.asked.insert(key.to_string());
    }

    /// The whole mapping, for sections whose keys are names (users, user tags).
    pub fn raw(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// Whether `key` was asked for already.
    pub fn is_asked(&self, key: &str) -> bool {
        self.asked.contains(key)
    }

    /// Mark `key` as known without reading it.
    pub fn known(&mut self, key: &str) {
        self.asked.insert(key.to_string());
    }

    /// For files where a key nobody asked for is an error (the router's): the first such key,
    /// with a "did you mean" suggestion and the keys this section has.
    pub fn finish_strict(self, ctx: &Ctx) -> Result<()> {
        let Some(key) = self.map.keys().find(|k| !self.asked.contains(*k)) else {
            return Ok(());
        };
        let hint = suggest::closest(key, self.asked.iter().map(String::as_str))
            .map(|k| format!(" (did you mean \"{k}\"?)"))
            .unwrap_or_default();
        let known: Vec<&str> = self.asked.iter().map(String::as_str).collect();
        let reason = if known.is_empty() {
            format!("unknown key{hint}: this section takes no keys")
        } else {
            format!("unknown key{hint}; the keys here are {}", known.join(", "))
        };
        Err(ctx.invalid(&join(&self.path, key), reason))
    }

    /// Warn about every key nobody asked for and return them (key and value), so that a caller
    /// that keeps unknown keys verbatim can do so. `what_happens` says what is done with them.
    pub fn finish(self, ctx: &mut Ctx, what_happens: &str) -> Vec<(String, Value)> {
        let mut unknown = Vec::new();
        for (key, value) in self.map {
            if self.asked.contains(key) {
                continue;
            }
            let hint = suggest::closest(key, self.asked.iter().map(String::as_str))
                .map(|k| format!("; did you mean \"{k}\"?"))
                .unwrap_or_default();
            ctx.warn(
                &join(&self.path, key),
                format!("unknown key ({what_happens}){hint}"),
            );
            unknown.push((key.clone(), value.clone()));
        }
        unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_strict_section_names_the_unknown_key_and_the_known_ones() {
        let ctx = Ctx::new("router.yml");
        let value = json!({"listen": "127.0.0.1:5000", "lisen": 1});
        let mut section = Section::new(&ctx, "write", &value).expect("a mapping");
        section.string(&ctx, "listen").expect("a string");
        section.known("pool_mode");
        let error = section
            .finish_strict(&ctx)
            .expect_err("lisen is unknown")
            .to_string();
        assert_eq!(
            error,
            "router.yml: write.lisen: unknown key (did you mean \"listen\"?); the keys here are listen, pool_mode"
        );
        let value = json!({"listen": "x"});
        let mut section = Section::new(&ctx, "write", &value).expect("a mapping");
        section.string(&ctx, "listen").expect("a string");
        assert!(section.finish_strict(&ctx).is_ok());
    }

    #[test]
    fn describe_quotes_strings_and_names_containers() {
        assert_eq!(describe(&json!("abc")), "\"abc\"");
        assert_eq!(describe(&json!(-1)), "-1");
        assert_eq!(describe(&json!([1])), "a list");
        assert_eq!(describe(&json!({"a": 1})), "a mapping");
    }

    #[test]
    fn parameters_are_normalised_to_strings() {
        let ctx = Ctx::new("f");
        let p = parameters(
            &ctx,
            "x",
            &json!({"a": true, "b": false, "c": 200, "d": 0.9, "e": "1GB"}),
        )
        .expect("valid parameters");
        let got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("a", "on"),
                ("b", "off"),
                ("c", "200"),
                ("d", "0.9"),
                ("e", "1GB")
            ]
        );
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let ctx = Ctx::new("f");
        for (v, want) in [
            (json!(1800), 1800.0),
            (json!("1800"), 1800.0),
            (json!("30min"), 1800.0),
            (json!("1h"), 3600.0),
            (json!("90 s"), 90.0),
            (json!("500ms"), 0.5),
            (json!("2d"), 172800.0),
        ] {
            assert_eq!(as_duration_seconds(&ctx, "t", &v).ok(), Some(want), "{v}");
        }
        let err = as_duration_seconds(&ctx, "t", &json!("30 parsecs")).expect_err("no unit");
        assert_eq!(
            err.to_string(),
            "f: t: expected a duration (seconds, or a number with ms, s, min, h or d), got \"30 parsecs\""
        );
    }

    #[test]
    fn seconds_accept_integers_floats_and_numeric_strings() {
        let ctx = Ctx::new("f");
        assert_eq!(as_seconds(&ctx, "t", &json!(30)).ok(), Some(30.0));
        assert_eq!(as_seconds(&ctx, "t", &json!(2.5)).ok(), Some(2.5));
        assert_eq!(as_seconds(&ctx, "t", &json!("4")).ok(), Some(4.0));
        let err = as_seconds(&ctx, "t", &json!(true)).expect_err("bool is not seconds");
        assert_eq!(
            err.to_string(),
            "f: t: expected a number of seconds, got true"
        );
    }
}
