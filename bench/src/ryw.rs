//! `pgbaton-bench read-your-writes`: write-then-read pairs through the router's auto
//! listener on a three-member `local up --pool-mode transaction` cluster. Each pair inserts
//! a row (autocommit, on the leader) and reads it back in a `START TRANSACTION READ ONLY`
//! transaction; a read that misses the row is stale. Two phases: replicas replaying as
//! usual, then one replica held back by `recovery_min_apply_delay` (set on it with ALTER
//! SYSTEM). For the latency the router adds, the same read-only transaction runs without
//! a prior write through the read listener (same pool mode) in the same run, and the same
//! insert through the write listener.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::catchup::connect;
use crate::cluster::{ClusterSpec, LocalCluster};
use crate::profile::Profile;

pub struct RywPlan {
    pub pgbaton: PathBuf,
    pub dir: PathBuf,
    pub base_port: u16,
    /// Pairs with replicas replaying as usual.
    pub pairs: usize,
    /// Pairs with one replica delayed.
    pub delayed_pairs: usize,
    /// `recovery_min_apply_delay` of the delayed replica, in milliseconds.
    pub delay_ms: u64,
    pub clients: usize,
}

/// One phase's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    pub pairs: usize,
    pub stale: usize,
    /// Reads served by a replica (pg_is_in_recovery() in the read transaction).
    pub on_replica: usize,
    pub errors: usize,
    /// Latency of the read-only transaction after the client's own write, ms.
    pub read_ms: Vec<f64>,
    /// Latency of the insert (autocommit) through the auto listener, ms.
    pub write_ms: Vec<f64>,
    pub first_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub phases: Vec<Phase>,
    pub error: Option<String>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// One read-only transaction: (rows with `id`, in recovery).
async fn read(client: &mut Client, id: i64) -> Result<(i64, bool), tokio_postgres::Error> {
    let tx = client.build_transaction().read_only(true).start().await?;
    let row = tx
        .query_one(
            "SELECT count(*), pg_is_in_recovery() FROM ryw WHERE id = $1",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok((row.get(0), row.get(1)))
}

async fn insert(client: &Client, who: i32) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one("INSERT INTO ryw (client) VALUES ($1) RETURNING id", &[&who])
        .await?;
    Ok(row.get(0))
}

/// Where a phase writes and reads.
#[derive(Clone, Copy)]
struct Ports {
    write: u16,
    /// The same as `write`: one connection does both (the auto listener).
    read: u16,
}

/// `clients` clients, `pairs` pairs between them.
async fn pairs(name: &str, ports: Ports, pairs: usize, clients: usize) -> Phase {
    let mut tasks = Vec::new();
    for who in 0..clients {
        let count = pairs / clients + usize::from(who < pairs % clients);
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            let opened = async {
                let writer = connect(ports.write).await?;
                let reader = if ports.read == ports.write {
                    None
                } else {
                    Some(connect(ports.read).await?)
                };
                Ok::<_, String>((writer, reader))
            };
            let (mut client, mut reader) = match opened.await {
                Ok(c) => c,
                Err(e) => {
                    phase.errors = count;
                    phase.first_error = Some(e);
                    return phase;
                }
            };
            for _ in 0..count {
                let started = Instant::now();
                let id = match insert(&client, who as i32).await {
                    Ok(id) => id,
                    Err(e) => {
                        phase.errors += 1;
                        phase.first_error.get_or_insert(error_text(&e));
                        continue;
                    }
                };
                phase.write_ms.push(ms(started));
                let started = Instant::now();
                let on = match reader.as_mut() {
                    Some(r) => r,
                    None => &mut client,
                };
                match read(on, id).await {
                    Ok((seen, replica)) => {
                        phase.read_ms.push(ms(started));
                        phase.pairs += 1;
                        phase.stale += usize::from(seen != 1);
                        phase.on_replica += usize::from(replica);
                    }
                    Err(e) => {
                        phase.errors += 1;
                        phase.first_error.get_or_insert(error_text(&e));
                    }
                }
            }
            phase
        }));
    }
    let mut total = Phase {
        name: name.to_string(),
        ..Phase::default()
    };
    for task in tasks {
        if let Ok(p) = task.await {
            total.pairs += p.pairs;
            total.stale += p.stale;
            total.on_replica += p.on_replica;
            total.errors += p.errors;
            total.read_ms.extend(p.read_ms);
            total.write_ms.extend(p.write_ms);
            if total.first_error.is_none() {
                total.first_error = p.first_error;
            }
        }
    }
    total
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

