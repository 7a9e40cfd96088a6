//! The ports of a local cluster, all derived from `--base-port`.

use std::net::TcpListener;
use std::path::Path;

use anyhow::bail;

/// etcd client N, etcd peer N+1, router write N+2, read N+3, status/metrics N+4, auto
/// (read-your-writes, with pooling) N+5, member k's PostgreSQL N+10+k and REST API N+20+k
/// (k = 1..9).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub base: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub router_write: u16,
    pub router_read: u16,
    pub router_api: u16,
    pub router_auto: u16,
}

impl Ports {
    pub fn new(base: u16) -> anyhow::Result<Self> {
        if !(1024..=65000).contains(&base) {
            bail!(
                "--base-port {base}: choose 1024 to 65000 (the cluster uses the 30 ports above it)"
            );
        }
        Ok(Ports {
            base,
            etcd_client: base,
            etcd_peer: base + 1,
            router_write: base + 2,
            router_read: base + 3,
            router_api: base + 4,
            router_auto: base + 5,
        })
    }

    pub fn postgres(&self, k: u16) -> u16 {
        self.base + 10 + k
    }

    pub fn api(&self, k: u16) -> u16 {
        self.base + 20 + k
    }

    /// Fail early, naming the port, when something listens already.
    pub fn check_free(&self, members: u8) -> anyhow::Result<()> {
        let mut ports = vec![
            ("etcd client", self.etcd_client),
            ("etcd peer", self.etcd_peer),
        ];
        for k in 1..=members as u16 {
            ports.push(("PostgreSQL", self.postgres(k)));
            ports.push(("REST API", self.api(k)));
        }
        for (what, port) in ports {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} ({what}) on 127.0.0.1 is in use: is another local cluster running? pick another --base-port"
                );
            }
        }
        Ok(())
    }

    /// What `local up` prints; `pooling`: the router pools (`--pool-mode`), so the auto
    /// listener runs.
    pub fn describe(&self, dir: &Path, names: &[String], scope: &str, pooling: bool) -> String {
        let mut out = format!(
            "router: write 127.0.0.1:{} (leader)  read 127.0.0.1:{} (replicas)  status http://127.0.0.1:{}/status\n",
            self.router_write, self.router_read, self.router_api
        );
        if pooling {
            out.push_str(&format!(
                "        auto 127.0.0.1:{} (read-your-writes: read-only transactions on a replica that has the client's last commit, the rest on the leader)\n",
                self.router_auto
            ));
        } else {
            out.push_str("        auto (read-your-writes): with --pool-mode\n");
        }
        out.push_str(&format!(
            "status page: http://127.0.0.1:{}/ (members, lag, failover history, pools; live)\n",
            self.router_api
        ));
        out.push_str(&format!("etcd: 127.0.0.1:{}\n", self.etcd_client));
        for (i, name) in names.iter().enumerate() {
            let k = i as u16 + 1;
            out.push_str(&format!(
                "{name}: postgres 127.0.0.1:{}  REST http://127.0.0.1:{}  config {}\n",
                self.postgres(k),
                self.api(k),
                dir.join(name).join("pgbaton.yml").display()
            ));
        }
        out.push_str(&format!(
            "psql: PGPASSWORD=postgres psql -h 127.0.0.1 -p {} -U postgres   (writes, via the router)\nctl:  pgbaton ctl --dcs 127.0.0.1:{} --scope {} list",
            self.router_write,
            self.etcd_client,
            scope
        ));
        out
    }
}
