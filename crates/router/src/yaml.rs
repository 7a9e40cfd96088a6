//! Reading router.yml with the configuration walker the agents' files are read with
//! (`pgbaton_config::walk`): every error names the key's dotted path and what was expected,
//! and a key nobody asked for is an error with a "did you mean" suggestion
//! (`Section::finish_strict`). The value types only the router has (listen addresses, its
//! durations, counts, choices among words) are read here.

use std::path::PathBuf;
use std::time::Duration;

use pgbaton_config::walk::{self, Ctx, Section};
use pgbaton_config::ConfigError;
use serde_json::Value;

use crate::error::RouterConfigError;

/// What the walker's errors name as their source.
pub(crate) fn context() -> Ctx {
    Ctx::new("router configuration")
}

impl From<ConfigError> for RouterConfigError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Invalid { path, reason, .. } => {
                RouterConfigError::Invalid { key: path, reason }
            }
            ConfigError::Yaml { message, .. } => RouterConfigError::Yaml { message },
            ConfigError::Read { file, error } => RouterConfigError::Read {
                path: file.into(),
                source: error,
            },
        }
    }
}

type Result<T> = std::result::Result<T, RouterConfigError>;

/// A `host:port` with a numeric port.
pub(crate) fn listen_value(ctx: &Ctx, key: &str, value: &Value) -> Result<String> {
    let text = walk::as_nonempty_string(ctx, key, value)?;
    let port_ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if port_ok {
        Ok(text)
    } else {
        Err(invalid(key, "must be host:port, e.g. 127.0.0.1:5000"))
    }
}

pub(crate) fn listen(ctx: &Ctx, section: &mut Section, key: &str) -> Result<Option<String>> {
    let path = section.at(key);
    section
        .get(key)
        .map(|v| listen_value(ctx, &path, v))
        .transpose()
}

/// A duration value: seconds (`5`, `0.5`) or a number with a unit (`500ms`, `5s`, `1min`).
pub(crate) fn duration_value(ctx: &Ctx, key: &str, value: &Value) -> Result<Duration> {
    let seconds = walk::as_duration_seconds(ctx, key, value)?;
    if seconds < 0.0 {
        return Err(invalid(key, "must not be negative"));
    }
    // Rounded to whole nanoseconds, so that `1234ms` is exactly 1.234 s.
    Ok(Duration::from_nanos((seconds * 1e9).round() as u64))
}

pub(crate) fn duration(ctx: &Ctx, section: &mut Section, key: &str) -> Result<Option<Duration>> {
    let path = section.at(key);
    section
        .get(key)
        .map(|v| duration_value(ctx, &path, v))
        .transpose()
}

/// A whole number, 0 or more.
pub(crate) fn count(ctx: &Ctx, section: &mut Section, key: &str) -> Result<Option<usize>> {
    let path = section.at(key);
    match section.int(ctx, key)? {
        None => Ok(None),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| invalid(&path, "must be a whole number (0 or more)")),
    }
}

/// A whole number, 1 or more.
pub(crate) fn positive(ctx: &Ctx, section: &mut Section, key: &str) -> Result<Option<usize>> {
    let path = section.at(key);
    match count(ctx, section, key)? {
        Some(0) => Err(invalid(&path, "must be at least 1")),
        n => Ok(n),
    }
}

pub(crate) fn path(ctx: &Ctx, section: &mut Section, key: &str) -> Result<Option<PathBuf>> {
    Ok(section.string(ctx, key)?.map(PathBuf::from))
}

/// One word among `choices` (case and `-`/`_` do not matter); `expected` is the error's
/// "must be ..." text.
pub(crate) fn choice<T: Copy>(
    ctx: &Ctx,
    section: &mut Section,
    key: &str,
    choices: &[(&str, T)],
    expected: &str,
) -> Result<Option<T>> {
    let path = section.at(key);
    let Some(text) = section.string(ctx, key)? else {
        return Ok(None);
    };
    let word = text.to_ascii_lowercase().replace('-', "_");
    choices
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, value)| Some(*value))
        .ok_or_else(|| invalid(&path, expected))
}

/// An error about `key` found by the router's own checks.
pub(crate) fn invalid(key: &str, reason: &str) -> RouterConfigError {
    RouterConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}
