//! The command line (`chaos --duration SECONDS [--faults LIST] [--seed N] [--mode sync|async]
//! ...`), parsed by clap and then validated into [`Settings`], the checked form the run uses.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::error::ChaosError;
use crate::fault_kind::FaultKind;

/// Replication mode of the cluster under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `synchronous_mode: true`: no acknowledged write may be lost.
    Sync,
    /// Asynchronous replication: lost acknowledged writes are reported, not an error.
    Async,
}

/// How the clients reach the member accepting writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// libpq multi-host, `target_session_attrs=read-write`: every member in order.
    Libpq,
    /// `pgbaton router` on the client host: its write listener.
    Router,
}

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Fault injection on a pgbaton cluster whose hosts are network namespaces, with a \
             Jepsen-style write checker. Needs root. The last line printed is \
             `chaos: faults=<n> acked=<n> lost=<n> dual_primary=<n> unrecovered=<n> max_gap_s=<x> \
             leaderless_s=<x>`."
)]
pub struct Args {
    /// How long faults are injected, in seconds (setup and the final checks come on top).
    #[arg(long)]
    pub duration: u64,
    /// Comma list of faults, or `all`: kill-postgres, kill-agent, kill-node, pause, partition,
    /// leader-etcd, leader-replicas, etcd-split (needs --etcd 3), etcd-kill, delay, loss,
    /// switchover, switchover-then-kill, failover-twice, replica-away.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Seed of the fault schedule (which fault, when, for how long, on which host).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Mode::Sync)]
    pub mode: Mode,
    /// With --mode sync: `synchronous_mode_strict: true`.
    #[arg(long)]
    pub strict: bool,
    /// Number of PostgreSQL member hosts.
    #[arg(long, default_value_t = 3)]
    pub members: u8,
    /// Number of etcd member hosts: 1 or 3.
    #[arg(long, default_value_t = 1)]
    pub etcd: u8,
    /// The leader lease ttl in seconds (loop_wait = ttl/4, retry_timeout = 3/8 ttl).
    #[arg(long, default_value_t = 4.0)]
    pub ttl: f64,
    /// Number of concurrent writing clients.
    #[arg(long, default_value_t = 3)]
    pub clients: u16,
    /// Number of reading clients (each alternates a leader-path and a replica read; 0: none).
    #[arg(long, default_value_t = 2)]
    pub readers: u16,
    /// How writers (and the readers' leader path) reach the leader: libpq multi-host, or
    /// through `pgbaton router` run on the client host.
    #[arg(long, value_enum, default_value_t = Via::Libpq)]
    pub via: Via,
    /// The pgbaton binary to test (copied into the run directory first). Default:
    /// target/release/pgbaton of this workspace.
    #[arg(long, env = "PGBATON_BIN")]
    pub pgbaton: Option<PathBuf>,
    /// Seconds to wait, after every fault is healed, for one leader and all others streaming.
    #[arg(long, default_value_t = 60)]
    pub converge_timeout: u64,
    /// Copy every log (agents, PostgreSQL, etcd, the fault timeline) into this directory
    /// before the run directory is removed.
    #[arg(long)]
    pub keep_logs: Option<PathBuf>,
}

/// The validated settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration_s: u64,
    pub faults: Vec<FaultKind>,
    pub seed: u64,
    pub mode: Mode,
    pub strict: bool,
    pub members: u8,
    pub etcd: u8,
    pub ttl: f64,
    pub clients: u16,
    pub readers: u16,
    pub via: Via,
    pub pgbaton: PathBuf,
    pub converge_timeout_s: u64,
    pub keep_logs: Option<PathBuf>,
}

impl Settings {
    /// loop_wait and retry_timeout derived from ttl so that loop_wait + 2 x retry_timeout = ttl.
    pub fn loop_wait(&self) -> f64 {
        self.ttl / 4.0
    }

    pub fn retry_timeout(&self) -> f64 {
        self.ttl * 3.0 / 8.0
    }
}

/// Where the workspace's release build of pgbaton lives.
fn default_pgbaton() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/pgbaton")
}

impl TryFrom<Args> for Settings {
    type Error = ChaosError;

    fn try_from(a: Args) -> Result<Settings, ChaosError> {
        if a.duration == 0 {
            return Err(ChaosError::Usage(
                "--duration must be at least 1 second".into(),
            ));
        }
        if !(2..=9).contains(&a.members) {
            return Err(ChaosError::Usage(format!(
                "--members {} is out of range: use 2 to 9",
                a.members
            )));
        }
        if a.etcd != 1 && a.etcd != 3 {
            return Err(ChaosError::Usage(format!(
                "--etcd {} is not supported: use 1 or 3",
                a.etcd
            )));
        }
        if !(a.ttl >= 2.0 && a.ttl <= 60.0) {
            return Err(ChaosError::Usage(format!(
                "--ttl {} is out of range: use 2 (etcd's smallest lease) to 60 seconds",
                a.ttl
            )));
        }
        if a.clients == 0 {
            return Err(ChaosError::Usage("--clients must be at least 1".into()));
        }
        if a.strict && a.mode != Mode::Sync {
            return Err(ChaosError::Usage("--strict needs --mode sync".into()));
        }
        let faults = FaultKind::parse_list(&a.faults, a.etcd)?;
        let pgbaton = a.pgbaton.unwrap_or_else(default_pgbaton);
        if !pgbaton.exists() {
            return Err(ChaosError::MissingBinary(
                pgbaton,
                "build it with `cargo build --release -p pgbaton` or pass --pgbaton PATH",
            ));
        }
        Ok(Settings {
            duration_s: a.duration,
            faults,
            seed: a.seed,
            mode: a.mode,
            strict: a.strict,
            members: a.members,
            etcd: a.etcd,
            ttl: a.ttl,
            clients: a.clients,
            readers: a.readers,
            via: a.via,
            pgbaton,
            converge_timeout_s: a.converge_timeout,
            keep_logs: a.keep_logs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Settings, ChaosError> {
        let mut argv = vec!["chaos", "--duration", "10", "--pgbaton", "/bin/sh"];
        argv.extend_from_slice(extra);
        Settings::try_from(Args::parse_from(argv))
    }

    #[test]
    fn defaults_are_three_members_one_etcd_sync_ttl_four() {
        let s = parse(&[]).unwrap();
        assert_eq!((s.members, s.etcd, s.mode, s.ttl), (3, 1, Mode::Sync, 4.0));
        assert_eq!((s.loop_wait(), s.retry_timeout()), (1.0, 1.5));
        assert_eq!((s.via, s.readers), (Via::Libpq, 2));
        assert_eq!(parse(&["--via", "router"]).unwrap().via, Via::Router);
        assert!(!s.faults.contains(&FaultKind::EtcdSplit));
    }

    #[test]
    fn bad_values_are_refused_with_what_to_use() {
        let e = parse(&["--etcd", "2"]).unwrap_err().to_string();
        assert!(e.contains("use 1 or 3"), "{e}");
        let e = parse(&["--ttl", "1"]).unwrap_err().to_string();
        assert!(e.contains("use 2"), "{e}");
        let e = parse(&["--mode", "async", "--strict"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--strict needs --mode sync"), "{e}");
        let e = Settings::try_from(Args::parse_from([
            "chaos",
            "--duration",
            "5",
            "--pgbaton",
            "/nonexistent/pgbaton",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cargo build --release -p pgbaton"), "{e}");
    }
}
