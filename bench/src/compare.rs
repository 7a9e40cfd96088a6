//! `pgbaton-bench compare`: the same scenarios (node crash, postmaster crash, planned
//! switchover) on pgbaton clusters and on Patroni 3.0 clusters behind HAProxy, with each
//! tool's default settings and its fastest ones, then the comparison table, the raw figures
//! for the plot and the one-line summary.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::crash::Crash;
use crate::memory;
use crate::patroni::{PatroniCluster, PatroniSpec};
use crate::patroni_config::{SEED_CHECKS, TUNED_CHECKS};
use crate::profile::Profile;
use crate::scenario::{self, AgentMemory, RunError, RunResult};
use crate::target::{System, Target};
use crate::writer;

/// The order scenarios run in on each cluster (node crashes last: they cost a restart).
pub const SCENARIOS: [Crash; 6] = [
    Crash::Switchover,
    Crash::SwitchoverNocandidate,
    Crash::Postmaster,
    Crash::Node,
    Crash::SwitchoverThenNode,
    Crash::NodeTwice,
];

/// `SCENARIOS` restricted to `chosen`, in the canonical order.
pub fn scenarios(chosen: &[Crash]) -> Vec<Crash> {
    SCENARIOS
        .into_iter()
        .filter(|c| chosen.contains(c))
        .collect()
}

/// What `compare` runs.
#[derive(Debug, Clone)]
pub struct ComparePlan {
    pub pgbaton: PathBuf,
    pub dir: PathBuf,
    /// pgbaton clusters use BASE + profile offset; Patroni ones 18000 + 40 × i.
    pub base_port: u16,
    pub patroni_base_port: u16,
    pub pgbaton_profiles: Vec<Profile>,
    pub patroni_profiles: Vec<Profile>,
    pub runs: usize,
    /// Which tools to measure.
    pub systems: Vec<System>,
    /// Which scenarios to run on each cluster.
    pub scenarios: Vec<Crash>,
    /// Runs for Patroni profiles with ttl >= 30 (slow: the lease alone is 30 s).
    pub slow_runs: usize,
    pub members: u8,
    /// How long a pgbaton node stays down after a crash (None: 2 × ttl + 10 s).
    pub restart_delay: Option<f64>,
    /// How long a run waits for the first write after the event (None: 3 × ttl + 60 s).
    pub window_limit: Option<Duration>,
}

/// Everything `compare` measured.
#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunResult>,
    pub memory: Vec<AgentMemory>,
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Patroni(#[from] crate::patroni::PatroniError),
    #[error(transparent)]
    Write(#[from] writer::WriteError),
}

/// HAProxy's checks for a Patroni profile: the seed's for the seed timing, tuned otherwise.
pub fn checks_for(profile: Profile) -> crate::patroni_config::Checks {
    if profile == Profile::Seed {
        SEED_CHECKS
    } else {
        TUNED_CHECKS
    }
}

pub async fn run(plan: &ComparePlan, out: &mut Comparison) {
    let mut next_run = 1000;
    let none = Vec::new();
    let pick = |system: System, profiles| {
        if plan.systems.contains(&system) {
            profiles
        } else {
            &none
        }
    };
    for system in [System::Pgbaton, System::PgbatonRouter] {
        for &profile in pick(system, &plan.pgbaton_profiles) {
            let via_router = system == System::PgbatonRouter;
            let spec = ClusterSpec {
                pgbaton: plan.pgbaton.clone(),
                dir: plan
                    .dir
                    .join(format!("{}-{}", system.name(), profile.name())),
                base_port: plan.base_port + profile.port_offset(),
                members: plan.members,
                profile,
                restart_delay: plan.restart_delay.unwrap_or(profile.restart_delay()),
                synchronous: "off",
                via_router,
                pool_mode: None,
                archive: false,
            };
            let outcome = async {
                let cluster = LocalCluster::start(spec).await?;
                measure(&cluster, plan, plan.runs, &mut next_run, out).await
            }
            .await;
            if let Err(e) = outcome {
                note_error(out, system, profile, e);
            }
        }
    }
    for (i, &profile) in pick(System::Patroni, &plan.patroni_profiles)
        .iter()
        .enumerate()
    {
        let spec = PatroniSpec {
            dir: plan.dir.join(format!("patroni-{}", profile.name())),
            base_port: plan.patroni_base_port + 40 * i as u16,
            members: plan.members,
            profile,
            checks: checks_for(profile),
        };
        let runs = if profile.effective_timing().ttl >= 30.0 {
            plan.slow_runs
        } else {
            plan.runs
        };
        let outcome = async {
            let cluster = PatroniCluster::start(spec).await?;
            measure(&cluster, plan, runs, &mut next_run, out).await
        }
        .await;
        if let Err(e) = outcome {
            note_error(out, System::Patroni, profile, e);
        }
    }
}

fn note_error(out: &mut Comparison, system: System, profile: Profile, e: CompareError) {
    let message = format!("{} {}: {e}", system.name(), profile.name());
    eprintln!("error: {message}");
    out.errors.push(message);
}

/// Every scenario on one cluster, then every live agent's memory.
async fn measure<T: Target>(
    target: &T,
    plan: &ComparePlan,
    runs: usize,
    next_run: &mut i32,
    out: &mut Comparison,
) -> Result<(), CompareError> {
    let leader = target.wait_whole(Duration::from_secs(240)).await?;
    // Behind HAProxy the write port opens only once the checks saw the leader up (seed
    // checks: rise 2 × inter 3 s), which can be after the member table is whole.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match writer::create_table(&target.write_endpoints(&leader)).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!("creating the bench table: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for crash in scenarios(&plan.scenarios) {
        scenario::crash_runs(
            target,
            crash,
            runs,
            plan.window_limit,
            next_run,
            &mut out.runs,
        )
        .await?;
    }
    target.wait_whole(target.whole_limit()).await?;
    for member in target.members() {
        let pid = target.agent_pid(&member)?;
        match memory::read(pid) {
            Ok(m) => {
                println!(
                    "[{} {} memory] {member} agent pid {pid}: VmRSS {:.1} MiB",
                    target.system().name(),
                    target.profile().name(),
                    m.rss_kb as f64 / 1024.0
                );
                out.memory.push(AgentMemory {
                    system: target.system(),
                    profile: target.profile(),
                    member,
                    pid,
                    after_s: 0.0,
                    rss_kb: m.rss_kb,
                    peak_kb: m.peak_kb,
                });
            }
            Err(e) => tracing::warn!("cannot read {member}'s agent memory: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_keep_the_canonical_order() {
        assert_eq!(
            scenarios(&[Crash::Node, Crash::Switchover]),
            vec![Crash::Switchover, Crash::Node]
        );
        assert_eq!(
            scenarios(&[Crash::NodeTwice, Crash::SwitchoverThenNode]),
            vec![Crash::SwitchoverThenNode, Crash::NodeTwice]
        );
        assert!(scenarios(&[]).is_empty());
    }
}
