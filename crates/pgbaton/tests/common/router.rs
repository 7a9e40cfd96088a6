//! A `pgbaton router` serving a test cluster, in the test's process.

use std::net::SocketAddr;

use pgbaton_router::{Router, RouterConfig};

use super::cluster::Cluster;

/// A router bound and serving, stopped on drop.
pub struct RunningRouter {
    pub write: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningRouter {
    pub async fn start(cfg: RouterConfig) -> RunningRouter {
        let router = Router::bind(cfg).await.expect("bind router");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let write = router.write_addr();
        tokio::spawn(async move {
            let _ = router
                .serve(async move {
                    let _ = rx.await;
                })
                .await;
        });
        RunningRouter {
            write,
            stop: Some(tx),
        }
    }
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The cluster's router on ephemeral loopback ports, reading lag from the DCS.
pub fn router_config(cluster: &Cluster, name: &str) -> RouterConfig {
    let mut cfg = RouterConfig::new(vec![cluster.etcd_endpoint()], "/service/", &cluster.scope);
    cfg.write_listen = "127.0.0.1:0".into();
    cfg.read_listen = "127.0.0.1:0".into();
    cfg.lag_source = pgbaton_router::LagSource::Dcs;
    cfg.name = Some(name.to_string());
    cfg
}

/// A connection as `app` (password `app`) to `postgres` through `addr`.
pub fn app(addr: SocketAddr) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .password("app")
        .dbname("postgres")
        .connect_timeout(std::time::Duration::from_secs(30));
    config
}
