//! Injecting and healing faults on the running cluster. [`Faults`] keeps the active faults
//! (at most two, never two on one host), asks the [`Schedule`] for the next one, carries it
//! out (signals, nftables tables in a host's namespace, proxies on a path, a switchover
//! through the REST API) and undoes it when its time is up. Staged faults (`switchover`,
//! `switchover-then-kill`, `failover-twice`) go step by step, each step waiting for what the
//! DCS shows (a new leader) or for its time; they hold every member host meanwhile. Every
//! injection, step and heal is written to `events.log` in the run directory, and kept as a
//! timeline of [`FaultSpan`]s (which members each fault touched, from when to when) for the
//! liveness checker; every switchover request is kept as a [`SwitchoverRecord`].

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::JoinHandle;

use crate::cli::Mode;
use crate::cluster::Cluster;
use crate::config::{API_PORT, ETCD_CLIENT_PORT, PG_PORT};
use crate::dcs_watch::DcsView;
use crate::fault_kind::FaultKind;
use crate::history::Clock;
use crate::http;
use crate::liveness::{FaultSpan, SwitchoverRecord};
use crate::nft;
use crate::procs;
use crate::proxy::{Impairment, Proxy};
use crate::schedule::{Schedule, MAX_ACTIVE};
use crate::shell::{nft_apply, nft_delete};

/// How long the REST API may take to answer a switchover (it waits up to 30 s itself).
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(35);
/// A staged fault gives up waiting for a new leader after this many seconds.
const NEW_LEADER_WAIT_S: f64 = 30.0;

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
/// How much WAL the `replica-away` fault writes while the replica is down: more than the
/// members keep (`wal_keep_size` 128 MB, `max_slot_wal_keep_size` 128 MB in the chaos
/// configuration), so that the replica's WAL is gone when it comes back.
const WAL_BURST_MB: u32 = 250;

/// Write about `WAL_BURST_MB` of WAL on the leader at `ip` and checkpoint (local commit: in
/// synchronous mode the away replica may still be the named standby); returns the seconds
/// it took.
async fn wal_burst(ip: std::net::Ipv4Addr) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let client = crate::db::connect(ip, Duration::from_secs(5)).await?;
    let rows = WAL_BURST_MB * 1000;
    let sql = format!(
        "SET synchronous_commit = local;
         CREATE TABLE IF NOT EXISTS chaos_wal_burst (x text);
         INSERT INTO chaos_wal_burst SELECT repeat('x', 1000) FROM generate_series(1, {rows});
         TRUNCATE chaos_wal_burst;
         CHECKPOINT;"
    );
    tokio::time::timeout(Duration::from_secs(90), client.batch_execute(&sql))
        .await
        .map_err(|_| anyhow::anyhow!("not done within 90 s"))??;
    Ok(started.elapsed().as_secs_f64())
}

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
    /// Its entry in the timeline.
    span: usize,
}

/// A fault carried out in steps.
struct Staged {
    kind: FaultKind,
    /// Every member host: nothing else lands on a member meanwhile.
    hosts: Vec<String>,
    stage: Stage,
    /// Members whose host was lost and is not started again yet, with their timeline entry.
    down: Vec<(usize, usize)>,
    /// How long a lost host stays down.
    restart_after: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// A switchover was requested: waiting for its answer (`switchover`) or for another
    /// member to take the leader key (`switchover-then-kill`).
    Switching {
        old: usize,
        record: usize,
        deadline: f64,
    },
    /// The leader's host was lost: waiting for another member to take the leader key.
    AwaitLeader {
        old: usize,
        deadline: f64,
    },
    /// Lose `victim`'s host at `at`.
    KillAt {
        victim: usize,
        at: f64,
    },
    /// Start every lost host's agent again at `at`.
    RestartAt {
        at: f64,
    },
    Done,
}

/// A switchover request in flight: (record, timeline entry, the request's task returning
/// the time of the answer and the answer).
type Request = (
    usize,
    usize,
    JoinHandle<(f64, anyhow::Result<(u16, String)>)>,
);

/// A fault ready to be recorded as active.
struct Injected {
    hosts: Vec<String>,
    what: String,
    heal: Heal,
}

pub struct Faults {
    schedule: Schedule,
    active: Vec<Active>,
    staged: Vec<Staged>,
    next_table: u32,
    /// Faults injected so far.
    pub injected: u32,
    /// Per-kind counts, for the report.
    pub by_kind: Vec<(FaultKind, u32)>,
    events: Option<std::fs::File>,
    clock: Clock,
    mode: Mode,
    /// Every fault (and step of a staged one) on the run clock, for the liveness checker.
    pub timeline: Vec<FaultSpan>,
    /// Every switchover requested.
    pub switchovers: Vec<SwitchoverRecord>,
    requests: Vec<Request>,
}

