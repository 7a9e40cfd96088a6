//! The Patroni-style configuration `local up` writes for each member. It is the same format
//! `pgbaton agent --config` reads, so it doubles as an example.

use std::path::Path;

use super::{Ports, UpArgs};

pub fn member_config(args: &UpArgs, dir: &Path, name: &str, k: u16, ports: &Ports) -> String {
    let pg = ports.postgres(k);
    let api = ports.api(k);
    let etcd = ports.etcd_client;
    let member_dir = dir.join(name);
    let data_dir = member_dir.join("data");
    let timing = |key: &str, value: Option<f64>| match value {
        Some(v) => format!("    {key}: {v}\n"),
        None => String::new(),
    };
    let scope = &args.scope;
    let mut dcs_timing = String::new();
    dcs_timing.push_str(&timing("ttl", args.ttl));
    dcs_timing.push_str(&timing("loop_wait", args.loop_wait));
    dcs_timing.push_str(&timing("retry_timeout", args.retry_timeout));
    match args.synchronous.as_str() {
        "on" => dcs_timing.push_str("    synchronous_mode: true\n"),
        "quorum" => dcs_timing.push_str("    synchronous_mode: quorum\n"),
        _ => {}
    }
    if args.strict {
        dcs_timing.push_str("    synchronous_mode_strict: true\n");
    }
    format!(
        r#"# Written by `pgbaton local up`: a Patroni-style configuration for member {name}.
scope: {scope}
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
{dcs_timing}    maximum_lag_on_failover: 1048576
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

tags:
  nofailover: false
  noloadbalance: false

pgbaton:
  log_dir: {member_dir}
"#,
        data_dir = data_dir.display(),
        member_dir = member_dir.display(),
    )
}
