//! Reading router.yml's values: each getter names the key (its dotted path) in the error it
//! returns, with what was expected.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::RouterConfigError;
use crate::units::parse_duration;

pub(crate) fn section<'a>(
    key: &str,
    value: &'a Value,
) -> Result<&'a Map<String, Value>, RouterConfigError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        _ => Err(invalid(key, "must be a mapping")),
    }
}

pub(crate) fn boolean(key: &str, value: &Value) -> Result<bool, RouterConfigError> {
    match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(invalid(key, "must be true or false")),
    }
}

pub(crate) fn string(key: &str, value: &Value) -> Result<String, RouterConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(key, "must be a string")),
    }
}

/// A `host:port` with a numeric port.
pub(crate) fn listen(key: &str, value: &Value) -> Result<String, RouterConfigError> {
    let text = string(key, value)?;
    let port_ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if port_ok {
        Ok(text)
    } else {
        Err(invalid(key, "must be host:port, e.g. 127.0.0.1:5000"))
    }
}

pub(crate) fn duration(key: &str, value: &Value) -> Result<Duration, RouterConfigError> {
    let parsed = match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "must not be negative".to_string()),
        Value::String(s) => parse_duration(s),
        _ => Err("must be seconds (5, 0.5) or a duration (\"500ms\", \"5s\")".to_string()),
    };
    parsed.map_err(|reason| invalid(key, &reason))
}

pub(crate) fn invalid(key: &str, reason: &str) -> RouterConfigError {
    RouterConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn unknown(key: &str) -> RouterConfigError {
    RouterConfigError::Unknown {
        key: key.to_string(),
    }
}
