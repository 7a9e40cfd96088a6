//! Injecting and healing faults on the running cluster. [`Faults`] keeps the active faults
//! (at most two, never two on one host), asks the [`Schedule`] for the next one, carries it
//! out (signals, nftables tables in a host's namespace, proxies on a path) and undoes it when
//! its time is up. Every injection and heal is written to `events.log` in the run directory.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};

use nix::sys::signal::Signal;

use crate::cluster::Cluster;
use crate::config::{ETCD_CLIENT_PORT, PG_PORT};
use crate::fault_kind::FaultKind;
use crate::nft;
use crate::procs;
use crate::proxy::{Impairment, Proxy};
use crate::schedule::{Schedule, MAX_ACTIVE};
use crate::shell::{nft_apply, nft_delete};

/// What undoes a fault.
enum Heal {
    /// The agent heals it (a killed postmaster is restarted by its agent).
    Nothing,
    StartAgent(usize),
    /// SIGCONT to the pid, or to its process group.
    Continue {
        pid: i32,
        group: bool,
    },
    StartEtcd(usize),
    /// Delete these (namespace, table) nftables tables, then stop these proxies.
    Network {
        tables: Vec<(String, String)>,
        proxies: Vec<Proxy>,
    },
}

/// The wall clock as `HH:MM:SS.mmmZ`, to line events up with the agents' logs.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day / 60 % 60,
        day % 60,
        now.subsec_millis()
    )
}

struct Active {
    kind: FaultKind,
    /// Host names this fault holds: no second fault lands on them meanwhile.
    hosts: Vec<String>,
    heal_at: f64,
    what: String,
    heal: Heal,
}

/// A fault ready to be recorded as active.
struct Injected {
    hosts: Vec<String>,
    what: String,
    heal: Heal,
}

pub struct Faults {
    schedule: Schedule,
    active: Vec<Active>,
    next_table: u32,
    /// Faults injected so far.
    pub injected: u32,
    /// Per-kind counts, for the report.
    pub by_kind: Vec<(FaultKind, u32)>,
    events: Option<std::fs::File>,
}

impl Faults {
    pub fn new(schedule: Schedule, events_log: &std::path::Path) -> Faults {
        Faults {
            schedule,
            active: Vec::new(),
            next_table: 1,
            injected: 0,
            by_kind: Vec::new(),
            events: std::fs::File::create(events_log).ok(),
        }
    }

    /// Seconds until the next injection.
    pub fn gap(&mut self) -> f64 {
        self.schedule.gap()
    }

    pub fn event(&mut self, now: f64, text: &str) {
        tracing::info!("t={now:.1}s {text}");
        if let Some(f) = self.events.as_mut() {
            let _ = writeln!(f, "t={now:.2} {} {text}", utc_now());
        }
    }

    fn busy(&self) -> HashSet<String> {
        self.active
            .iter()
            .flat_map(|a| a.hosts.iter().cloned())
            .collect()
    }

    pub fn has_room(&self) -> bool {
        self.active.len() < MAX_ACTIVE
    }

