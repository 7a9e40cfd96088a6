//! Cluster state in the DCS (etcd v3), in Patroni 3's layout.
//!
//! The agent, `ctl` and the router are written against the [`Dcs`] trait. [`EtcdDcs`] is
//! the real store; [`MemoryDcs`] is an in-memory one with the same behaviour (one
//! conformance suite runs against both) for the simulator and tests; [`EtcdProcess`] runs a
//! real etcd for tests and `pgbaton local up`.

pub mod model;
pub use model::*;

mod dcs;
mod error;
mod etcd;
mod memory;
mod parse;
mod process;

pub use dcs::{lease_ttl_secs, Dcs, LeaseAck};
pub use error::DcsError;
pub use etcd::{list_scopes, load_cluster, load_cluster_with, EtcdAccess, EtcdDcs, EtcdTls};
pub use memory::{MemoryDcs, MemoryStore};
pub use process::{EtcdProcess, EtcdProcessError, ETCD_BIN};
