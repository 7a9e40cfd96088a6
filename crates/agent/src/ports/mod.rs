//! The runtime's ports besides the DCS (`pgbaton_dcs::Dcs`) and the peers' REST APIs
//! (`crate::peers::Peers`): the local PostgreSQL and the host. Production adapters here;
//! `pgbaton-sim` implements them over its model of a cluster.

pub mod host;
pub mod postgres;

pub use host::{Host, OsHost};
pub use postgres::{Busy, ConfigFiles, LocalPostgres, LogFrom, Postgres, WalLog};
