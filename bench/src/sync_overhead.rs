//! `pgbaton-bench sync-overhead`: what synchronous replication costs a committing client.
//! pgbench (TPC-B-like, scale 10, 4 clients, 2 threads, 20 s) against the leader of a
//! `local up --synchronous off` cluster and then of a `--synchronous on` one, back to back
//! on the same machine, three times each; medians of tps and average latency, and ratios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{ClusterError, ClusterSpec, LocalCluster};
use crate::profile::Profile;
use crate::stats::summarize;
use crate::writer::{self, Endpoint, WriteError};

pub const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
/// The pgbench arguments of one measurement (after the connection options).
pub const PGBENCH_RUN: [&str; 6] = ["-c", "4", "-j", "2", "-T", "20"];
const SCALE: &str = "10";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{PGBENCH} is missing: apt-get install -y postgresql-15")]
    NoPgbench,
    #[error("running `pgbench {args}`: {detail}")]
    Pgbench { args: String, detail: String },
    #[error("pgbench printed no `{what}` line: {output}")]
    Unparsed { what: &'static str, output: String },
    #[error("no standby became synchronous on {member} within {secs} s (pg_stat_replication shows no sync/quorum standby)")]
    NoSyncStandby { member: String, secs: u64 },
}

/// One pgbench measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub tps: f64,
    pub latency_ms: f64,
}

/// Every sample per mode.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub off: Vec<Sample>,
    pub on: Vec<Sample>,
}

