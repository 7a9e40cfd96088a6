//! The Patroni-style YAML a test member runs with: the shape `pgbaton local up` writes
//! (see src/local/template.rs), with the timings of the test and the socket in the member dir.

use std::path::Path;

/// HA timings, in seconds (pgbaton's defaults: 4 / 1 / 1.5).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: f64,
    pub loop_wait: f64,
    pub retry_timeout: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttl: 4.0,
            loop_wait: 1.0,
            retry_timeout: 1.5,
        }
    }
}

pub struct MemberPorts {
    pub etcd: u16,
    pub postgres: u16,
    pub api: u16,
}

pub fn member_yaml(
    scope: &str,
    name: &str,
    member_dir: &Path,
    ports: &MemberPorts,
    t: Timing,
) -> String {
    let data_dir = member_dir.join("data");
    let socket_dir = member_dir.join("sock");
    let MemberPorts {
        etcd,
        postgres: pg,
        api,
    } = ports;
    format!(
        r#"scope: {scope}
namespace: /service/
name: {name}

restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}

etcd3:
  hosts:
    - 127.0.0.1:{etcd}

bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_connections: 100
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - data-checksums
  pg_hba:
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
  users:
    app:
      password: app
      options:
        - createdb

postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data_dir}
  bin_dir: /usr/lib/postgresql/15/bin
  # Each member on this host has its own password file (postgresql.pgpass).
  pgpass: {member_dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    shared_buffers: 32MB
    unix_socket_directories: {socket_dir}

tags:
  nofailover: false
  noloadbalance: false

pgbaton:
  log_dir: {member_dir}
"#,
        ttl = t.ttl,
        loop_wait = t.loop_wait,
        retry_timeout = t.retry_timeout,
        data_dir = data_dir.display(),
        socket_dir = socket_dir.display(),
        member_dir = member_dir.display(),
    )
}
