//! Read-only access to a cluster in etcd: the one-range-request `load` shared by `EtcdDcs`,
//! and `load_cluster` / `list_scopes` for `pgbaton ctl` (no lease, no member).

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::GetOptions;

use super::access::EtcdAccess;
use super::conn::{Conn, Failure, Target};
use crate::error::DcsError;
use crate::model::{ClusterPath, ClusterState};
use crate::parse::{parse_cluster, RawEntry};

/// One consistent read of the whole cluster prefix.
pub(crate) async fn load_with(conn: &Conn, path: &ClusterPath) -> Result<ClusterState, DcsError> {
    let prefix = path.prefix();
    let response = conn
        .call("load", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await
        .map_err(Failure::into_dcs)?;
    let revision = response.header().map_or(0, |h| h.revision());
    let entries = response.kvs().iter().filter_map(|kv| match kv.key_str() {
        Ok(key) => Some(RawEntry {
            key,
            value: kv.value(),
            lease: kv.lease(),
            mod_revision: kv.mod_revision(),
        }),
        Err(_) => {
            tracing::warn!(key = ?kv.key(), "ignoring a key that is not UTF-8");
            None
        }
    });
    parse_cluster(&prefix, entries, revision)
}

/// Read-only access for `pgbaton ctl` (no lease, no member).
pub async fn load_cluster(
    endpoints: &[String],
    path: &ClusterPath,
    timeout: Duration,
) -> Result<ClusterState, DcsError> {
    load_cluster_with(endpoints, &EtcdAccess::default(), path, timeout).await
}

/// [`load_cluster`] over TLS and/or with etcd credentials.
pub async fn load_cluster_with(
    endpoints: &[String],
    access: &EtcdAccess,
    path: &ClusterPath,
    timeout: Duration,
) -> Result<ClusterState, DcsError> {
    let conn = Conn::new(Target::with_access(
        endpoints.to_vec(),
        timeout,
        access.load()?,
    ));
    load_with(&conn, path).await
}

/// The scopes (cluster names) that have keys under `namespace`, for `ctl list` without
/// `--scope`.
pub async fn list_scopes(
    endpoints: &[String],
    namespace: &str,
    timeout: Duration,
) -> Result<Vec<String>, DcsError> {
    let prefix = ClusterPath::new(namespace, "").namespace;
    let conn = Conn::new(Target::new(endpoints.to_vec(), timeout));
    let response = conn
        .call("list scopes", |mut c| {
            let prefix = prefix.clone();
            async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            }
        })
        .await
        .map_err(Failure::into_dcs)?;
    let scopes: BTreeSet<String> = response
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok())
        .filter_map(|key| key.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once('/').map(|(scope, _)| scope.to_string()))
        .filter(|scope| !scope.is_empty())
        .collect();
    Ok(scopes.into_iter().collect())
}

/// The peer URLs of every member of the etcd cluster answering at `endpoints`: lets a
/// freshly started etcd be told apart from another one that took its client port first.
pub async fn member_peer_urls(
    endpoints: &[String],
    timeout: Duration,
) -> Result<Vec<String>, DcsError> {
    let conn = Conn::new(Target::new(endpoints.to_vec(), timeout));
    let response = conn
        .call("member list", |mut c| async move { c.member_list().await })
        .await
        .map_err(Failure::into_dcs)?;
    Ok(response
        .members()
        .iter()
        .flat_map(|m| m.peer_urls().iter().cloned())
        .collect())
}
