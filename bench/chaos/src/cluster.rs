//! [`Cluster`]: the hosts of one run and what runs on them — etcd on the `e*` hosts, one
//! `pgbaton agent` (and through it PostgreSQL 15) on each `n*` host, `pgbaton router` on the
//! client host with `--via router` — with the run directory
//! `/tmp/pgbaton-chaos-<run>` holding configs, data and logs. Methods start and kill these
//! processes; [`Cluster::teardown`] (also run on drop) kills everything in the namespaces,
//! deletes them and the run directory, after copying the logs when asked.

use std::net::SocketAddrV4;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::cli::Settings;
use crate::config::{
    member_yaml, router_userlist, router_yaml, MemberConfig, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
    ROUTER_WRITE_PORT,
};
use crate::error::{ChaosError, Result};
use crate::netns::{self, Host, Topology};
use crate::procs;

pub const RUN_DIR_PARENT: &str = "/tmp";
pub const RUN_DIR_PREFIX: &str = "pgbaton-chaos-";
pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin/postgres";

/// A PostgreSQL member host.
pub struct Member {
    pub host: Host,
    pub dir: PathBuf,
    /// The running agent; None while killed.
    agent: Option<Child>,
}

/// An etcd host.
pub struct EtcdNode {
    pub host: Host,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub topo: Topology,
    pub root: PathBuf,
    /// The copy of the pgbaton binary under test (a rebuild elsewhere does not change it).
    pgbaton: PathBuf,
    pub members: Vec<Member>,
    pub etcd: Vec<EtcdNode>,
    /// `pgbaton router` on the client host, when started.
    router: Option<Child>,
    keep_logs: Option<PathBuf>,
    torn_down: bool,
}

/// Panic-free check that the binaries a run needs exist, naming the install command.
pub fn require_binaries() -> Result<()> {
    if !Path::new(ETCD_BIN).exists() {
        return Err(ChaosError::MissingBinary(
            ETCD_BIN.into(),
            "install it with `apt-get install -y etcd-server`",
        ));
    }
    if !Path::new(PG_BIN).exists() {
        return Err(ChaosError::MissingBinary(
            PG_BIN.into(),
            "install it with `apt-get install -y postgresql-15`",
        ));
    }
    if crate::shell::run("nft", &["--version"], None).is_err() {
        return Err(ChaosError::MissingBinary(
            "nft".into(),
            "install it with `apt-get install -y nftables`",
        ));
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| ChaosError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ChaosError::io(path, e))
}

impl Cluster {
    /// Create the namespaces, the run directory, every member's configuration and the copy
    /// of pgbaton. Nothing is started yet.
    pub fn create(s: &Settings, run: u32) -> Result<Cluster> {
        let topo = Topology::plan(run, s.members, s.etcd);
        let root = Path::new(RUN_DIR_PARENT).join(format!("{RUN_DIR_PREFIX}{run}"));
        let cluster = Cluster {
            members: topo
                .members()
                .into_iter()
                .map(|h| Member {
                    host: h.clone(),
                    dir: root.join(&h.name),
                    agent: None,
                })
                .collect(),
            etcd: topo
                .etcd()
                .into_iter()
                .map(|h| EtcdNode {
                    host: h.clone(),
                    dir: root.join(&h.name),
                    child: None,
                })
                .collect(),
            pgbaton: root.join("bin").join("pgbaton"),
            router: None,
            topo,
            root,
            keep_logs: s.keep_logs.clone(),
            torn_down: false,
        };
        mkdir(&cluster.root)?;
        mkdir(&cluster.root.join("bin"))?;
        std::fs::copy(&s.pgbaton, &cluster.pgbaton).map_err(|e| ChaosError::io(&s.pgbaton, e))?;
        cluster.topo.create()?;
        let etcd_ips: Vec<_> = cluster.etcd.iter().map(|e| e.host.ip).collect();
        let subnet = cluster.topo.subnet();
        for e in &cluster.etcd {
            mkdir(&e.dir)?;
        }
        for m in &cluster.members {
            mkdir(&m.dir)?;
            let yaml = member_yaml(&MemberConfig {
                name: &m.host.name,
                ip: m.host.ip,
                subnet: &subnet,
                etcd: &etcd_ips,
                member_dir: &m.dir,
                ttl: s.ttl,
                loop_wait: s.loop_wait(),
                retry_timeout: s.retry_timeout(),
                synchronous: s.mode == crate::cli::Mode::Sync,
                strict: s.strict,
            });
            let path = m.dir.join("pgbaton.yml");
            std::fs::write(&path, yaml).map_err(|e| ChaosError::io(&path, e))?;
        }
        Ok(cluster)
    }

