//! The Patroni-style YAML each member host's agent runs with: the one member template
//! (`pgbaton_config::template`, as `pgbaton local up` writes it), but listening on the host's own address,
//! with pg_hba open to the run's /24, every etcd host, the run's timings and, in sync mode,
//! `synchronous_mode` in `bootstrap.dcs`. Also the YAML of `pgbaton router` on the client
//! host (`--via router`).

use std::net::Ipv4Addr;
use std::path::Path;

use pgbaton_config::template::{MemberYaml, Synchronous};

/// The cluster scope every run uses (etcd keys under `/service/chaos/`).
pub const SCOPE: &str = "chaos";
pub const PG_PORT: u16 = 5432;
pub const API_PORT: u16 = 8008;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// The router's listeners on the client host (`--via router`).
pub const ROUTER_WRITE_PORT: u16 = 5000;
pub const ROUTER_READ_PORT: u16 = 5001;
/// The router's auto (read-your-writes) listener.
pub const ROUTER_AUTO_PORT: u16 = 5005;
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
    let mut member = MemberYaml::loopback(SCOPE, c.name, c.member_dir, PG_PORT, API_PORT, 0);
    member.header = Some(format!("Written by pgbaton-chaos for member {}.", c.name));
    member.host = c.ip.to_string();
    member.etcd_hosts = c
        .etcd
        .iter()
        .map(|e| format!("{e}:{ETCD_CLIENT_PORT}"))
        .collect();
    member.ttl = Some(c.ttl);
    member.loop_wait = Some(c.loop_wait);
    member.retry_timeout = Some(c.retry_timeout);
    if c.synchronous {
        member.synchronous = Synchronous::On;
        member.synchronous_strict = c.strict;
    }
    member.network = c.subnet.to_string();
    member.app_user = false;
    let (user, password) = SUPERUSER;
    member.superuser = (user.to_string(), password.to_string());
    member.socket_dir = Some(c.member_dir.join("sock"));
    // A slot keeps at most this much WAL: the `replica-away` fault writes more, so the
    // replica comes back to WAL that is gone and must heal itself.
    member.dcs_parameter("max_slot_wal_keep_size", "128MB");
    member.render()
}

/// `pgbaton router --config` for the client host `client`: following the run's scope in
/// etcd, write listener on `client`:5000, read listener on `client`:5001, everything else
/// at the router's defaults.
/// The client host's router: a transaction pool (SCRAM from `userlist`, the superuser's
/// plain password, with which the router logs in to the members) with the write, read and
/// auto listeners on the client's address.
pub fn router_yaml(client: Ipv4Addr, etcd: &[Ipv4Addr], userlist: &Path) -> String {
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
         read:\n  listen: {client}:{ROUTER_READ_PORT}\n\
         auto:\n  listen: {client}:{ROUTER_AUTO_PORT}\n\
         auth:\n  auth_type: scram-sha-256\n  auth_file: {}\n\
         pool:\n  pool_mode: transaction\n  default_pool_size: 10\n",
        userlist.display()
    )
}

/// The router's userlist.txt: the superuser with its plain password.
pub fn router_userlist() -> String {
    let (user, password) = SUPERUSER;
    format!("\"{user}\" \"{password}\"\n")
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
        let userlist =
            std::env::temp_dir().join(format!("pgbaton-chaos-userlist-{}", std::process::id()));
        std::fs::write(&userlist, router_userlist()).unwrap();
        let yaml = router_yaml(
            Ipv4Addr::new(10, 231, 9, 2),
            &[Ipv4Addr::new(10, 231, 9, 21)],
            &userlist,
        );
        let c = pgbaton_router::RouterConfig::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.auto_listen.as_deref(), Some("10.231.9.2:5005"));
        assert!(c.auth.is_some(), "the chaos router pools");
        let _ = std::fs::remove_file(&userlist);
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
