//! The Patroni-style YAML each member host's agent runs with: the shape `pgbaton local up`
//! writes (crates/pgbaton/src/local/template.rs), but listening on the host's own address,
//! with pg_hba open to the run's /24, every etcd host, the run's timings and, in sync mode,
//! `synchronous_mode` in `bootstrap.dcs`. Also the YAML of `pgbaton router` on the client
//! host (`--via router`).

use std::net::Ipv4Addr;
use std::path::Path;

/// The cluster scope every run uses (etcd keys under `/service/chaos/`).
pub const SCOPE: &str = "chaos";
pub const PG_PORT: u16 = 5432;
pub const API_PORT: u16 = 8008;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// The router's listeners on the client host (`--via router`).
pub const ROUTER_WRITE_PORT: u16 = 5000;
pub const ROUTER_READ_PORT: u16 = 5001;
/// `maximum_lag_on_failover` in `bootstrap.dcs` (Patroni's default, 1 MiB): the async-loss
/// report compares the WAL lost at each failover with it.
pub const MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// The superuser the clients and checks connect as.
pub const SUPERUSER: (&str, &str) = ("postgres", "postgres");

/// What varies between members and runs.
pub struct MemberConfig<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub subnet: &'a str,
    pub etcd: &'a [Ipv4Addr],
    pub member_dir: &'a Path,
    pub ttl: f64,
    pub loop_wait: f64,
    pub retry_timeout: f64,
    pub synchronous: bool,
    pub strict: bool,
}

pub fn member_yaml(c: &MemberConfig<'_>) -> String {
    let MemberConfig {
        name, ip, subnet, ..
    } = c;
    let etcd_hosts: String = c
        .etcd
        .iter()
        .map(|e| format!("    - {e}:{ETCD_CLIENT_PORT}\n"))
        .collect();
    let sync = if c.synchronous {
        format!(
            "    synchronous_mode: true\n    synchronous_mode_strict: {}\n",
            c.strict
        )
    } else {
        String::new()
    };
    let (user, password) = SUPERUSER;
    format!(
        r#"# Written by pgbaton-chaos for member {name}.
scope: {SCOPE}
namespace: /service/
name: {name}

restapi:
  listen: {ip}:{API_PORT}
  connect_address: {ip}:{API_PORT}

etcd3:
  hosts:
{etcd_hosts}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: {MAXIMUM_LAG_ON_FAILOVER}
{sync}    postgresql:
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
    - host replication replicator {subnet} scram-sha-256
    - host all all {subnet} scram-sha-256

postgresql:
  listen: {ip}:{PG_PORT}
  connect_address: {ip}:{PG_PORT}
  data_dir: {data_dir}
  bin_dir: /usr/lib/postgresql/15/bin
  # Each member on this host has its own password file (postgresql.pgpass).
  pgpass: {member_dir}/pgpass
  authentication:
    superuser:
      username: {user}
      password: {password}
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
        ttl = c.ttl,
        loop_wait = c.loop_wait,
        retry_timeout = c.retry_timeout,
        data_dir = c.member_dir.join("data").display(),
        socket_dir = c.member_dir.join("sock").display(),
        member_dir = c.member_dir.display(),
    )
}

/// `pgbaton router --config` for the client host `client`: following the run's scope in
/// etcd, write listener on `client`:5000, read listener on `client`:5001, everything else
/// at the router's defaults.
pub fn router_yaml(client: Ipv4Addr, etcd: &[Ipv4Addr]) -> String {
    let etcd_hosts: String = etcd
        .iter()
        .map(|e| format!("    - {e}:{ETCD_CLIENT_PORT}\n"))
        .collect();
    format!(
        "# Written by pgbaton-chaos for the client host.\n\
         scope: {SCOPE}\n\
         namespace: /service/\n\
         etcd3:\n  hosts:\n{etcd_hosts}\
         write:\n  listen: {client}:{ROUTER_WRITE_PORT}\n\
         read:\n  listen: {client}:{ROUTER_READ_PORT}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbaton_config::SyncMode;

    fn yaml(synchronous: bool, strict: bool) -> String {
        member_yaml(&MemberConfig {
            name: "n2",
            ip: Ipv4Addr::new(10, 231, 9, 12),
            subnet: "10.231.9.0/24",
            etcd: &[Ipv4Addr::new(10, 231, 9, 21), Ipv4Addr::new(10, 231, 9, 22)],
            member_dir: Path::new("/tmp/pgbaton-chaos-1/n2"),
            ttl: 4.0,
            loop_wait: 1.0,
            retry_timeout: 1.5,
            synchronous,
            strict,
        })
    }

    #[test]
    fn pgbaton_accepts_the_config_and_reads_addresses_and_timings() {
        let loaded = pgbaton_config::parse_str(&yaml(false, false), "<chaos>").unwrap();
        let c = loaded.value;
        assert_eq!(c.name, "n2");
        assert_eq!(c.scope, SCOPE);
        assert_eq!(c.restapi.listen, "10.231.9.12:8008");
        assert_eq!(c.dcs.hosts, ["10.231.9.21:2379", "10.231.9.22:2379"]);
        assert_eq!(c.bootstrap.dcs.ttl, 4.0);
        assert_eq!(c.bootstrap.dcs.synchronous_mode, SyncMode::Off);
        assert_eq!(
            c.bootstrap.dcs.maximum_lag_on_failover,
            MAXIMUM_LAG_ON_FAILOVER
        );
    }

    #[test]
    fn the_router_accepts_its_config_and_follows_the_run() {
        let yaml = router_yaml(
            Ipv4Addr::new(10, 231, 9, 2),
            &[Ipv4Addr::new(10, 231, 9, 21)],
        );
        let c = pgbaton_router::RouterConfig::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.scope, SCOPE);
        assert_eq!(c.namespace, "/service/");
        assert_eq!(c.etcd_hosts, ["10.231.9.21:2379"]);
        assert_eq!(c.write_listen, "10.231.9.2:5000");
        assert_eq!(c.read_listen, "10.231.9.2:5001");
    }

    #[test]
    fn sync_mode_and_strict_land_in_bootstrap_dcs() {
        let c = pgbaton_config::parse_str(&yaml(true, true), "<chaos>")
            .unwrap()
            .value;
        assert_ne!(c.bootstrap.dcs.synchronous_mode, SyncMode::Off);
        assert!(c.bootstrap.dcs.synchronous_mode_strict);
        let c = pgbaton_config::parse_str(&yaml(true, false), "<chaos>")
            .unwrap()
            .value;
        assert!(!c.bootstrap.dcs.synchronous_mode_strict);
    }
}