impl Faults {
    pub fn new(
        schedule: Schedule,
        events_log: &std::path::Path,
        clock: Clock,
        mode: Mode,
    ) -> Faults {
        Faults {
            schedule,
            active: Vec::new(),
            staged: Vec::new(),
            next_table: 1,
            injected: 0,
            by_kind: Vec::new(),
            events: std::fs::File::create(events_log).ok(),
            clock,
            mode,
            timeline: Vec::new(),
            switchovers: Vec::new(),
            requests: Vec::new(),
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
            .chain(self.staged.iter().flat_map(|s| s.hosts.iter().cloned()))
            .collect()
    }

    pub fn has_room(&self) -> bool {
        self.active.len() + self.staged.len() < MAX_ACTIVE
    }

    fn count(&mut self, kind: FaultKind) {
        self.injected += 1;
        match self.by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.by_kind.push((kind, 1)),
        }
    }

    /// Start a timeline entry; its end is set when the fault (step) is healed.
    fn open_span(
        &mut self,
        kind: FaultKind,
        what: &str,
        now: f64,
        members: Vec<usize>,
        etcd_down: Vec<usize>,
    ) -> usize {
        self.timeline.push(FaultSpan {
            kind,
            what: what.to_string(),
            start: now,
            end: f64::INFINITY,
            members,
            etcd_down,
        });
        self.timeline.len() - 1
    }

    fn close_span(&mut self, span: usize, now: f64) {
        if let Some(s) = self.timeline.get_mut(span) {
            if s.end == f64::INFINITY {
                s.end = now;
            }
        }
    }

