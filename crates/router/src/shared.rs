//! What every session task shares: the configuration, receivers of the cluster view and of
//! the leader, the stop signal, the metrics, the cancel-key table and the active-connection
//! counts. Locks here are taken when a connection starts or ends, never while forwarding.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::RouterConfig;
use crate::metrics::{labels, Metrics};
use crate::protocol::{CancelKey, Target};
use crate::topology::{Backend, Topology};

pub(crate) struct Shared {
    pub cfg: RouterConfig,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub leader: watch::Receiver<Option<Backend>>,
    /// True while a switchover is drained (handover.rs): new write work waits.
    pub hold: watch::Receiver<bool>,
    /// Turns true when the router shuts down: sessions end.
    pub stop: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// BackendKeyData of live sessions → the server that owns the backend.
    pub cancel_keys: Mutex<HashMap<CancelKey, Backend>>,
    /// Active sessions per (member, role), for `/status` and least-connections balancing.
    pub active: Mutex<BTreeMap<(String, &'static str), usize>>,
    /// Round-robin position over the readable replicas.
    pub next_replica: AtomicUsize,
    /// New connections waiting for a leader now (a handover in progress), for `/status`.
    pub waiting: AtomicUsize,
    /// `tls: terminate`: the router's certificate, loaded once.
    pub tls: Option<TlsAcceptor>,
    /// Kernel forwarding (`forwarding: auto|kernel`), when the kernel allows it.
    pub offload: Option<Arc<crate::offload::Offload>>,
    /// Client authentication and pools (`auth:` configured).
    pub pooling: Option<Arc<crate::pooling::Pooling>>,
    /// The outcome of the last reload of router.yml (SIGHUP), for `/status` (null: none yet).
    pub reload: Mutex<serde_json::Value>,
    /// The bound listener addresses, for `/status`.
    pub write_addr: SocketAddr,
    pub read_addr: SocketAddr,
    pub auto_addr: Option<SocketAddr>,
}

impl Shared {
    pub(crate) fn active_reads(&self, member: &str) -> usize {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .get(&(member.to_string(), Target::Read.label()))
            .copied()
            .unwrap_or(0)
    }
}

/// Registers one forwarded session (metrics, counts, cancel key) and undoes it on drop.
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    member: String,
    role: &'static str,
    gauge: Gauge,
    key: Option<CancelKey>,
}

impl SessionGuard {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        backend: &Backend,
        role: Target,
        key: Option<CancelKey>,
    ) -> Self {
        let role = match role {
            Target::Write => Target::Write.label(),
            Target::Read | Target::Any => Target::Read.label(),
        };
        let series = labels(&[("role", role), ("backend", &backend.name)]);
        shared.metrics.connections.get_or_create(&series).inc();
        let gauge = shared.metrics.active.get_or_create_owned(&series);
        gauge.inc();
        *shared
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((backend.name.clone(), role))
            .or_default() += 1;
        if let Some(key) = key {
            shared
                .cancel_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, backend.clone());
        }
        SessionGuard {
            shared: shared.clone(),
            member: backend.name.clone(),
            role,
            gauge,
            key,
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        let mut active = self.shared.active.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (std::mem::take(&mut self.member), self.role);
        if let Some(count) = active.get_mut(&entry) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                active.remove(&entry);
            }
        }
        drop(active);
        if let Some(key) = self.key {
            self.shared
                .cancel_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}
