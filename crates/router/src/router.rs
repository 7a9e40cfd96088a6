//! The running router: its listeners (bound first, so callers learn the real ports before
//! any traffic), the etcd follower, the REST lag poller (`lag_source: rest`), one task per
//! client connection, the API, and the shutdown that ends them all.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use pgbaton_dcs::ClusterPath;
use tokio::net::TcpListener;
use tokio::sync::watch;

use tokio_rustls::TlsAcceptor;

use crate::config::{Forwarding, LagSource, RouterConfig};
use crate::error::RouterError;
use crate::lag::RestLag;
use crate::metrics::Metrics;
use crate::offload::Offload;
use crate::protocol::Target;
use crate::shared::Shared;
use crate::topology::LagBounds;
use crate::watcher::{follow, Follow, Publisher};
use crate::{api, poller, session};

/// A router whose listeners are bound; `serve` runs it.
pub struct Router {
    cfg: RouterConfig,
    write: TcpListener,
    read: TcpListener,
    /// `auto.listen`: read-your-writes routing (pooling only).
    auto: Option<TcpListener>,
    api: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    offload: Option<Arc<Offload>>,
    pooling: Option<Arc<crate::pooling::Pooling>>,
    /// router.yml, read again on SIGHUP (`reload_on_sighup`).
    config_path: Option<PathBuf>,
}

async fn bind(what: &'static str, address: &str) -> Result<TcpListener, RouterError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RouterError::Bind {
            what,
            address: address.to_string(),
            source,
        })
}

