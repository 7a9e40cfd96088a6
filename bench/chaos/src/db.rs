//! Talking to the cluster from the client host: PostgreSQL connections to a member's address
//! as the superuser, every call bounded; and the leader key read straight from etcd.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, Context};
use etcd_client::{Client as Etcd, ConnectOptions};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::config::{PG_PORT, SCOPE, SUPERUSER};

/// A connection to `ip`:5432, within `timeout`.
pub async fn connect(ip: Ipv4Addr, timeout: Duration) -> anyhow::Result<Client> {
    connect_to(SocketAddrV4::new(ip, PG_PORT), timeout).await
}

/// A connection to `addr` (a member, or the router's write address), within `timeout`.
pub async fn connect_to(addr: SocketAddrV4, timeout: Duration) -> anyhow::Result<Client> {
    let (user, password) = SUPERUSER;
    let (ip, port) = (addr.ip(), addr.port());
    let secs = timeout.as_secs().max(1);
    let conninfo = format!(
        "host={ip} port={port} user={user} password={password} dbname=postgres \
         connect_timeout={secs} application_name=chaos"
    );
    let (client, connection) =
        tokio::time::timeout(timeout, tokio_postgres::connect(&conninfo, NoTls))
            .await
            .map_err(|_| anyhow!("no connection to {addr} within {timeout:?}"))?
            .with_context(|| format!("connecting to {addr}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Run `sql` (simple protocol) on a fresh connection; every row's columns as text.
pub async fn rows(
    ip: Ipv4Addr,
    sql: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let work = async {
        let client = connect(ip, timeout).await?;
        let msgs = client
            .simple_query(sql)
            .await
            .with_context(|| format!("{sql:?} on {ip}"))?;
        let mut out = Vec::new();
        for m in msgs {
            if let SimpleQueryMessage::Row(row) = m {
                out.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
        }
        anyhow::Ok(out)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("{sql:?} on {ip} took over {timeout:?}"))?
}

/// The member the leader key names, asking each etcd endpoint in turn (a minority or dead
/// member does not answer). `Ok(None)`: etcd answered, no leader key.
pub async fn leader(endpoints: &[String]) -> anyhow::Result<Option<String>> {
    let key = format!("/service/{SCOPE}/leader");
    let mut last = anyhow!("no etcd endpoint");
    for ep in endpoints {
        let ask = async {
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(700))
                .with_timeout(Duration::from_millis(1000));
            let mut c = Etcd::connect([ep.as_str()], Some(opts)).await?;
            let r = c.get(key.as_str(), None).await?;
            anyhow::Ok(
                r.kvs()
                    .first()
                    .and_then(|kv| kv.value_str().ok().map(str::to_string)),
            )
        };
        match tokio::time::timeout(Duration::from_millis(1500), ask).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last = e.context(format!("etcd {ep}")),
            Err(_) => last = anyhow!("etcd {ep} did not answer within 1.5 s"),
        }
    }
    Err(last)
}

/// True when every endpoint answers a read (with three members: a quorum exists).
pub async fn etcd_ready(endpoints: &[String]) -> bool {
    for ep in endpoints {
        if leader(std::slice::from_ref(ep)).await.is_err() {
            return false;
        }
    }
    true
}