pub async fn run(plan: &RywPlan) -> Outcome {
    let mut out = Outcome::default();
    if let Err(e) = run_into(plan, &mut out).await {
        out.error = Some(e);
    }
    out
}

async fn run_into(plan: &RywPlan, out: &mut Outcome) -> Result<(), String> {
    let spec = ClusterSpec {
        pgbaton: plan.pgbaton.clone(),
        dir: plan.dir.join("ryw"),
        base_port: plan.base_port,
        members: 3,
        profile: Profile::Default,
        restart_delay: 1.0,
        synchronous: "off",
        via_router: true,
        pool_mode: Some("transaction"),
        archive: false,
    };
    let cluster = LocalCluster::start(spec).await.map_err(|e| e.to_string())?;
    let leader = cluster
        .wait_whole(Duration::from_secs(180))
        .await
        .map_err(|e| e.to_string())?;
    let auto = plan.base_port + 5;
    let setup = connect(plan.base_port + 2).await?;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS ryw (id bigserial PRIMARY KEY, client int)")
        .await
        .map_err(|e| error_text(&e))?;
    // The router's replicas must be readable (streaming, within max_lag) before it starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Without read-your-writes first: the insert on the write listener, the read on the
    // read listener (transaction pools both).
    let plain = Ports {
        write: plan.base_port + 2,
        read: plan.base_port + 3,
    };
    let auto = Ports {
        write: auto,
        read: auto,
    };
    out.phases.push(
        pairs(
            "without: write listener, then read listener",
            plain,
            plan.pairs,
            plan.clients,
        )
        .await,
    );
    out.phases
        .push(pairs("auto, replicas replaying", auto, plan.pairs, plan.clients).await);

    let delayed = cluster
        .member_names()
        .into_iter()
        .find(|m| *m != leader)
        .ok_or("no replica")?;
    let port = cluster
        .endpoints_from(&delayed)
        .first()
        .map(|e| e.port)
        .ok_or("no port")?;
    let replica = connect(port).await?;
    let sql = format!(
        "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
        plan.delay_ms
    );
    for sql in [sql.as_str(), "SELECT pg_reload_conf()"] {
        replica
            .batch_execute(sql)
            .await
            .map_err(|e| error_text(&e))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let name = format!("auto, {delayed} delayed {} ms", plan.delay_ms);
    out.phases
        .push(pairs(&name, auto, plan.delayed_pairs, plan.clients).await);
    for sql in [
        "ALTER SYSTEM RESET recovery_min_apply_delay",
        "SELECT pg_reload_conf()",
    ] {
        replica
            .batch_execute(sql)
            .await
            .map_err(|e| error_text(&e))?;
    }
    drop(cluster);
    Ok(())
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

pub fn report(out: &Outcome, plan: &RywPlan) -> String {
    let mut text = format!(
        "read-your-writes through the auto listener: 3 members, pool_mode transaction, {} clients\n\n",
        plan.clients
    );
    text.push_str("| phase | pairs | stale reads | reads on a replica | errors | read p50 / p99 ms | write p50 / p99 ms |\n|---|---|---|---|---|---|---|\n");
    for p in &out.phases {
        let share = if p.pairs == 0 {
            0.0
        } else {
            100.0 * p.on_replica as f64 / p.pairs as f64
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} ({share:.1} %) | {} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
            p.name,
            p.pairs,
            p.stale,
            p.on_replica,
            p.errors,
            percentile(&p.read_ms, 0.5),
            percentile(&p.read_ms, 0.99),
            percentile(&p.write_ms, 0.5),
            percentile(&p.write_ms, 0.99),
        ));
    }
    if let [plain, auto, ..] = out.phases.as_slice() {
        text.push_str(&format!(
            "\nadded by read-your-writes (auto, replicas replaying, against write + read listener): read p50 {:+.2} ms, p99 {:+.2} ms; write p50 {:+.2} ms, p99 {:+.2} ms\n",
            percentile(&auto.read_ms, 0.5) - percentile(&plain.read_ms, 0.5),
            percentile(&auto.read_ms, 0.99) - percentile(&plain.read_ms, 0.99),
            percentile(&auto.write_ms, 0.5) - percentile(&plain.write_ms, 0.5),
            percentile(&auto.write_ms, 0.99) - percentile(&plain.write_ms, 0.99),
        ));
    }
    for p in &out.phases {
        if let Some(e) = &p.first_error {
            text.push_str(&format!("{}: first error: {e}\n", p.name));
        }
    }
    if let Some(e) = &out.error {
        text.push_str(&format!("run failed: {e}\n"));
    }
    text
}
