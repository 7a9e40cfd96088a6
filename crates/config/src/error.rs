//! Errors and warnings of configuration loading.
//!
//! An error stops the agent at start: it names the file (or "DCS config"), the dotted key path
//! (with list indices such as `bootstrap.pg_hba[1]`), what was wrong and what to do. A warning
//! (unknown key, accepted-but-unsupported option, risky timing) never stops anything but is
//! never silent either: the caller logs every one.

use std::fmt;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error(
        "{file}: cannot read the configuration file: {error} (check the path and its permissions)"
    )]
    Read {
        file: String,
        #[source]
        error: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{file}: line {line} column {column}: invalid YAML: {message}")]
    Yaml {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// The YAML is well formed but a value is missing, of the wrong type or out of range.
    #[error("{file}: {path}: {reason}")]
    Invalid {
        file: String,
        /// Dotted key path, e.g. `bootstrap.dcs.ttl` or `bootstrap.pg_hba[1]`.
        path: String,
        reason: String,
    },
}

impl PartialEq for ConfigError {
    /// Two errors are equal when they say the same thing (io errors have no equality).
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// Something in the configuration that was accepted but deserves the operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key path of the offending key.
    pub path: String,
    /// What was noticed and what pgbaton does about it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A successfully loaded value together with the warnings found while loading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    pub value: T,
    pub warnings: Vec<ConfigWarning>,
}
