//! pgbaton's built-in router: one address for writes, one for reads, following the cluster.
//!
//! The router watches the cluster's keys in etcd (Patroni 3 layout, through `pgbaton-dcs`)
//! and never writes there. A connection on the **write** listener goes to the member that
//! holds the leader key and runs as primary; while there is none (a switchover or failover
//! in progress, or a leader not accepting connections yet) it waits up to `handover_wait`
//! (default the cluster's ttl + 2 s), and it is never handed to a server
//! whose startup reports `in_hot_standby` or `default_transaction_read_only` on. When the
//! leader changes, every write session to the old one is closed at once. A connection on the
//! **read** listener goes to a streaming replica within `read.max_lag` bytes of the leader
//! (with hysteresis), balanced round robin or by least connections, else to the leader or
//! refused. Clients may pick a role themselves with `options=-c pgbaton.target=read|write|any`
//! or a `target_session_attrs` startup parameter.
//!
//! The router understands only the start of the PostgreSQL protocol (GSSENCRequest is
//! answered `N`; CancelRequest is passed to the server that owns the backend); after
//! ReadyForQuery it forwards bytes, handing them to the kernel where it may (`forwarding`,
//! see `offload`). What happens to an SSLRequest is the `tls` setting. With
//! `tls: refuse` (the default) it is answered `N` and the client continues in plain text
//! (or gives up, with `sslmode=require`). With `tls: terminate` the router answers `S` and
//! runs TLS itself with its own certificate (`tls_certfile`, `tls_keyfile`), reads the
//! startup inside TLS and applies every rule as in plain text; the router→server leg stays
//! plain TCP (loopback or a trusted network). With `tls: passthrough` the SSLRequest goes to
//! the server picked by the listener's role alone (write: the leader, waiting for one as
//! writes do; read: a replica per the usual selection and fallback), its one-byte answer
//! goes back to the client, and from then on bytes are forwarded untouched: the TLS
//! handshake and the whole session are end to end between client and PostgreSQL. The router
//! cannot read such a session's startup, so for passed-through sessions the role options in
//! the startup are not seen, the read-only check on the write listener (`in_hot_standby`,
//! `default_transaction_read_only`) is skipped, and CancelRequests for them are not routed;
//! a write session is still closed when the leader changes. `tls_required` refuses
//! plain-text startups (FATAL 08P01).
//!
//! A startup naming an alias database of `databases:` is routed by the alias's role and
//! rewritten to the real database. Replica lag comes from the agents' REST API, polled every
//! `rest_poll_interval`, with the DCS member documents as the fallback (`lag_source`).
//! With an `auth:` section the router is also a connection pooler (PgBouncer's model and
//! key names): it authenticates clients itself (`auth`), shares server connections per
//! (database, user, target) in session or transaction mode (`pool`, `pooled`), and relays
//! pooled sessions message by message (`txn`) unless a session-mode one can go to the
//! kernel. A pooling router may also have an **auto** listener (`auto.listen`): each
//! transaction the client declares read-only goes to a replica that has replayed the
//! client's last commit, everything else to the leader (`ryw`, read-your-writes).

mod aliases;
mod api;
pub mod auth;
mod cancel;
mod client;
mod config;
mod credentials;
mod error;
mod handover;
mod handshake;
pub mod import;
pub mod lag;
mod load;
mod metrics;
mod offload;
mod open;
mod passthrough;
mod poller;
pub mod pool;
mod pool_config;
mod pooled;
mod pooling;
pub mod protocol;
mod pump;
mod rare;
mod relay;
mod reply;
mod retry;
mod route;
mod router;

mod session;
mod shared;
mod spare;
mod status_page;
mod status_table;
mod stop;
mod takeout;
mod tls;
pub mod topology;

mod units;
mod watcher;
mod wire;
mod yaml;

pub use config::{
    Balance, DatabaseAlias, Forwarding, LagSource, ReadFallback, RouterConfig, TlsMode,
};
pub use error::{RouterConfigError, RouterError};
pub use router::{run, Router};
pub use status_table::render_status_table;
pub use topology::{Backend, Replica, Topology};
