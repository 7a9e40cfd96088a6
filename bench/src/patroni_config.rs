//! The configuration files of the Patroni side of the comparison: one Patroni YAML per
//! member (the seed guide's section 7.3, on loopback) and HAProxy's (section 7.5, with the
//! seed's health checks or the tuned ones). Also which ports everything uses.

use std::path::Path;

use pgbaton_config::template::MemberYaml;

use crate::profile::Timing;

/// The ports of one Patroni cluster, all derived from a base port.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub fn etcd_client(self) -> u16 {
        self.base
    }
    pub fn etcd_peer(self) -> u16 {
        self.base + 1
    }
    /// Member k's PostgreSQL (k from 1).
    pub fn postgres(self, k: u16) -> u16 {
        self.base + 10 + k
    }
    /// Member k's REST API.
    pub fn rest(self, k: u16) -> u16 {
        self.base + 20 + k
    }
    /// HAProxy's write frontend (the leader only).
    pub fn haproxy_write(self) -> u16 {
        self.base + 30
    }
    /// HAProxy's read frontend (the replicas).
    pub fn haproxy_read(self) -> u16 {
        self.base + 31
    }
}

/// HAProxy's health-check timing for the write and read backends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checks {
    pub inter_s: u32,
    pub fall: u32,
    pub rise: u32,
}

/// The seed guide's checks: every 3 s, down after 3 failures, up after 2 successes.
pub const SEED_CHECKS: Checks = Checks {
    inter_s: 3,
    fall: 3,
    rise: 2,
};
/// The tuned checks of the fast run: every 1 s, down after 2, up after 1.
pub const TUNED_CHECKS: Checks = Checks {
    inter_s: 1,
    fall: 2,
    rise: 1,
};

/// Patroni's YAML for member `k` (node<k>) whose files live in `node_dir`: the one member
/// template (`pgbaton_config::template`) with the seed's settings on loopback; memory settings (shared_buffers 4GB, ...) are left at
/// PostgreSQL's defaults, as in the pgbaton clusters, because this machine is small.
/// Patroni wants whole seconds, so the timing is rounded.
pub fn patroni_yaml(scope: &str, k: u16, ports: Ports, node_dir: &Path, timing: Timing) -> String {
    let mut member = MemberYaml::loopback(
        scope,
        &format!("node{k}"),
        node_dir,
        ports.postgres(k),
        ports.rest(k),
        ports.etcd_client(),
    );
    member.ttl = Some(timing.ttl.round());
    member.loop_wait = Some(timing.loop_wait.round());
    member.retry_timeout = Some(timing.retry_timeout.round());
    member.dcs_parameters = [
        ("wal_level", "replica"),
        ("hot_standby", "\"on\""),
        ("max_connections", "200"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_keep_size", "1GB"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    member.hba_first = vec!["local all all trust".into()];
    member.app_user = false;
    member.replication = ("replicator".into(), "repl_password".into());
    member.parameters = Vec::new();
    member.socket_dir = Some(node_dir.to_path_buf());
    member.pgbaton_section = false;
    member.extra_tags = vec![
        ("clonefrom".into(), "false".into()),
        ("nosync".into(), "false".into()),
    ];
    member.render()
}

/// HAProxy's configuration: the seed's write (GET /primary) and read (GET /replica)
/// backends over the members, with the given check timing, bound to loopback.
pub fn haproxy_cfg(ports: Ports, members: u16, checks: Checks) -> String {
    let servers = |out: &mut String| {
        for k in 1..=members {
            out.push_str(&format!(
                "    server node{k} 127.0.0.1:{} check port {}\n",
                ports.postgres(k),
                ports.rest(k)
            ));
        }
    };
    let default_server = format!(
        "    default-server inter {}s fall {} rise {} on-marked-down shutdown-sessions\n",
        checks.inter_s, checks.fall, checks.rise
    );
    let mut out = String::from(
        "global\n    maxconn 1000\n\ndefaults\n    mode tcp\n    timeout connect 10s\n    \
         timeout client 30m\n    timeout server 30m\n\n",
    );
    out.push_str(&format!(
        "frontend pg_write\n    bind 127.0.0.1:{}\n    default_backend pg_write_backend\n\n",
        ports.haproxy_write()
    ));
    out.push_str("backend pg_write_backend\n    option httpchk GET /primary\n    http-check expect status 200\n");
    out.push_str(&default_server);
    servers(&mut out);
    out.push_str(&format!(
        "\nfrontend pg_read\n    bind 127.0.0.1:{}\n    default_backend pg_read_backend\n\n",
        ports.haproxy_read()
    ));
    out.push_str("backend pg_read_backend\n    balance roundrobin\n    option httpchk GET /replica\n    http-check expect status 200\n");
    out.push_str(&default_server);
    servers(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: Timing = Timing {
        ttl: 30.0,
        loop_wait: 10.0,
        retry_timeout: 10.0,
    };

    #[test]
    fn patroni_yaml_has_the_seed_timing_and_loopback_ports() {
        let yaml = patroni_yaml(
            "bench",
            2,
            Ports { base: 18000 },
            Path::new("/tmp/x/node2"),
            SEED,
        );
        for needle in [
            "name: node2",
            "listen: 127.0.0.1:18022",
            "- 127.0.0.1:18000",
            "ttl: 30\n",
            "loop_wait: 10\n",
            "retry_timeout: 10\n",
            "listen: 127.0.0.1:18012",
            "data_dir: /tmp/x/node2/data",
            "use_pg_rewind: true",
        ] {
            assert!(yaml.contains(needle), "{needle} missing in\n{yaml}");
        }
    }

    #[test]
    fn haproxy_cfg_checks_primary_with_the_given_timing() {
        let cfg = haproxy_cfg(Ports { base: 18000 }, 3, TUNED_CHECKS);
        assert!(cfg.contains("bind 127.0.0.1:18030"), "{cfg}");
        assert!(cfg.contains("option httpchk GET /primary"), "{cfg}");
        assert!(cfg.contains("inter 1s fall 2 rise 1 on-marked-down shutdown-sessions"));
        assert!(cfg.contains("server node3 127.0.0.1:18013 check port 18023"));
        assert_eq!(cfg.matches("server node1 ").count(), 2, "write and read");
    }
}