/// Read `tps = ... (without initial connection time)` and `latency average = ... ms`.
pub fn parse_pgbench(output: &str) -> Result<Sample, SyncError> {
    let number_after = |prefix: &str| {
        output.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    let unparsed = |what| SyncError::Unparsed {
        what,
        output: output.chars().take(500).collect(),
    };
    Ok(Sample {
        tps: number_after("tps = ").ok_or_else(|| unparsed("tps = "))?,
        latency_ms: number_after("latency average = ")
            .ok_or_else(|| unparsed("latency average = "))?,
    })
}

async fn pgbench(port: u16, args: &[&str]) -> Result<String, SyncError> {
    let all: Vec<String> = ["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .chain(std::iter::once("postgres".to_string()))
        .collect();
    let failed = |detail: String| SyncError::Pgbench {
        args: all.join(" "),
        detail,
    };
    let output = tokio::process::Command::new(PGBENCH)
        .args(&all)
        .env("PGPASSWORD", "postgres")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(failed(text.trim().to_string()));
    }
    Ok(text)
}

/// Wait until the leader's PostgreSQL has a synchronous (or quorum) standby.
async fn wait_sync_standby(leader: &Endpoint, limit: Duration) -> Result<(), SyncError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(client) = writer::connect(leader).await {
            let sql =
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')";
            if let Ok(row) = client.query_one(sql, &[]).await {
                if row.get::<_, i64>(0) > 0 {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(SyncError::NoSyncStandby {
        member: leader.member.clone(),
        secs: limit.as_secs(),
    })
}

/// Run the whole measurement; each cluster is stopped before the next starts.
pub async fn run(
    pgbaton: &Path,
    dir: &Path,
    base_port: u16,
    members: u8,
    repeats: usize,
) -> Result<SyncReport, SyncError> {
    if !Path::new(PGBENCH).exists() {
        return Err(SyncError::NoPgbench);
    }
    let mut report = SyncReport::default();
    for (mode, offset) in [("off", 200u16), ("on", 240)] {
        let spec = ClusterSpec {
            pgbaton: pgbaton.to_path_buf(),
            dir: dir.join(format!("sync-{mode}")),
            base_port: base_port + offset,
            members,
            profile: Profile::Default,
            restart_delay: 1.0,
            synchronous: mode,
            via_router: false,
            pool_mode: None,
            archive: false,
        };
        let cluster = LocalCluster::start(spec).await?;
        let leader = cluster.wait_whole(Duration::from_secs(120)).await?;
        let endpoint = cluster.endpoints_from(&leader).remove(0);
        if mode == "on" {
            wait_sync_standby(&endpoint, Duration::from_secs(60)).await?;
        }
        pgbench(endpoint.port, &["-i", "-q", "-s", SCALE]).await?;
        for i in 0..repeats {
            let out = pgbench(endpoint.port, &PGBENCH_RUN).await?;
            let sample = parse_pgbench(&out)?;
            println!(
                "[sync-overhead synchronous={mode} run {}] {:.1} tps, latency average {:.3} ms",
                i + 1,
                sample.tps,
                sample.latency_ms
            );
            match mode {
                "off" => report.off.push(sample),
                _ => report.on.push(sample),
            }
        }
        drop(cluster);
    }
    Ok(report)
}

impl SyncReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let med = |v: &[Sample], f: fn(&Sample) -> f64| {
            summarize(&v.iter().map(f).collect::<Vec<_>>()).map(|s| s.median)
        };
        let _ = writeln!(out, "## Synchronous commit overhead (pgbench -c 4 -j 2 -T 20, scale 10, TPC-B-like, to the leader)\n");
        let _ = writeln!(out, "| synchronous | runs | tps median | latency avg median (ms) | per-run tps | per-run latency (ms) |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (mode, v) in [("off", &self.off), ("on", &self.on)] {
            let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
            let _ = writeln!(
                out,
                "| {mode} | {} | {} | {} | {} | {} |",
                v.len(),
                fmt(med(v, |s| s.tps)),
                med(v, |s| s.latency_ms).map_or("-".into(), |x| format!("{x:.3}")),
                v.iter()
                    .map(|s| format!("{:.1}", s.tps))
                    .collect::<Vec<_>>()
                    .join(", "),
                v.iter()
                    .map(|s| format!("{:.3}", s.latency_ms))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if let (Some(off_tps), Some(on_tps), Some(off_lat), Some(on_lat)) = (
            med(&self.off, |s| s.tps),
            med(&self.on, |s| s.tps),
            med(&self.off, |s| s.latency_ms),
            med(&self.on, |s| s.latency_ms),
        ) {
            let _ = writeln!(
                out,
                "\nsync/async: tps ratio {:.2}, latency ratio {:.2}",
                on_tps / off_tps,
                on_lat / off_lat
            );
        }
        out
    }
}

/// Where the JSON goes if asked.
pub fn save(report: &SyncReport, path: &PathBuf) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))\nstarting vacuum...end.\ntransaction type: <builtin: TPC-B (sort of)>\nscaling factor: 10\nquery mode: simple\nnumber of clients: 4\nnumber of threads: 2\nmaximum number of tries: 1\nduration: 20 s\nnumber of transactions actually processed: 31234\nnumber of failed transactions: 0 (0.000%)\nlatency average = 2.561 ms\ninitial connection time = 12.345 ms\ntps = 1561.845621 (without initial connection time)\n";

    #[test]
    fn parses_tps_and_latency() {
        assert_eq!(
            parse_pgbench(OUTPUT).expect("pgbench output"),
            Sample {
                tps: 1561.845621,
                latency_ms: 2.561
            }
        );
    }

    #[test]
    fn missing_figures_are_named() {
        let err = parse_pgbench("latency average = 1.0 ms\n").unwrap_err();
        assert!(err.to_string().contains("tps = "), "{err}");
    }

    #[test]
    fn markdown_has_medians_and_ratio() {
        let s = |tps, latency_ms| Sample { tps, latency_ms };
        let report = SyncReport {
            off: vec![s(1000.0, 4.0), s(1200.0, 3.0), s(1100.0, 3.5)],
            on: vec![s(500.0, 8.0), s(550.0, 7.0), s(600.0, 7.5)],
        };
        let md = report.markdown();
        assert!(md.contains("| off | 3 | 1100.0 | 3.500 |"), "{md}");
        assert!(md.contains("tps ratio 0.50, latency ratio 2.14"), "{md}");
    }
}
