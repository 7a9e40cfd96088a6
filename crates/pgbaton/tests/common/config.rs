//! The Patroni-style YAML a test member runs with: the one member template
//! (`pgbaton_config::template`, as `pgbaton local up` writes it), with the timings of the
//! test and the socket in the member dir.

use std::path::Path;

use pgbaton_config::template::MemberYaml;

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
    let mut member = MemberYaml::loopback(
        scope,
        name,
        member_dir,
        ports.postgres,
        ports.api,
        ports.etcd,
    );
    member.ttl = Some(t.ttl);
    member.loop_wait = Some(t.loop_wait);
    member.retry_timeout = Some(t.retry_timeout);
    member.socket_dir = Some(member_dir.join("sock"));
    member.render()
}
