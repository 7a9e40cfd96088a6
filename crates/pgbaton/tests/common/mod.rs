//! Harness for the end-to-end tests: real etcd, real PostgreSQL 15 and real `pgbaton agent`
//! processes on loopback, with helpers to break them and to observe the result.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod config;
pub mod http;
pub mod monitor;
pub mod ports;
pub mod procs;
pub mod sql;

pub use cluster::Cluster;
pub use monitor::assert_single_primary;

use std::time::Duration;

/// Time for a fresh cluster to come up (initdb, clones) on a busy 2-core machine.
pub const UP: Duration = Duration::from_secs(90);