    /// Inject one fault drawn from the schedule (a few draws, in case a kind has no free
    /// target now). `view` is the DCS watcher's latest view (staged faults need it).
    /// Returns whether one was injected.
    pub async fn inject_one(
        &mut self,
        cluster: &mut Cluster,
        leader: Option<usize>,
        view: Option<&DcsView>,
        now: f64,
    ) -> bool {
        for _ in 0..5 {
            let kind = self.schedule.kind();
            if kind.staged() {
                if self.inject_staged(kind, cluster, view, now) {
                    self.count(kind);
                    return true;
                }
                continue;
            }
            if let Some(done) = self.inject(kind, cluster, leader).await {
                let duration = self.schedule.duration(kind);
                self.count(kind);
                self.event(
                    now,
                    &format!("inject {kind}: {} (for {duration:.1} s)", done.what),
                );
                let members: Vec<usize> = done
                    .hosts
                    .iter()
                    .filter_map(|h| cluster.member_index(h))
                    .collect();
                let etcd_down: Vec<usize> = match kind {
                    FaultKind::EtcdKill | FaultKind::EtcdSplit => done
                        .hosts
                        .iter()
                        .filter_map(|h| cluster.etcd.iter().position(|e| e.host.name == *h))
                        .collect(),
                    _ => Vec::new(),
                };
                let span = self.open_span(kind, &done.what, now, members, etcd_down);
                self.active.push(Active {
                    kind,
                    hosts: done.hosts,
                    heal_at: now + duration,
                    what: done.what,
                    heal: done.heal,
                    span,
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

    /// Heal every active fault now (staged ones: every lost host is started again).
    pub fn heal_all(&mut self, cluster: &mut Cluster, now: f64) {
        for a in std::mem::take(&mut self.active) {
            self.heal(cluster, a, now);
        }
        for mut st in std::mem::take(&mut self.staged) {
            self.restart_down(cluster, &mut st, now);
        }
    }

    fn heal(&mut self, cluster: &mut Cluster, a: Active, now: f64) {
        self.close_span(a.span, now);
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

    /// Start a staged fault: it needs every member host free and a leader in `view`.
    fn inject_staged(
        &mut self,
        kind: FaultKind,
        cluster: &mut Cluster,
        view: Option<&DcsView>,
        now: f64,
    ) -> bool {
        let busy = self.busy();
        let hosts: Vec<String> = cluster
            .members
            .iter()
            .map(|m| m.host.name.clone())
            .collect();
        if hosts.iter().any(|h| busy.contains(h)) {
            return false;
        }
        // Staged faults start from a settled cluster: the quick succession is theirs.
        let synchronous = self.mode == Mode::Sync;
        let Some(view) = view.filter(|v| v.settled(&hosts, synchronous)) else {
            return false;
        };
        let Some(old) = view.leader.as_deref().and_then(|l| cluster.member_index(l)) else {
            return false;
        };
        let restart_after = self.schedule.duration(kind);
        let stage = match kind {
            FaultKind::Switchover | FaultKind::SwitchoverThenKill => {
                let candidates: Vec<usize> = (0..hosts.len())
                    .filter(|k| *k != old)
                    .filter(|k| {
                        view.member(&hosts[*k])
                            .is_some_and(|m| m.running_replica() && m.streaming && !m.never_promote)
                    })
                    .filter(|k| match self.mode {
                        Mode::Sync => view.sync.as_ref().is_some_and(|s| s.contains(&hosts[*k])),
                        Mode::Async => true,
                    })
                    .collect();
                let candidate = self.schedule.switchover_candidate(&candidates);
                let body = match candidate {
                    Some(c) => format!(
                        "{{\"leader\":\"{}\",\"candidate\":\"{}\"}}",
                        hosts[old], hosts[c]
                    ),
                    None => format!("{{\"leader\":\"{}\"}}", hosts[old]),
                };
                let what = format!(
                    "switchover {} -> {} (POST /switchover {body})",
                    hosts[old],
                    candidate.map_or("any", |c| hosts[c].as_str())
                );
                self.event(now, &format!("inject {kind}: {what}"));
                let span = self.open_span(kind, &what, now, Vec::new(), Vec::new());
                self.switchovers.push(SwitchoverRecord {
                    kind,
                    old,
                    candidate,
                    asked: now,
                    answered: None,
                    status: None,
                    body: String::new(),
                });
                let record = self.switchovers.len() - 1;
                let addr = SocketAddrV4::new(cluster.members[old].host.ip, API_PORT);
                let clock = self.clock;
                let task = tokio::spawn(async move {
                    let r = http::post_json(addr, "/switchover", &body, SWITCHOVER_TIMEOUT).await;
                    (clock.now(), r)
                });
                self.requests.push((record, span, task));
                Stage::Switching {
                    old,
                    record,
                    deadline: now + SWITCHOVER_TIMEOUT.as_secs_f64() + 5.0,
                }
            }
            FaultKind::FailoverTwice => {
                let what = format!(
                    "SIGKILL every process on {} (leader; node crash), then on the next leader",
                    hosts[old]
                );
                self.event(now, &format!("inject {kind}: {what}"));
                cluster.kill_node(old);
                let span = self.open_span(
                    kind,
                    &format!("{} (leader) lost", hosts[old]),
                    now,
                    vec![old],
                    Vec::new(),
                );
                self.staged.push(Staged {
                    kind,
                    hosts,
                    stage: Stage::AwaitLeader {
                        old,
                        deadline: now + NEW_LEADER_WAIT_S,
                    },
                    down: vec![(old, span)],
                    restart_after,
                });
                return true;
            }
            _ => return false,
        };
        self.staged.push(Staged {
            kind,
            hosts,
            stage,
            down: Vec::new(),
            restart_after,
        });
        true
    }

    /// Record the switchover answers that came in.
    pub async fn poll_requests(&mut self) {
        let mut pending = Vec::new();
        for (record, span, task) in std::mem::take(&mut self.requests) {
            if task.is_finished() {
                let (at, result) = match task.await {
                    Ok(r) => r,
                    Err(e) => (self.clock.now(), Err(anyhow::anyhow!("{e}"))),
                };
                self.answer(record, span, at, result);
            } else {
                pending.push((record, span, task));
            }
        }
        self.requests = pending;
    }

    /// Wait (at most `timeout`) for the switchover requests still in flight.
    pub async fn finish_requests(&mut self, timeout: Duration) {
        for (record, span, task) in std::mem::take(&mut self.requests) {
            match tokio::time::timeout(timeout, task).await {
                Ok(Ok((at, result))) => self.answer(record, span, at, result),
                _ => {
                    let now = self.clock.now();
                    self.close_span(span, now);
                    self.event(now, "a switchover request got no answer before the end");
                }
            }
        }
    }

    fn answer(
        &mut self,
        record: usize,
        span: usize,
        at: f64,
        result: anyhow::Result<(u16, String)>,
    ) {
        self.close_span(span, at);
        let (status, body) = match result {
            Ok((status, body)) => (Some(status), body),
            Err(e) => (None, format!("{e:#}")),
        };
        let text = format!(
            "switchover answer after {:.1} s: {} {}",
            at - self.switchovers[record].asked,
            status.map_or("-".to_string(), |s| s.to_string()),
            body
        );
        let r = &mut self.switchovers[record];
        r.answered = Some(at);
        r.status = status;
        r.body = body;
        self.event(at, &text);
    }

    /// Carry the staged faults one step further where what they wait for has happened.
    /// `view` is the DCS watcher's latest view.
    pub fn advance(&mut self, cluster: &mut Cluster, view: Option<&DcsView>, now: f64) {
        let holder = view
            .and_then(|v| v.leader.as_deref())
            .and_then(|l| cluster.member_index(l));
        let mut staged = std::mem::take(&mut self.staged);
        for st in &mut staged {
            let kind = st.kind;
            let hosts = st.hosts.clone();
            let name = |k: usize| hosts[k].clone();
            st.stage = match st.stage {
                Stage::Switching {
                    old,
                    record,
                    deadline,
                } => {
                    let answered = self.switchovers[record].answered.is_some();
                    let moved = holder.filter(|h| *h != old);
                    match (kind, moved) {
                        (FaultKind::SwitchoverThenKill, Some(new)) => {
                            let after = self.schedule.kill_after_switchover();
                            self.event(
                                now,
                                &format!(
                                    "{kind}: {} took the leader key; its host is lost in {after:.1} s",
                                    name(new)
                                ),
                            );
                            Stage::KillAt {
                                victim: new,
                                at: now + after,
                            }
                        }
                        (FaultKind::Switchover, _) if answered => {
                            self.event(now, &format!("{kind} done"));
                            Stage::Done
                        }
                        _ if now >= deadline => {
                            self.event(
                                now,
                                &format!("{kind}: the leader key did not move; nothing more done"),
                            );
                            Stage::Done
                        }
                        (FaultKind::SwitchoverThenKill, None)
                            if answered
                                && self.switchovers[record].status != Some(200)
                                && holder == Some(old) =>
                        {
                            self.event(
                                now,
                                &format!("{kind}: the switchover did not happen; nothing killed"),
                            );
                            Stage::Done
                        }
                        _ => st.stage,
                    }
                }
                Stage::AwaitLeader { old, deadline } => match holder.filter(|h| *h != old) {
                    Some(new) => {
                        let after = self.schedule.second_kill_after();
                        self.event(
                            now,
                            &format!(
                                "{kind}: {} took the leader key; its host is lost in {after:.1} s",
                                name(new)
                            ),
                        );
                        Stage::KillAt {
                            victim: new,
                            at: now + after,
                        }
                    }
                    None if now >= deadline => {
                        self.event(
                            now,
                            &format!(
                                "{kind}: no other member took the leader key within {NEW_LEADER_WAIT_S} s"
                            ),
                        );
                        Stage::RestartAt { at: now }
                    }
                    None => st.stage,
                },
                Stage::KillAt { victim, at } if now >= at => {
                    let still = if holder == Some(victim) {
                        "the leader"
                    } else {
                        "no longer the leader key's holder"
                    };
                    let what = format!("{} ({still}) lost", name(victim));
                    self.event(
                        now,
                        &format!(
                            "{kind}: SIGKILL every process on {} ({still}; node crash)",
                            name(victim)
                        ),
                    );
                    cluster.kill_node(victim);
                    let span = self.open_span(kind, &what, now, vec![victim], Vec::new());
                    st.down.push((victim, span));
                    Stage::RestartAt {
                        at: now + st.restart_after,
                    }
                }
                Stage::RestartAt { at } if now >= at => {
                    self.restart_down(cluster, st, now);
                    Stage::Done
                }
                other => other,
            };
        }
        staged.retain(|st| st.stage != Stage::Done);
        self.staged = staged;
    }

    /// Start the agent of every member a staged fault lost, and end their timeline entries.
    fn restart_down(&mut self, cluster: &mut Cluster, st: &mut Staged, now: f64) {
        for (k, span) in std::mem::take(&mut st.down) {
            self.close_span(span, now);
            let name = st.hosts[k].clone();
            let result = if cluster.agent_running(k) {
                Ok(())
            } else {
                cluster.start_agent(k)
            };
            match result {
                Ok(()) => self.event(
                    now,
                    &format!("heal {}: agent on {name} started again", st.kind),
                ),
                Err(e) => self.event(
                    now,
                    &format!("heal {}: starting the agent on {name} FAILED: {e}", st.kind),
                ),
            }
        }
    }

    /// End every timeline entry still open (at the end of the run).
    pub fn close_timeline(&mut self, now: f64) {
        for s in &mut self.timeline {
            if s.end == f64::INFINITY {
                s.end = now;
            }
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
            FaultKind::ReplicaAway => {
                let l = leader?;
                let replicas: Vec<usize> =
                    free_members.iter().copied().filter(|k| *k != l).collect();
                let k = self.schedule.pick(&replicas)?;
                cluster.kill_node(k);
                let burst = wal_burst(cluster.members[l].host.ip).await;
                let what = match burst {
                    Ok(secs) => format!(
                        "SIGKILL every process on {} (node crash), then {WAL_BURST_MB} MB of WAL written and checkpointed on {} in {secs:.1} s",
                        label(k),
                        label(l)
                    ),
                    Err(e) => format!(
                        "SIGKILL every process on {} (node crash); the WAL burst on {} failed: {e:#}",
                        label(k),
                        label(l)
                    ),
                };
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
            // Carried out step by step by inject_staged and advance.
            FaultKind::Switchover | FaultKind::SwitchoverThenKill | FaultKind::FailoverTwice => {
                None
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