fn local(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Router {
    /// Check the configuration (loading the TLS certificate for `tls: terminate`) and bind
    /// the listeners (`host:0` picks a free port; see `write_addr` etc.).
    pub async fn bind(cfg: RouterConfig) -> Result<Router, RouterError> {
        cfg.validate()?;
        let tls = crate::tls::acceptor(&cfg)?;
        let pooling = match &cfg.auth {
            Some(auth) => Some(Arc::new(crate::pooling::Pooling::new(
                crate::auth::Auth::load(auth)?,
                crate::pool::Pools::new(cfg.pool.clone()),
            ))),
            None => None,
        };
        let write = bind("write listener", &cfg.write_listen).await?;
        let read = bind("read listener", &cfg.read_listen).await?;
        let auto = match &cfg.auto_listen {
            Some(address) => Some(bind("auto listener", address).await?),
            None => None,
        };
        let api = match &cfg.api_listen {
            Some(address) => Some(bind("API", address).await?),
            None => None,
        };
        let offload = match cfg.forwarding {
            Forwarding::Userspace => None,
            Forwarding::Kernel => {
                Some(Offload::open().map_err(|source| RouterError::Forwarding { source })?)
            }
            Forwarding::Auto => match Offload::open() {
                Ok(offload) => Some(offload),
                Err(e) => {
                    tracing::info!(error = %e, "kernel forwarding not available; the router relays the bytes itself");
                    None
                }
            },
        };
        Ok(Router {
            cfg,
            write,
            read,
            auto,
            api,
            tls,
            offload,
            pooling,
            config_path: None,
        })
    }

    /// Read `path` again on SIGHUP, as PgBouncer's RELOAD: the `auth:` and `pool:` keys
    /// apply to new work (logins, server connections, pool sizes) without dropping a
    /// client; an invalid file is refused (logged, `/status` `reload`, metric) and the
    /// running configuration kept. Other keys need a restart (said so in the log).
    pub fn reload_on_sighup(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    pub fn write_addr(&self) -> SocketAddr {
        local(&self.write)
    }

    pub fn read_addr(&self) -> SocketAddr {
        local(&self.read)
    }

    /// The auto (read-your-writes) listener's address, when configured.
    pub fn auto_addr(&self) -> Option<SocketAddr> {
        self.auto.as_ref().map(local)
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(local)
    }

    /// Route connections until `shutdown` resolves; then every session is closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RouterError> {
        let Router {
            cfg,
            write,
            read,
            auto,
            api,
            tls,
            offload,
            pooling,
            config_path,
        } = self;
        tracing::info!(
            scope = %cfg.scope,
            write = %local(&write),
            read = %local(&read),
            auto = ?auto.as_ref().map(local),
            api = ?api.as_ref().map(local),
            tls = cfg.tls.label(),
            lag_source = cfg.lag_source.label(),
            forwarding = if offload.is_some() { "kernel" } else { "userspace" },
            pooling = cfg.auth.as_ref().map(|a| a.auth_type.label()).unwrap_or("off"),
            "router listening"
        );
        let (stop_tx, stop) = watch::channel(false);
        let publisher = Arc::new(Publisher::new());
        let (hold_tx, hold) = watch::channel(false);
        let metrics = Arc::new(Metrics::new(pooling.as_ref().map(|p| p.pools.clone())));
        let shared = Arc::new(Shared {
            topology: publisher.topology.subscribe(),
            leader: publisher.leader.subscribe(),
            hold,
            stop: stop.clone(),
            metrics: metrics.clone(),
            cancel_keys: Mutex::new(Default::default()),
            active: Mutex::new(Default::default()),
            next_replica: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            tls,
            offload: offload.clone(),
            pooling: pooling.clone(),
            reload: Mutex::new(serde_json::Value::Null),
            write_addr: local(&write),
            read_addr: local(&read),
            auto_addr: auto.as_ref().map(local),
            cfg: cfg.clone(),
        });
        let (states, states_rx) = watch::channel(Arc::new(Default::default()));
        let (poller, rest) = match cfg.lag_source {
            LagSource::Rest => {
                let (rest_tx, rest_rx) = watch::channel(Arc::new(RestLag::new()));
                let roots = crate::tls::rest_roots(&cfg)?;
                let task = tokio::spawn(
                    poller::poll(
                        states_rx,
                        cfg.rest_poll_interval,
                        roots,
                        rest_tx,
                        metrics.clone(),
                        stop.clone(),
                    )
                    .in_current_span(),
                );
                (Some(task), Some(rest_rx))
            }
            LagSource::Dcs => (None, None),
        };
        let following = Follow {
            hosts: cfg.etcd_hosts.clone(),
            access: cfg.etcd_access.clone(),
            path: ClusterPath::new(&cfg.namespace, &cfg.scope),
            bounds: LagBounds {
                max_lag_bytes: cfg.max_lag_bytes,
                max_replay_delay: cfg.max_replay_delay,
                rest_max_age: cfg.rest_poll_interval * 3,
            },
            publisher,
            states,
            metrics,
        };
        let handover = crate::handover::Handover {
            hosts: cfg.etcd_hosts.clone(),
            access: cfg.etcd_access.clone(),
            path: ClusterPath::new(&cfg.namespace, &cfg.scope),
            name: cfg
                .name
                .clone()
                .unwrap_or_else(|| crate::handover::default_name(shared.write_addr.port())),
            write_listen: shared.write_addr.to_string(),
            states: following.states.subscribe(),
            hold: hold_tx,
            pooling: pooling.clone(),
        };
        let follower = tokio::spawn(follow(following, rest, stop.clone()).in_current_span());
        let handing_over =
            tokio::spawn(crate::handover::run(handover, stop.clone()).in_current_span());
        let writes =
            tokio::spawn(accept(write, Target::Write, false, shared.clone()).in_current_span());
        let reads =
            tokio::spawn(accept(read, Target::Read, false, shared.clone()).in_current_span());
        let autos = auto.map(|auto| {
            tokio::spawn(accept(auto, Target::Write, true, shared.clone()).in_current_span())
        });
        let closes = offload.map(|offload| offload.watch_closes(stop.clone()));
        let sweeper = pooling.map(|pooling| {
            tokio::spawn(sweep(shared.clone(), pooling, stop.clone()).in_current_span())
        });
        let reloader = match config_path {
            Some(path) => Some(spawn_reloader(path, shared.clone(), stop.clone())?),
            None => None,
        };
        let api_task = api.map(|listener| {
            tokio::spawn(
                api::serve(listener, shared, crate::status_page::routes(), stop).in_current_span(),
            )
        });

        shutdown.await;
        tracing::info!("router shutting down");
        let _ = stop_tx.send(true);
        for task in [follower, handing_over, writes, reads]
            .into_iter()
            .chain(autos)
            .chain(poller)
            .chain(closes)
            .chain(sweeper)
            .chain(reloader)
        {
            let _ = task.await;
        }
        if let Some(task) = api_task {
            if let Ok(Err(source)) = task.await {
                return Err(RouterError::Api { source });
            }
        }
        Ok(())
    }
}

/// Accept connections on one listener until the router stops.
async fn accept(listener: TcpListener, role: Target, auto: bool, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    tokio::spawn(
                        session::serve_client(client, peer, role, auto, shared.clone())
                            .in_current_span(),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little, keep serving.
                    tracing::warn!(listener = role.label(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::stop::stopped(&mut stop) => return,
        }
    }
}

/// Close pooled server connections past server_idle_timeout / server_lifetime, every second.
async fn sweep(
    shared: Arc<Shared>,
    pooling: Arc<crate::pooling::Pooling>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                pooling.pools.sweep();
                crate::pooled::fill_to_minimum(&shared, &pooling);
            }
            _ = crate::stop::stopped(&mut stop) => return,
        }
    }
}

