//! One chaos run from start to verdict: start etcd and the agents, wait for a whole cluster,
//! create the table, start the monitor, the DCS watcher, the writers and the readers, inject
//! and heal faults for `--duration`, heal everything, wait for convergence, read the final
//! state and check it (writes, reads, leaderless windows, switchovers and, in async mode,
//! the loss in WAL bytes per failover).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::checker::{self, Verdict};
use crate::cli::{Mode, Settings, Via};
use crate::cluster::Cluster;
use crate::config::{MAXIMUM_LAG_ON_FAILOVER, PG_PORT};
use crate::converge::{self, Convergence};
use crate::db;
use crate::dcs_watch::DcsWatch;
use crate::error::{ChaosError, Result};
use crate::fault_kind::FaultKind;
use crate::faults::Faults;
use crate::history::Clock;
use crate::liveness::{self, FaultSpan, Liveness, SwitchoverOutcome, SwitchoverRecord};
use crate::loss::{self, AsyncLoss};
use crate::monitor::Monitor;
use crate::read_check::{self, ReadVerdict};
use crate::readers::Readers;
use crate::schedule::Schedule;
use crate::signals::interrupted;
use crate::workload::{Route, Workload, TABLE_DDL};

/// Time for etcd, then for a fresh cluster (initdb, clones) on a busy 2-core machine.
const ETCD_UP: Duration = Duration::from_secs(30);
const CLUSTER_UP: Duration = Duration::from_secs(120);
/// Writes kept going once the cluster is whole again.
const AFTER_CONVERGENCE: Duration = Duration::from_secs(2);
/// Time the replicas get to replay the leader's position before the final reads.
const CATCH_UP: Duration = Duration::from_secs(15);

pub struct RunResult {
    pub run: u32,
    pub names: Vec<String>,
    pub faults: u32,
    pub by_kind: Vec<(FaultKind, u32)>,
    pub verdict: Verdict,
    pub convergence: Convergence,
    pub monitor_rounds: u64,
    /// Replicas that streamed but did not replay the leader's position in time.
    pub behind: Vec<usize>,
    /// Why the final leader's WAL position could not be read for that check.
    pub catch_up_note: Option<String>,
    /// Set when the final state was not read from a leader.
    pub reference_note: Option<String>,
    pub reads: ReadVerdict,
    /// Reads that got no answer.
    pub reads_failed: usize,
    /// Async mode, with the final leader's history: the loss per failover.
    pub async_loss: Option<AsyncLoss>,
    /// Leaderless windows and their charge.
    pub liveness: Liveness,
    /// Every fault and step, on the run clock.
    pub timeline: Vec<FaultSpan>,
    /// Every switchover requested, how it ended, and whether an etcd fault excused it.
    pub switchovers: Vec<(SwitchoverRecord, SwitchoverOutcome, bool)>,
    /// `--via router`: the read-your-writes clients on the router's auto listener.
    pub ryw: Option<crate::ryw::RywVerdict>,
}

/// A view of the DCS at most this old tells the schedule who leads.
const VIEW_MAX_AGE_S: f64 = 1.0;

fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err(ChaosError::Interrupted)
    } else {
        Ok(())
    }
}

async fn leader_index(cluster: &Cluster, endpoints: &[String]) -> Option<usize> {
    match db::leader(endpoints).await {
        Ok(Some(name)) => cluster.member_index(&name),
        _ => None,
    }
}

