//! pgbaton-chaos: fault injection on a pgbaton cluster whose hosts are Linux network
//! namespaces, a Jepsen-style workload and the checker of its history. The `chaos` binary
//! (src/main.rs) drives a run; the modules are public so the integration tests can build
//! hosts and break them directly.

pub mod checker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod converge;
pub mod db;
pub mod dcs_watch;
pub mod error;
pub mod fault_kind;
pub mod faults;
pub mod history;
pub mod http;
pub mod json;
pub mod liveness;
pub mod loss;
pub mod monitor;
pub mod netns;
pub mod nft;
pub mod procs;
pub mod proxy;
pub mod read_check;
pub mod readers;
pub mod report;
pub mod runner;
pub mod ryw;
pub mod schedule;
pub mod shell;
pub mod signals;
pub mod workload;