/// Listen for SIGHUP and reload `path` each time.
fn spawn_reloader(
    path: PathBuf,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, RouterError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|source| RouterError::Signal { source })?;
    Ok(tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        reload(&shared, &path);
                    }
                    _ = crate::stop::stopped(&mut stop) => return,
                }
            }
        }
        .in_current_span(),
    ))
}

/// Apply what can change of `path` now; record and log the outcome.
pub(crate) fn reload(shared: &Shared, path: &Path) {
    let outcome = try_reload(shared, path);
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let record = match &outcome {
        Ok(restart) => {
            tracing::info!(config = %path.display(), "reloaded router.yml: auth: and pool: apply to new work");
            if !restart.is_empty() {
                tracing::warn!(config = %path.display(), keys = %restart.join(", "), "router.yml changed keys that only a restart applies; the running values stay");
            }
            serde_json::json!({"outcome": "ok", "at": at, "config": path.display().to_string(), "restart_needed": restart})
        }
        Err(error) => {
            tracing::error!(config = %path.display(), %error, "router.yml refused on reload; the running configuration is kept");
            serde_json::json!({"outcome": "refused", "at": at, "config": path.display().to_string(), "error": error})
        }
    };
    let label = if outcome.is_ok() { "ok" } else { "refused" };
    Metrics::count(&shared.metrics.reloads, &[("outcome", label)]);
    *shared.reload.lock().unwrap_or_else(|p| p.into_inner()) = record;
}

/// The new auth: and pool: in place; the top-level keys that changed otherwise.
fn try_reload(shared: &Shared, path: &Path) -> Result<Vec<String>, String> {
    let cfg = RouterConfig::from_yaml_file(path).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    let pooling = match (&shared.pooling, &cfg.auth) {
        (Some(pooling), Some(auth)) => Some((pooling, auth)),
        (None, None) => None,
        _ => {
            return Err(
                "adding or removing the auth: section (pooling on or off) needs a restart of the router"
                    .into(),
            )
        }
    };
    if let Some((pooling, auth)) = pooling {
        let auth = crate::auth::Auth::load(auth).map_err(|e| e.to_string())?;
        pooling.replace_auth(auth);
        pooling.pools.replace_settings(cfg.pool.clone());
    }
    // What else changed: compare the rest, section by section.
    let mut rest = shared.cfg.clone();
    rest.auth = cfg.auth.clone();
    rest.pool = cfg.pool.clone();
    let sections = |text: String| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if !line.starts_with(' ') {
                let key = line.split(':').next().unwrap_or_default().to_string();
                out.push((key, String::new()));
            }
            if let Some(last) = out.last_mut() {
                last.1.push_str(line);
                last.1.push('\n');
            }
        }
        out
    };
    let old = sections(rest.to_yaml());
    let new = sections(cfg.to_yaml());
    let mut changed: Vec<String> = new
        .iter()
        .filter(|entry| !old.contains(entry))
        .map(|(k, _)| k.clone())
        .chain(
            old.iter()
                .filter(|(k, _)| !new.iter().any(|(n, _)| n == k))
                .map(|(k, _)| k.clone()),
        )
        .collect();
    changed.dedup();
    Ok(changed)
}

/// Bind and serve: the whole router in one call (`pgbaton router --config FILE`).
pub async fn run(
    cfg: RouterConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RouterError> {
    Router::bind(cfg).await?.serve(shutdown).await
}