    /// Inject one fault drawn from the schedule (a few draws, in case a kind has no free
    /// target now). Returns whether one was injected.
    pub async fn inject_one(
        &mut self,
        cluster: &mut Cluster,
        leader: Option<usize>,
        now: f64,
    ) -> bool {
        for _ in 0..5 {
            let kind = self.schedule.kind();
            if let Some(done) = self.inject(kind, cluster, leader).await {
                let duration = self.schedule.duration(kind);
                self.injected += 1;
                match self.by_kind.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => self.by_kind.push((kind, 1)),
                }
                self.event(
                    now,
                    &format!("inject {kind}: {} (for {duration:.1} s)", done.what),
                );
                self.active.push(Active {
                    kind,
                    hosts: done.hosts,
                    heal_at: now + duration,
                    what: done.what,
                    heal: done.heal,
                });
                return true;
            }
        }
        false
    }

    /// Heal the faults whose time is up.
    pub fn heal_due(&mut self, cluster: &mut Cluster, now: f64) {
        let (due, keep): (Vec<Active>, Vec<Active>) =
            self.active.drain(..).partition(|a| a.heal_at <= now);
        self.active = keep;
        for a in due {
            self.heal(cluster, a, now);
        }
    }

    /// Heal every active fault now.
    pub fn heal_all(&mut self, cluster: &mut Cluster, now: f64) {
        for a in std::mem::take(&mut self.active) {
            self.heal(cluster, a, now);
        }
    }

    fn heal(&mut self, cluster: &mut Cluster, a: Active, now: f64) {
        let undo = match &a.heal {
            Heal::Nothing => "nothing to undo (the agent restarts PostgreSQL)",
            Heal::StartAgent(_) => "agent started again",
            Heal::Continue { .. } => "SIGCONT",
            Heal::StartEtcd(_) => "etcd started again",
            Heal::Network { proxies, .. } if proxies.is_empty() => "nftables rules removed",
            Heal::Network { .. } => "nftables rules removed, proxies closed",
        };
        let result = match a.heal {
            Heal::Nothing => Ok(()),
            Heal::StartAgent(k) => {
                if cluster.agent_running(k) {
                    Ok(())
                } else {
                    cluster.start_agent(k)
                }
            }
            Heal::Continue { pid, group } => {
                if group {
                    procs::signal_group(pid, Signal::SIGCONT);
                } else {
                    procs::signal(pid, Signal::SIGCONT);
                }
                Ok(())
            }
            Heal::StartEtcd(i) => cluster.start_etcd(i),
            Heal::Network { tables, proxies } => {
                let mut result = Ok(());
                for (ns, table) in &tables {
                    if let Err(e) = nft_delete(ns, table) {
                        result = Err(e);
                    }
                }
                for p in &proxies {
                    p.shutdown();
                }
                result
            }
        };
        match result {
            Ok(()) => self.event(now, &format!("heal {} ({}): {undo}", a.kind, a.what)),
            Err(e) => self.event(
                now,
                &format!("heal {} ({}) FAILED: {undo}: {e}", a.kind, a.what),
            ),
        }
    }

    fn table(&mut self) -> String {
        self.next_table += 1;
        nft::table_name(self.next_table)
    }

    async fn inject(
        &mut self,
        kind: FaultKind,
        cluster: &mut Cluster,
        leader: Option<usize>,
    ) -> Option<Injected> {
        let busy = self.busy();
        let free_members: Vec<usize> = (0..cluster.members.len())
            .filter(|k| !busy.contains(&cluster.members[*k].host.name))
            .collect();
        let free_etcd: Vec<usize> = (0..cluster.etcd.len())
            .filter(|i| !busy.contains(&cluster.etcd[*i].host.name))
            .collect();
        let free_leader = leader.filter(|l| free_members.contains(l));
        let names: Vec<String> = cluster
            .members
            .iter()
            .map(|m| m.host.name.clone())
            .collect();
        let label = |k: usize| {
            if Some(k) == leader {
                format!("{} (leader)", names[k])
            } else {
                names[k].clone()
            }
        };
        let member_name = |k: usize| names[k].clone();
        match kind {
            FaultKind::KillPostgres => {
                let k = self.schedule.member(&free_members, leader)?;
                let pid = cluster.postmaster_pid(k)?;
                procs::signal_group(pid, Signal::SIGKILL);
                Some(Injected {
                    hosts: vec![member_name(k)],
                    what: format!("SIGKILL postmaster {pid} and its backends on {}", label(k)),
                    heal: Heal::Nothing,
                })
            }
            FaultKind::KillAgent => {
                let k = self.schedule.member(&free_members, leader)?;
                if !cluster.agent_running(k) {
                    return None;
                }
                let what = format!("SIGKILL the agent on {}", label(k));
                cluster.kill_agent(k);
                Some(Injected {
                    hosts: vec![member_name(k)],
                    what,
                    heal: Heal::StartAgent(k),
                })
            }
            FaultKind::KillNode => {
                let k = self.schedule.member(&free_members, leader)?;
                let what = format!("SIGKILL every process on {} (node crash)", label(k));
                cluster.kill_node(k);
                Some(Injected {
                    hosts: vec![member_name(k)],
                    what,
                    heal: Heal::StartAgent(k),
                })
            }
            FaultKind::Pause => {
                let k = self.schedule.member(&free_members, leader)?;
                if self.schedule.chance(0.5) {
                    if !cluster.agent_running(k) {
                        return None;
                    }
                    let pid = cluster.agent_pid(k)?;
                    procs::signal(pid, Signal::SIGSTOP);
                    Some(Injected {
                        hosts: vec![member_name(k)],
                        what: format!("SIGSTOP the agent {pid} on {}", label(k)),
                        heal: Heal::Continue { pid, group: false },
                    })
                } else {
                    let pid = cluster.postmaster_pid(k)?;
                    procs::signal_group(pid, Signal::SIGSTOP);
                    Some(Injected {
                        hosts: vec![member_name(k)],
                        what: format!("SIGSTOP PostgreSQL (group {pid}) on {}", label(k)),
                        heal: Heal::Continue { pid, group: true },
                    })
                }
            }
            FaultKind::Partition => {
                let k = self.schedule.member(&free_members, leader)?;
                let ns = cluster.members[k].host.ns.clone();
                let table = self.table();
                let what = format!("{} cut from every host, both ways", label(k));
                self.apply(
                    vec![member_name(k)],
                    what,
                    vec![(ns, nft::isolate(&table), table)],
                )
            }
            FaultKind::LeaderEtcd => {
                let l = free_leader?;
                let etcd_ips: Vec<_> = cluster.etcd.iter().map(|e| e.host.ip).collect();
                let table = self.table();
                let rules = nft::block(&table, &etcd_ips);
                let what = format!("{} cut from etcd only", label(l));
                self.apply(
                    vec![member_name(l)],
                    what,
                    vec![(cluster.members[l].host.ns.clone(), rules, table)],
                )
            }
            FaultKind::LeaderReplicas => {
                let l = free_leader?;
                let others: Vec<_> = (0..cluster.members.len())
                    .filter(|k| *k != l)
                    .map(|k| cluster.members[k].host.ip)
                    .collect();
                let table = self.table();
                let rules = nft::block(&table, &others);
                let what = format!("{} cut from the other members only", label(l));
                self.apply(
                    vec![member_name(l)],
                    what,
                    vec![(cluster.members[l].host.ns.clone(), rules, table)],
                )
            }
            FaultKind::EtcdSplit => {
                let i = self.schedule.pick(&free_etcd)?;
                let others: Vec<_> = (0..cluster.etcd.len())
                    .filter(|j| *j != i)
                    .map(|j| cluster.etcd[j].host.ip)
                    .collect();
                let table = self.table();
                let rules = nft::block(&table, &others);
                let host = cluster.etcd[i].host.clone();
                let what = format!(
                    "etcd member {} cut from the other etcd members (minority)",
                    host.name
                );
                self.apply(vec![host.name], what, vec![(host.ns, rules, table)])
            }
            FaultKind::EtcdKill => {
                let i = self.schedule.pick(&free_etcd)?;
                cluster.kill_etcd(i);
                let name = cluster.etcd[i].host.name.clone();
                Some(Injected {
                    what: format!("SIGKILL etcd member {name}"),
                    hosts: vec![name],
                    heal: Heal::StartEtcd(i),
                })
            }
            FaultKind::Delay | FaultKind::Loss => {
                let l = free_leader?;
                let impair = if kind == FaultKind::Delay {
                    let ms = self.schedule.delay_ms();
                    Impairment {
                        delay: std::time::Duration::from_millis(ms),
                        jitter: std::time::Duration::from_millis(ms / 4),
                        loss: 0.0,
                    }
                } else {
                    Impairment {
                        loss: self.schedule.loss(),
                        ..Default::default()
                    }
                };
                let to_etcd = self.schedule.chance(0.5);
                self.impair_path(cluster, l, &free_members, to_etcd, impair, &label(l))
                    .await
            }
        }
    }

    /// Install nftables `rules` (namespace, ruleset, table); on error remove what went in.
    fn apply(
        &mut self,
        hosts: Vec<String>,
        what: String,
        rules: Vec<(String, String, String)>,
    ) -> Option<Injected> {
        let mut tables: Vec<(String, String)> = Vec::new();
        for (ns, ruleset, table) in rules {
            if let Err(e) = nft_apply(&ns, &ruleset) {
                tracing::warn!("installing {table} in {ns}: {e}");
                for (ns, table) in &tables {
                    let _ = nft_delete(ns, table);
                }
                return None;
            }
            tables.push((ns, table));
        }
        Some(Injected {
            hosts,
            what,
            heal: Heal::Network {
                tables,
                proxies: Vec::new(),
            },
        })
    }

    /// Put proxies with `impair` on the leader-to-etcd path, or on every free replica's
    /// path to the leader.
    async fn impair_path(
        &mut self,
        cluster: &Cluster,
        leader: usize,
        free_members: &[usize],
        to_etcd: bool,
        impair: Impairment,
        leader_label: &str,
    ) -> Option<Injected> {
        let client_ip = cluster.topo.client().ip;
        let bind = SocketAddr::from((client_ip, 0));
        // (namespace whose new connections are redirected, target) pairs.
        let mut paths: Vec<(String, SocketAddrV4)> = Vec::new();
        let mut hosts = vec![cluster.members[leader].host.name.clone()];
        let what_path = if to_etcd {
            for e in &cluster.etcd {
                paths.push((
                    cluster.members[leader].host.ns.clone(),
                    SocketAddrV4::new(e.host.ip, ETCD_CLIENT_PORT),
                ));
            }
            format!("{leader_label} -> etcd")
        } else {
            let target = SocketAddrV4::new(cluster.members[leader].host.ip, PG_PORT);
            for k in free_members.iter().copied().filter(|k| *k != leader) {
                paths.push((cluster.members[k].host.ns.clone(), target));
                hosts.push(cluster.members[k].host.name.clone());
            }
            if paths.is_empty() {
                return None;
            }
            format!("replicas {:?} -> {leader_label}", &hosts[1..])
        };
        let mut proxies: Vec<Proxy> = Vec::new();
        let mut by_ns: Vec<(String, Vec<(SocketAddrV4, SocketAddrV4)>)> = Vec::new();
        for (ns, target) in paths {
            let proxy = match Proxy::start(bind, SocketAddr::V4(target), impair).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("starting a proxy to {target}: {e}");
                    return None;
                }
            };
            let SocketAddr::V4(listen) = proxy.listen else {
                return None;
            };
            proxies.push(proxy);
            match by_ns.iter_mut().find(|(n, _)| *n == ns) {
                Some((_, routes)) => routes.push((target, listen)),
                None => by_ns.push((ns, vec![(target, listen)])),
            }
        }
        let rules: Vec<(String, String, String)> = by_ns
            .into_iter()
            .map(|(ns, routes)| {
                let table = self.table();
                (ns, nft::redirect(&table, &routes), table)
            })
            .collect();
        let what = format!(
            "{what_path} through a proxy (delay {:?} +- {:?}, loss {:.0} %)",
            impair.delay,
            impair.jitter,
            impair.loss * 100.0
        );
        let mut done = self.apply(hosts, what, rules)?;
        if let Heal::Network { proxies: p, .. } = &mut done.heal {
            *p = proxies;
        }
        Some(done)
    }
}
