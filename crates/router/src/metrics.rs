//! The router's Prometheus metrics: connections (total and active) per backend and role,
//! bytes forwarded, routing decisions, waits for a leader during a switchover and how long
//! they took, refusals, sessions closed because their server stopped being leader, and
//! clients dropped during the startup. Updated at connection start and end only: the data
//! path touches no metric. With pooling, per-pool series (`pool_*`, labels database, user,
//! target) are read from the pools when scraped (`PoolCollector`).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label pairs of one series.
pub(crate) type Labels = Vec<(&'static str, String)>;

pub(crate) fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The Content-Type of the `/metrics` text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) struct Metrics {
    registry: Registry,
    /// {role, backend}
    pub connections: Family<Labels, Counter>,
    /// {role, backend}
    pub active: Family<Labels, Gauge>,
    /// {direction: to_server|to_client, backend}; added when a session ends.
    pub bytes: Family<Labels, Counter>,
    /// {target, decision: leader|replica|leader_fallback|pooled|replication|refused}
    pub decisions: Family<Labels, Counter>,
    /// {outcome: leader_found|timed_out}
    pub waits: Family<Labels, Counter>,
    pub wait_seconds: Histogram,
    /// {reason}
    pub refusals: Family<Labels, Counter>,
    /// {reason}: clients dropped before a server was chosen (garbage, timeout, ...).
    pub client_errors: Family<Labels, Counter>,
    /// {outcome: forwarded|unknown_key|failed}
    pub cancels: Family<Labels, Counter>,
    /// {outcome: replica|leader|refused}: read-only transactions routed by read-your-writes.
    pub read_your_writes: Family<Labels, Counter>,
    pub closed_on_leader_change: Counter,
    pub leader_changes: Counter,
    pub dcs_errors: Counter,
    /// {outcome: ok|failed|timeout}: TLS handshakes of `tls: terminate`.
    pub tls_handshakes: Family<Labels, Counter>,
    /// {alias}: connections that named an alias database.
    pub aliases: Family<Labels, Counter>,
    /// Failed or unusable answers of members' REST APIs (`lag_source: rest`).
    pub rest_errors: Counter,
    /// Sessions forwarded by the kernel (the rest are relayed by the router's threads).
    pub kernel_forwarded: Counter,
    /// {outcome: ok|refused}: reloads of router.yml (SIGHUP).
    pub reloads: Family<Labels, Counter>,
}

