//! The hosts of a run as Linux network namespaces: `pgbc<run>-br` holds a bridge, and every
//! host (`n1..`, `e1..`, the client `cl`) is a namespace with one veth (`eth0`) plugged into
//! it and an address in 10.231.<k>.0/24. Nothing outside these namespaces is touched: no
//! address, link, route or rule in the root namespace. Also the startup sweep that removes
//! what an earlier run left behind (its process gone).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{ChaosError, Result};
use crate::shell::ip;

/// Every namespace of every run starts with this.
pub const PREFIX: &str = "pgbc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    Etcd,
    Client,
}

#[derive(Debug, Clone)]
pub struct Host {
    /// Short name: n1.., e1.., cl.
    pub name: String,
    /// The namespace, `pgbc<run>-<name>`.
    pub ns: String,
    pub ip: Ipv4Addr,
    pub role: Role,
}

/// The planned (and, after [`Topology::create`], existing) namespaces of one run.
#[derive(Debug, Clone)]
pub struct Topology {
    pub run: u32,
    /// Third octet of the run's private /24.
    pub octet: u8,
    pub bridge_ns: String,
    pub hosts: Vec<Host>,
}

impl Topology {
    /// Names and addresses only; nothing is created.
    pub fn plan(run: u32, members: u8, etcd: u8) -> Topology {
        let octet = (run % 250) as u8 + 1;
        let addr = |last: u8| Ipv4Addr::new(10, 231, octet, last);
        let ns = |name: &str| format!("{PREFIX}{run}-{name}");
        let mut hosts = Vec::new();
        let mut add = |name: String, last: u8, role: Role| {
            hosts.push(Host {
                ns: ns(&name),
                name,
                ip: addr(last),
                role,
            })
        };
        for k in 1..=members {
            add(format!("n{k}"), 10 + k, Role::Member);
        }
        for k in 1..=etcd {
            add(format!("e{k}"), 20 + k, Role::Etcd);
        }
        add("cl".to_string(), 2, Role::Client);
        Topology {
            run,
            octet,
            bridge_ns: ns("br"),
            hosts,
        }
    }

    /// `10.231.<k>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.231.{}.0/24", self.octet)
    }

    pub fn members(&self) -> Vec<&Host> {
        self.with_role(Role::Member)
    }

    pub fn etcd(&self) -> Vec<&Host> {
        self.with_role(Role::Etcd)
    }

    pub fn client(&self) -> &Host {
        // plan() always adds the client host last.
        &self.hosts[self.hosts.len() - 1]
    }

    fn with_role(&self, role: Role) -> Vec<&Host> {
        self.hosts.iter().filter(|h| h.role == role).collect()
    }

    /// Create the bridge namespace and every host. On error the caller runs [`destroy`].
    pub fn create(&self) -> Result<()> {
        let br = self.bridge_ns.as_str();
        ip(&["netns", "add", br])?;
        ip(&["-n", br, "link", "set", "lo", "up"])?;
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", br, "link", "set", "br0", "up"])?;
        for h in &self.hosts {
            let veth = format!("v-{}", h.name);
            let cidr = format!("{}/24", h.ip);
            ip(&["netns", "add", &h.ns])?;
            ip(&[
                "-n", br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &h.ns,
            ])?;
            ip(&["-n", br, "link", "set", &veth, "master", "br0"])?;
            ip(&["-n", br, "link", "set", &veth, "up"])?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &h.ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Remove every namespace of this run (processes inside are killed first).
    pub fn destroy(&self) {
        destroy_run(self.run);
    }
}

/// Move the calling thread into namespace `ns` (threads it creates afterwards follow it).
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| ChaosError::io(&path, e))?;
    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| ChaosError::Setns {
        ns: ns.to_string(),
        source,
    })
}

/// Every namespace name `ip netns list` shows.
fn ns_list() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The processes inside namespace `ns`, except this one.
pub fn ns_pids(ns: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| *p != me)
        .collect()
}

/// SIGKILL every process in `ns` (stopped ones too) until none is left, at most 5 s.
pub fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run id in a namespace name `pgbc<run>-<host>`.
pub fn run_of(ns: &str) -> Option<u32> {
    ns.strip_prefix(PREFIX)?.split_once('-')?.0.parse().ok()
}

/// Kill the processes of every namespace of `run`, then delete the namespaces.
pub fn destroy_run(run: u32) {
    let mine: Vec<String> = ns_list()
        .into_iter()
        .filter(|ns| run_of(ns) == Some(run))
        .collect();
    for ns in &mine {
        kill_all_in(ns);
    }
    for ns in &mine {
        if let Err(e) = ip(&["netns", "del", ns]) {
            tracing::warn!("removing namespace {ns}: {e}");
        }
    }
}

/// True when `pid` is a live `chaos` process (the owner of a run).
fn run_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "chaos")
        .unwrap_or(false)
}

/// Remove the namespaces and run directories of earlier runs whose process is gone.
/// Returns the run ids swept.
pub fn sweep_stale(run_dir_parent: &std::path::Path) -> Vec<u32> {
    let mut runs: Vec<u32> = ns_list().iter().filter_map(|ns| run_of(ns)).collect();
    if let Ok(entries) = std::fs::read_dir(run_dir_parent) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(run) = name
                .strip_prefix(crate::cluster::RUN_DIR_PREFIX)
                .and_then(|r| r.parse().ok())
            {
                runs.push(run);
            }
        }
    }
    runs.sort_unstable();
    runs.dedup();
    let me = std::process::id();
    let stale: Vec<u32> = runs
        .into_iter()
        .filter(|r| *r != me && !run_alive(*r))
        .collect();
    for run in &stale {
        tracing::info!("removing leftovers of an earlier run {run}");
        destroy_run(*run);
        let dir = run_dir_parent.join(format!("{}{run}", crate::cluster::RUN_DIR_PREFIX));
        let _ = std::fs::remove_dir_all(dir);
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_hosts_and_gives_addresses_in_the_run_subnet() {
        let t = Topology::plan(1234, 3, 3);
        assert_eq!(t.octet, (1234 % 250) as u8 + 1);
        assert_eq!(t.subnet(), format!("10.231.{}.0/24", t.octet));
        let names: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3", "e1", "e2", "e3", "cl"]);
        assert_eq!(t.members()[1].ip, Ipv4Addr::new(10, 231, t.octet, 12));
        assert_eq!(t.etcd()[0].ip, Ipv4Addr::new(10, 231, t.octet, 21));
        assert_eq!(t.client().ip, Ipv4Addr::new(10, 231, t.octet, 2));
        assert_eq!(t.client().ns, "pgbc1234-cl");
        assert_eq!(t.bridge_ns, "pgbc1234-br");
    }

    #[test]
    fn run_ids_are_read_back_from_namespace_names() {
        assert_eq!(run_of("pgbc77-n1"), Some(77));
        assert_eq!(run_of("pgbc77-br"), Some(77));
        assert_eq!(run_of("pgbcx-n1"), None);
        assert_eq!(run_of("other-ns"), None);
    }
}
