//! A `pgbaton router` serving a test cluster, in the test's process.

use std::net::SocketAddr;

use std::time::Duration;

use pgbaton_router::auth::{AuthConfig, AuthType};
use pgbaton_router::pool::{PoolMode, PoolSettings};
use pgbaton_router::{Forwarding, Router, RouterConfig};

use super::cluster::Cluster;

/// A router bound and serving, stopped on drop.
pub struct RunningRouter {
    pub write: SocketAddr,
    /// The auto (read-your-writes) listener, when configured.
    pub auto: Option<SocketAddr>,
    /// The status API, when configured.
    pub api: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningRouter {
    pub async fn start(cfg: RouterConfig) -> RunningRouter {
        let router = Router::bind(cfg).await.expect("bind router");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let write = router.write_addr();
        let (auto, api) = (router.auto_addr(), router.api_addr());
        tokio::spawn(async move {
            let _ = router
                .serve(async move {
                    let _ = rx.await;
                })
                .await;
        });
        RunningRouter {
            write,
            auto,
            api,
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
        .connect_timeout(Duration::from_secs(30));
    config
}

/// A superuser session on `member`.
pub async fn superuser(cluster: &Cluster, member: &str) -> tokio_postgres::Client {
    let (admin, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.pg_port(member))
        .user("postgres")
        .password("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser connection");
    tokio::spawn(connection);
    admin
}

/// Pooling in `mode` with SCRAM, the router named `name`, relayed by the router itself.
pub async fn pool_config(
    cluster: &Cluster,
    leader: &str,
    dir: &std::path::Path,
    name: &str,
    mode: PoolMode,
) -> RouterConfig {
    let admin = superuser(cluster, leader).await;
    let secret: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .expect("app's secret")
        .get(0);
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, format!("\"app\" \"{secret}\"\n")).expect("userlist");
    let mut cfg = router_config(cluster, name);
    cfg.auth = Some(AuthConfig {
        auth_type: AuthType::Hba,
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        auth_file: Some(userlist),
        ..AuthConfig::default()
    });
    cfg.pool = PoolSettings {
        pool_mode: mode,
        default_pool_size: 8,
        query_wait_timeout: Duration::from_secs(30),
        ..PoolSettings::default()
    };
    cfg.forwarding = Forwarding::Userspace;
    cfg
}
