//! Patroni-compatible configuration of the pgbaton agent.
//!
//! [`load_file`] / [`parse_str`] read a Patroni-style YAML file (scope, name, restapi, etcd3,
//! bootstrap, postgresql, tags, plus pgbaton's own `pgbaton:` section), validate it with exact
//! key paths in every error, apply pgbaton's defaults and return a [`Config`] with the
//! warnings found (unknown keys with a "did you mean" suggestion, options accepted but not
//! supported). [`DynamicConfig`] is the cluster-wide part kept in the DCS `config` key, read
//! and written in Patroni's JSON shape.

mod address;
mod dynamic;
mod error;
mod managed;
mod model;
mod parse;
mod suggest;
pub mod template;
pub mod walk;

pub use dynamic::{
    merge_patch, DynamicConfig, LogicalSpec, PublicationScope, PublicationSpec, SlotSpec,
    StandbyCluster, SubscriptionSpec, SyncMode,
};
pub use error::{ConfigError, ConfigWarning, Loaded};
pub use managed::overwritten_parameters;
pub use model::{
    BootstrapConfig, BootstrapMethod, CommandMethod, Config, Credentials, DcsConfig, InitdbOption,
    PgBackRestConfig, PgbatonConfig, PostgresqlConfig, ReplicaMethod, RestApiConfig, Tags,
    UserSpec, WatchdogConfig, WatchdogMode,
};
pub use parse::{load_file, parse_str, parse_str_with_env};