pub async fn run(cluster: &mut Cluster, s: &Settings, clock: Clock) -> Result<RunResult> {
    let endpoints = cluster.etcd_endpoints();
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.host.name.clone())
        .collect();
    let ips: Vec<Ipv4Addr> = cluster.members.iter().map(|m| m.host.ip).collect();

    for i in 0..cluster.etcd.len() {
        cluster.start_etcd(i)?;
    }
    let deadline = Instant::now() + ETCD_UP;
    while !db::etcd_ready(&endpoints).await {
        check_interrupt()?;
        if Instant::now() >= deadline {
            return Err(ChaosError::NotReady(format!(
                "etcd {endpoints:?} did not answer within {ETCD_UP:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for k in 0..cluster.members.len() {
        cluster.start_agent(k)?;
    }
    let up = converge::wait(&names, &ips, &endpoints, CLUSTER_UP, interrupted).await;
    check_interrupt()?;
    let Some(leader) = up.leader.filter(|_| up.unrecovered.is_empty()) else {
        return Err(ChaosError::NotReady(format!(
            "after {:.0} s: leader {:?}, not streaming {:?}",
            up.waited_s,
            up.leader.map(|l| &names[l]),
            up.unrecovered
                .iter()
                .map(|k| &names[*k])
                .collect::<Vec<_>>()
        )));
    };
    tracing::info!(
        "cluster up in {:.1} s, leader {}",
        clock.now(),
        names[leader]
    );
    create_table(ips[leader]).await?;

    let entry = match s.via {
        Via::Libpq => ips
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, PG_PORT))
            .collect(),
        Via::Router => vec![start_router(cluster).await?],
    };
    let route = Route {
        entry,
        members: ips.clone(),
    };
    let monitor = Monitor::start(ips.clone(), clock);
    let watch = DcsWatch::start(endpoints.clone(), clock);
    let readers = Readers::start(route.clone(), s.readers, s.clients, clock);
    // Through the router: clients that read their own writes on its auto listener.
    let ryw_clients = match s.via {
        Via::Router => {
            let client_ip = *route.entry[0].ip();
            let auto = SocketAddrV4::new(client_ip, crate::config::ROUTER_AUTO_PORT);
            Some(crate::ryw::RywClients::start(auto, RYW_CLIENTS, clock))
        }
        Via::Libpq => None,
    };
    let workload = Workload::start(route, s.clients, clock);
    let workload_start = clock.now();
    let mut faults = Faults::new(
        Schedule::new(s.seed, s.faults.clone(), s.ttl),
        &cluster.root.join("events.log"),
        clock,
        s.mode,
    );
    faults.event(
        workload_start,
        &format!("workload started; leader {}", names[leader]),
    );

    let end = workload_start + s.duration_s as f64;
    let mut next = workload_start + faults.gap();
    while clock.now() < end && !interrupted() {
        let now = clock.now();
        faults.heal_due(cluster, now);
        faults.poll_requests().await;
        let view = watch.latest(now, VIEW_MAX_AGE_S);
        faults.advance(cluster, view.as_ref(), now);
        if now >= next && faults.has_room() {
            let leader = match view.as_ref().map(|v| v.leader.as_deref()) {
                Some(Some(l)) => cluster.member_index(l),
                Some(None) => None,
                None => leader_index(cluster, &endpoints).await,
            };
            faults
                .inject_one(cluster, leader, view.as_ref(), clock.now())
                .await;
            next = clock.now() + faults.gap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    faults.heal_all(cluster, clock.now());
    faults.event(clock.now(), "every fault healed; waiting for convergence");

    let convergence = converge::wait(
        &names,
        &ips,
        &endpoints,
        Duration::from_secs(s.converge_timeout_s),
        interrupted,
    )
    .await;
    if convergence.unrecovered.is_empty() {
        tokio::time::sleep(AFTER_CONVERGENCE).await;
    }
    let workload_end = clock.now();
    faults.finish_requests(Duration::from_secs(5)).await;
    faults.close_timeline(workload_end);
    let ops = workload.stop().await;
    let read_log = readers.stop().await;
    let ryw_log = match ryw_clients {
        Some(c) => Some(c.stop().await),
        None => None,
    };
    let seen = monitor.stop().await;
    let dcs_samples = watch.stop().await;
    faults.event(
        clock.now(),
        &format!(
            "converged: leader {:?}, unrecovered {:?} after {:.1} s",
            convergence.leader.map(|l| &names[l]),
            convergence
                .unrecovered
                .iter()
                .map(|k| &names[*k])
                .collect::<Vec<_>>(),
            convergence.waited_s
        ),
    );
    write_history(&cluster.root.join("history.csv"), &ops, &names);
    check_interrupt()?;

    let mut convergence = convergence;
    let mut behind: Vec<usize> = Vec::new();
    let mut catch_up_note = None;
    if let Some(l) = convergence.leader {
        let others: Vec<usize> = (0..ips.len()).filter(|k| *k != l).collect();
        let replica_ips: Vec<Ipv4Addr> = others.iter().map(|k| ips[*k]).collect();
        // A replica that streams but does not replay the leader's WAL has not rejoined.
        let caught = converge::catch_up(ips[l], &replica_ips, CATCH_UP).await;
        catch_up_note = caught.no_reference;
        for i in caught.behind {
            behind.push(others[i]);
            if !convergence.unrecovered.contains(&others[i]) {
                convergence.unrecovered.push(others[i]);
            }
        }
    }
    let mut member_ids: Vec<Option<HashSet<i64>>> = Vec::new();
    for ip in &ips {
        member_ids.push(converge::ids(*ip).await);
    }
    let (reference, reference_note) = match convergence.leader {
        Some(l) if member_ids[l].is_some() => (Some(l), None),
        _ => {
            let best = (0..ips.len())
                .filter(|k| member_ids[*k].is_some())
                .max_by_key(|k| member_ids[*k].as_ref().map_or(0, HashSet::len));
            let note = match best {
                Some(b) => format!(
                    "no readable leader: lost writes counted against {}, the member with the most rows",
                    names[b]
                ),
                None => "no member could be read: lost writes not counted".to_string(),
            };
            (best, Some(note))
        }
    };
    let history = match reference {
        Some(r) => converge::history(ips[r]).await,
        None => None,
    };
    let ryw = match (&ryw_log, reference) {
        (Some(log), Some(r)) => {
            let kept = ryw_ids(ips[r]).await;
            Some(crate::ryw::check(log, kept.as_ref()))
        }
        (Some(log), None) => Some(crate::ryw::check(log, None)),
        (None, _) => None,
    };
    let verdict = checker::check(&checker::Inputs {
        ops: &ops,
        dual_rounds: &seen.dual,
        final_ids: reference.and_then(|r| member_ids[r].as_ref()),
        member_ids: &member_ids,
        history: history.as_ref(),
        workload: (workload_start, workload_end),
    });
    let final_ids = reference.and_then(|r| member_ids[r].as_ref());
    let reads = read_check::check_reads(&read_check::ReadInputs {
        reads: &read_log.reads,
        ops: &ops,
        final_ids,
    });
    let rules = liveness::Rules {
        mode: s.mode,
        etcd_members: cluster.etcd.len(),
        max_lag: MAXIMUM_LAG_ON_FAILOVER,
        etcd_grace_s: s.ttl / 2.0,
        bound_s: liveness::bound(s.ttl, s.loop_wait()),
    };
    let live_inputs = liveness::Inputs {
        names: &names,
        dcs: &dcs_samples,
        answers: &seen.answers,
        spans: &faults.timeline,
        span: (workload_start, workload_end),
        rules: &rules,
    };
    let live = liveness::check(&live_inputs);
    let tl = liveness::Timeline::new(&live_inputs);
    let switchovers = faults
        .switchovers
        .iter()
        .map(|r| {
            let (outcome, excused) = liveness::classify_switchover(&tl, r, workload_end);
            (r.clone(), outcome, excused)
        })
        .collect();
    let async_loss = match (s.mode, final_ids, history.as_ref()) {
        (Mode::Async, Some(ids), Some(h)) => {
            Some(loss::async_loss(&ops, ids, h, MAXIMUM_LAG_ON_FAILOVER))
        }
        _ => None,
    };
    Ok(RunResult {
        run: cluster.topo.run,
        names,
        faults: faults.injected,
        by_kind: faults.by_kind.clone(),
        verdict,
        convergence,
        monitor_rounds: seen.rounds,
        behind,
        catch_up_note,
        reference_note,
        reads,
        reads_failed: read_log.failed,
        async_loss,
        liveness: live,
        timeline: faults.timeline.clone(),
        switchovers,
        ryw,
    })
}

/// Clients reading their own writes through the router's auto listener (`--via router`).
const RYW_CLIENTS: u16 = 2;

/// The ids in `chaos_ryw` on `ip`, None when it cannot be read.
async fn ryw_ids(ip: Ipv4Addr) -> Option<HashSet<i64>> {
    let rows = db::rows(ip, "SELECT id FROM chaos_ryw", Duration::from_secs(10))
        .await
        .ok()?;
    rows.iter()
        .map(|row| row.first()?.as_deref()?.parse().ok())
        .collect()
}

/// Every operation as CSV (kept with the logs by --keep-logs).
fn write_history(path: &std::path::Path, ops: &[crate::history::Op], names: &[String]) {
    let mut text = String::from(crate::history::CSV_HEADER);
    text.push('\n');
    for op in ops {
        text.push_str(&op.csv(&names[op.member]));
        text.push('\n');
    }
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!("writing {}: {e}", path.display());
    }
}

/// Start `pgbaton router` on the client host and wait until its write address serves a
/// session; returns that address.
async fn start_router(cluster: &mut Cluster) -> Result<SocketAddrV4> {
    let addr = cluster.start_router()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = async {
            let c = db::connect_to(addr, Duration::from_secs(2)).await?;
            c.simple_query("SELECT 1").await?;
            anyhow::Ok(())
        };
        match probe.await {
            Ok(()) => return Ok(addr),
            Err(e) if Instant::now() >= deadline => {
                return Err(ChaosError::NotReady(format!(
                    "pgbaton router's write address {addr} did not serve a session within 20 s \
                     ({e:#}); see router.log in the client host's directory"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        check_interrupt()?;
    }
}

/// Create the workload's table on the leader (a few tries: it may still be settling).
async fn create_table(leader: Ipv4Addr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match db::rows(leader, TABLE_DDL, Duration::from_secs(5)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(ChaosError::NotReady(format!(
                    "creating the table on {leader}: {e:#}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
        check_interrupt()?;
    }
}