    /// `host:2379` of every etcd member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd
            .iter()
            .map(|e| format!("{}:{ETCD_CLIENT_PORT}", e.host.ip))
            .collect()
    }

    pub fn member_index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.host.name == name)
    }

    pub fn data_dir(&self, k: usize) -> PathBuf {
        self.members[k].dir.join("data")
    }

    /// Start etcd member `i` (again: its data directory is kept between starts).
    pub fn start_etcd(&mut self, i: usize) -> Result<()> {
        let cluster_list: Vec<String> = self
            .etcd
            .iter()
            .map(|e| format!("{}=http://{}:{ETCD_PEER_PORT}", e.host.name, e.host.ip))
            .collect();
        let e = &self.etcd[i];
        let ip = e.host.ip;
        let args: Vec<String> = [
            "--name",
            &e.host.name,
            "--data-dir",
            &e.dir.join("data").display().to_string(),
            "--listen-client-urls",
            &format!("http://{ip}:{ETCD_CLIENT_PORT}"),
            "--advertise-client-urls",
            &format!("http://{ip}:{ETCD_CLIENT_PORT}"),
            "--listen-peer-urls",
            &format!("http://{ip}:{ETCD_PEER_PORT}"),
            "--initial-advertise-peer-urls",
            &format!("http://{ip}:{ETCD_PEER_PORT}"),
            "--initial-cluster",
            &cluster_list.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &format!("pgbc{}", self.topo.run),
            "--logger",
            "zap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = procs::spawn_in(
            &e.host.ns,
            Path::new(ETCD_BIN),
            &args,
            &[],
            &e.dir.join("etcd.log"),
        )?;
        self.etcd[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL etcd member `i`.
    pub fn kill_etcd(&mut self, i: usize) {
        if let Some(mut child) = self.etcd[i].child.take() {
            procs::kill_child(&mut child);
        }
    }

    /// Start member `k`'s agent (it starts PostgreSQL itself).
    pub fn start_agent(&mut self, k: usize) -> Result<()> {
        let m = &self.members[k];
        let args = vec![
            "agent".to_string(),
            "--config".to_string(),
            m.dir.join("pgbaton.yml").display().to_string(),
        ];
        let child = procs::spawn_in(
            &m.host.ns,
            &self.pgbaton,
            &args,
            &[("PGBATON_LOG", "info")],
            &m.dir.join("agent.log"),
        )?;
        self.members[k].agent = Some(child);
        Ok(())
    }

    /// SIGKILL member `k`'s agent; PostgreSQL keeps running.
    pub fn kill_agent(&mut self, k: usize) {
        if let Some(mut child) = self.members[k].agent.take() {
            procs::kill_child(&mut child);
        }
    }

    pub fn agent_running(&mut self, k: usize) -> bool {
        self.members[k]
            .agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn agent_pid(&self, k: usize) -> Option<i32> {
        self.members[k].agent.as_ref().map(|c| c.id() as i32)
    }

    pub fn postmaster_pid(&self, k: usize) -> Option<i32> {
        procs::postmaster_pid(&self.data_dir(k))
    }

    /// Start `pgbaton router` on the client host (config and `router.log` in
    /// `<run dir>/cl/`); returns its write address. The caller waits for it to listen.
    pub fn start_router(&mut self) -> Result<SocketAddrV4> {
        let client = self.topo.client().clone();
        let dir = self.root.join(&client.name);
        mkdir(&dir)?;
        let etcd: Vec<_> = self.etcd.iter().map(|e| e.host.ip).collect();
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, router_userlist()).map_err(|e| ChaosError::io(&userlist, e))?;
        let path = dir.join("router.yml");
        std::fs::write(&path, router_yaml(client.ip, &etcd, &userlist))
            .map_err(|e| ChaosError::io(&path, e))?;
        let args = vec![
            "router".to_string(),
            "--config".to_string(),
            path.display().to_string(),
        ];
        let child = procs::spawn_in(
            &client.ns,
            &self.pgbaton,
            &args,
            &[("PGBATON_LOG", "info")],
            &dir.join("router.log"),
        )?;
        self.router = Some(child);
        Ok(SocketAddrV4::new(client.ip, ROUTER_WRITE_PORT))
    }

    /// The whole host crashes: every process in its namespace is SIGKILLed.
    pub fn kill_node(&mut self, k: usize) {
        self.kill_agent(k);
        netns::kill_all_in(&self.members[k].host.ns);
    }

    /// Kill everything, delete the namespaces and the run directory (logs copied first when
    /// `--keep-logs` was given). Safe to call twice.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if let Some(mut router) = self.router.take() {
            procs::kill_child(&mut router);
        }
        for k in 0..self.members.len() {
            self.kill_agent(k);
        }
        for i in 0..self.etcd.len() {
            self.kill_etcd(i);
        }
        self.topo.destroy();
        pgbaton_testkit::release_shared_memory_under(&self.root);
        if let Some(dest) = self.keep_logs.clone() {
            if let Err(e) = self.copy_logs(&dest) {
                tracing::warn!("copying the logs to {}: {e}", dest.display());
            } else {
                eprintln!("chaos: logs kept in {}", dest.display());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!("removing {}: {e}", self.root.display());
        }
    }

    /// Copy every `*.log` of the run directory (one level of host directories) to `dest`.
    fn copy_logs(&self, dest: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        let is_log = |p: &Path| p.extension().is_some_and(|e| e == "log" || e == "csv");
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                for inner in std::fs::read_dir(&path)?.flatten() {
                    if is_log(&inner.path()) {
                        let to = dest.join(entry.file_name());
                        std::fs::create_dir_all(&to)?;
                        std::fs::copy(inner.path(), to.join(inner.file_name()))?;
                    }
                }
            } else if is_log(&path) {
                std::fs::copy(&path, dest.join(entry.file_name()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}