impl Metrics {
    pub(crate) fn new(pools: Option<Arc<crate::pool::Pools>>) -> Self {
        let mut registry = Registry::with_prefix("pgbaton_router");
        if let Some(pools) = pools {
            registry.register_collector(Box::new(PoolCollector { pools }));
        }
        let connections = Family::<Labels, Counter>::default();
        registry.register(
            "connections",
            "Client connections forwarded, per role and backend member.",
            connections.clone(),
        );
        let active = Family::<Labels, Gauge>::default();
        registry.register(
            "connections_active",
            "Client connections open now, per role and backend member.",
            active.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "bytes",
            "Bytes forwarded by sessions that ended, per direction and backend member.",
            bytes.clone(),
        );
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "routing_decisions",
            "Where new connections were sent, per requested target.",
            decisions.clone(),
        );
        let waits = Family::<Labels, Counter>::default();
        registry.register(
            "leader_waits",
            "Connections that had to wait for a leader (switchover or failover in progress).",
            waits.clone(),
        );
        let wait_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "leader_wait_seconds",
            "How long connections waited for a leader.",
            wait_seconds.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "refusals",
            "Connections refused with an ErrorResponse, per reason.",
            refusals.clone(),
        );
        let client_errors = Family::<Labels, Counter>::default();
        registry.register(
            "client_errors",
            "Clients dropped during the startup (malformed packet, timeout, ...).",
            client_errors.clone(),
        );
        let cancels = Family::<Labels, Counter>::default();
        registry.register(
            "cancel_requests",
            "CancelRequests received, per outcome.",
            cancels.clone(),
        );
        let read_your_writes = Family::<Labels, Counter>::default();
        registry.register(
            "read_your_writes",
            "Read-only transactions routed by read-your-writes: on a replica that had replayed the client's token, on the leader (no replica had, within read_your_writes_wait), or refused.",
            read_your_writes.clone(),
        );
        let closed_on_leader_change = Counter::default();
        registry.register(
            "closed_on_leader_change",
            "Write sessions closed because their server stopped being the leader.",
            closed_on_leader_change.clone(),
        );
        let leader_changes = Counter::default();
        registry.register(
            "leader_changes",
            "Changes of the leader seen in etcd.",
            leader_changes.clone(),
        );
        let dcs_errors = Counter::default();
        registry.register(
            "dcs_errors",
            "Failed reads of the cluster state from etcd.",
            dcs_errors.clone(),
        );
        let tls_handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes with clients (tls: terminate), per outcome.",
            tls_handshakes.clone(),
        );
        let aliases = Family::<Labels, Counter>::default();
        registry.register(
            "alias_connections",
            "Connections to an alias database of `databases:`, per alias.",
            aliases.clone(),
        );
        let rest_errors = Counter::default();
        registry.register(
            "rest_poll_errors",
            "Failed or unusable answers of the members' REST APIs when polling lag.",
            rest_errors.clone(),
        );
        let kernel_forwarded = Counter::default();
        registry.register(
            "kernel_forwarded_sessions",
            "Sessions whose bytes the kernel forwarded (`forwarding: auto|kernel`); the others were relayed by the router's threads.",
            kernel_forwarded.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of router.yml on SIGHUP, per outcome (ok, refused: the running configuration was kept).",
            reloads.clone(),
        );
        Metrics {
            registry,
            reloads,
            kernel_forwarded,
            tls_handshakes,
            aliases,
            rest_errors,
            connections,
            active,
            bytes,
            decisions,
            waits,
            wait_seconds,
            refusals,
            client_errors,
            cancels,
            read_your_writes,
            closed_on_leader_change,
            leader_changes,
            dcs_errors,
        }
    }

    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub(crate) fn count(family: &Family<Labels, Counter>, pairs: &[(&'static str, &str)]) {
        family.get_or_create(&labels(pairs)).inc();
    }
}

/// Per-pool series, read from the pools at each scrape (PgBouncer exporter's figures).
#[derive(Debug)]
struct PoolCollector {
    pools: Arc<crate::pool::Pools>,
}

impl std::fmt::Debug for crate::pool::Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pools")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.pools.snapshot();
        let key = |row: &crate::pool::PoolRow| -> Labels {
            vec![
                ("database", row.key.database.clone()),
                ("user", row.key.user.clone()),
                ("target", row.key.target.to_string()),
            ]
        };
        type Gauged = fn(&crate::pool::PoolRow) -> f64;
        let gauges: [(&str, &str, Gauged); 7] = [
            (
                "pool_clients_active",
                "Pooled clients holding a server connection.",
                |r| r.cl_active as f64,
            ),
            (
                "pool_clients_waiting",
                "Pooled clients waiting for a server connection.",
                |r| r.cl_waiting as f64,
            ),
            (
                "pool_clients_idle",
                "Pooled clients logged in, neither active nor waiting.",
                |r| r.cl_idle as f64,
            ),
            (
                "pool_servers_active",
                "Server connections of the pool in use (or being opened).",
                |r| r.sv_active as f64,
            ),
            (
                "pool_servers_idle",
                "Server connections idle in the pool.",
                |r| r.sv_idle as f64,
            ),
            (
                "pool_max_wait_seconds",
                "How long the pool's oldest waiting client has waited.",
                |r| r.maxwait_us as f64 / 1e6,
            ),
            (
                "pool_size",
                "The pool's size (default_pool_size or the alias's pool_size).",
                |r| r.size as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for row in &rows {
                let labels = key(row);
                ConstGauge::new(value(row)).encode(family.encode_family(&labels)?)?;
            }
        }
        type Counted = fn(&crate::pool::PoolStats) -> u64;
        let counters: [(&str, &str, Counted); 6] = [
            (
                "pool_transactions",
                "Transactions the pool served (ReadyForQuery outside a transaction).",
                |s| s.xact_count,
            ),
            (
                "pool_queries",
                "Queries (simple queries and extended-protocol Syncs) the pool served.",
                |s| s.query_count,
            ),
            (
                "pool_received_bytes",
                "Bytes from the pool's clients to its servers.",
                |s| s.bytes_received,
            ),
            (
                "pool_sent_bytes",
                "Bytes from the pool's servers to its clients.",
                |s| s.bytes_sent,
            ),
            (
                "pool_wait_microseconds",
                "Time the pool's clients spent waiting for a server connection, in microseconds.",
                |s| s.wait_time_us,
            ),
            (
                "pool_server_logins",
                "Server connections the pool opened.",
                |s| s.server_logins,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for row in &rows {
                let labels = key(row);
                ConstCounter::new(value(&row.stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
