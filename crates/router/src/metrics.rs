//! The router's Prometheus metrics: connections (total and active) per backend and role,
//! bytes forwarded, routing decisions, waits for a leader during a switchover and how long
//! they took, refusals, sessions closed because their server stopped being leader, and
//! clients dropped during the startup. Updated at connection start and end only: the data
//! path touches no metric.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    /// {target, decision: leader|replica|leader_fallback|refused}
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
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("pgbaton_router");
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
        Metrics {
            registry,
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
