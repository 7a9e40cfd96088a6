//! The router's errors: a configuration that cannot be used (`RouterConfigError`, naming the
//! key) and a router that cannot start or keep running (`RouterError`). Problems of single
//! client connections are not errors of the router: they are logged and counted.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RouterConfigError {
    #[error("cannot read the router configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the router configuration is not valid YAML: {message}")]
    Yaml { message: String },
    #[error("router configuration: {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("router configuration: {key} is required: {hint}")]
    Missing { key: String, hint: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {address} for the {what}: {source}; choose a free address in the router configuration")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("the router API server failed: {source}")]
    Api { source: std::io::Error },
    #[error("{0}")]
    Config(#[from] RouterConfigError),
    #[error("kernel forwarding (`forwarding: kernel`) is not available here: {source}; run the router as root on Linux 5.13 or later, or set `forwarding: auto` (falls back to relaying) or `userspace`")]
    Forwarding { source: std::io::Error },
    #[error("cannot listen for SIGHUP (reloading router.yml): {source}")]
    Signal { source: std::io::Error },
}
