//! A `pgbaton local up` cluster run by the bench: started in its own process group, stopped
//! with SIGTERM (and waited for) when the guard is dropped, even after a failure or Ctrl-C.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::members::{self, MemberRow};
use crate::profile::Profile;
use crate::writer::Endpoint;

/// What `local up` prints once the cluster is up.
const READY_LINE: &str = "Ctrl-C stops the cluster";
/// How long `local up` may take to stop its agents, PostgreSQL and etcd.
const STOP_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the pgbaton binary {0} does not exist: build it with `cargo build --release -p pgbaton` or pass --pgbaton")]
    NoBinary(PathBuf),
    #[error("starting `pgbaton local up`: {0}")]
    Spawn(std::io::Error),
    #[error("`pgbaton local up` exited ({status}) before the cluster came up; its log {log} ends with:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the cluster in {dir} did not come up within {secs} s; see {dir}/*/agent.log")]
    NotUp { dir: PathBuf, secs: u64 },
    #[error("`pgbaton ctl list` failed: {0}")]
    Ctl(String),
    #[error(transparent)]
    Parse(#[from] members::ParseError),
    #[error("the cluster did not become whole (one leader, all replicas streaming) within {secs} s: {last}; see {dir}/*/agent.log")]
    NotWhole {
        secs: u64,
        last: String,
        dir: PathBuf,
    },
    #[error("`pgbaton ctl switchover --leader {leader} --candidate {candidate}` failed: {output}")]
    Switchover {
        leader: String,
        candidate: String,
        output: String,
    },
    #[error("{file} does not hold a pid (is {member} running?)")]
    NoPid { file: PathBuf, member: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to start one benchmark cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub pgbaton: PathBuf,
    pub dir: PathBuf,
    pub base_port: u16,
    pub members: u8,
    pub profile: Profile,
    pub restart_delay: f64,
    /// `--synchronous` for `local up`: off, on or quorum.
    pub synchronous: &'static str,
    /// The client writes through the router's write address instead of to the members.
    pub via_router: bool,
    /// `--pool-mode` for `local up` (None: the router's default, session mode unpooled).
    pub pool_mode: Option<&'static str>,
    /// `--archive` for `local up` (a pgBackRest repository, WAL archived and restored).
    pub archive: bool,
}

/// A running local cluster; dropping it stops the cluster.
pub struct LocalCluster {
    pub spec: ClusterSpec,
    child: Option<Child>,
    /// stdout and stderr of `local up`.
    log: PathBuf,
    /// When the cluster reported itself up.
    pub up_at: Instant,
}

impl LocalCluster {
    /// Start `pgbaton local up` in a fresh directory and wait until it prints the member table.
    pub async fn start(spec: ClusterSpec) -> Result<LocalCluster, ClusterError> {
        if !spec.pgbaton.exists() {
            return Err(ClusterError::NoBinary(spec.pgbaton.clone()));
        }
        if spec.dir.exists() {
            std::fs::remove_dir_all(&spec.dir).map_err(io(&spec.dir))?;
        }
        let parent = spec.dir.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let name = spec
            .dir
            .file_name()
            .map_or_else(|| spec.profile.name().into(), |n| n.to_string_lossy());
        let log = parent.join(format!("{name}-local-up.log"));
        let out = File::create(&log).map_err(io(&log))?;
        let err = out.try_clone().map_err(io(&log))?;
        let mut cmd = Command::new(&spec.pgbaton);
        cmd.args(["local", "up", "--members"])
            .arg(spec.members.to_string())
            .arg("--dir")
            .arg(&spec.dir)
            .arg("--base-port")
            .arg(spec.base_port.to_string())
            .arg("--restart-delay")
            .arg(spec.restart_delay.to_string())
            .args(["--wait", "180"])
            .args(["--synchronous", spec.synchronous]);
        if let Some(mode) = spec.pool_mode {
            cmd.args(["--pool-mode", mode]);
        }
        if spec.archive {
            cmd.arg("--archive");
        }
        if let Some(t) = spec.profile.explicit_timing() {
            cmd.arg("--ttl")
                .arg(t.ttl.to_string())
                .arg("--loop-wait")
                .arg(t.loop_wait.to_string())
                .arg("--retry-timeout")
                .arg(t.retry_timeout.to_string());
        }
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        tracing::info!(profile = spec.profile.name(), dir = %spec.dir.display(), "starting: {cmd:?}");
        let child = cmd.spawn().map_err(ClusterError::Spawn)?;
        let mut cluster = LocalCluster {
            spec,
            child: Some(child),
            log,
            up_at: Instant::now(),
        };
        cluster.wait_up(Duration::from_secs(200)).await?;
        cluster.up_at = Instant::now();
        Ok(cluster)
    }

    async fn wait_up(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(READY_LINE) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    return Err(ClusterError::Exited {
                        status: status.to_string(),
                        log: self.log.clone(),
                        tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotUp {
                    dir: self.spec.dir.clone(),
                    secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn member_names(&self) -> Vec<String> {
        (1..=self.spec.members)
            .map(|k| format!("node{k}"))
            .collect()
    }

    pub fn member_dir(&self, member: &str) -> PathBuf {
        self.spec.dir.join(member)
    }

    /// The router's write address (`local up`: base port + 2).
    pub fn router_write_endpoint(&self) -> Endpoint {
        Endpoint {
            member: "router".into(),
            port: self.spec.base_port + 2,
        }
    }

    /// Every member's PostgreSQL, the given member first.
    pub fn endpoints_from(&self, first: &str) -> Vec<Endpoint> {
        let mut all: Vec<Endpoint> = (1..=self.spec.members as u16)
            .map(|k| Endpoint {
                member: format!("node{k}"),
                port: self.spec.base_port + 10 + k,
            })
            .collect();
        if let Some(i) = all.iter().position(|e| e.member == first) {
            all.rotate_left(i);
        }
        all
    }

    /// `pgbaton ctl <args>` against this cluster; its stdout, or its stderr as the error.
    async fn ctl(&self, args: &[&str], limit: Duration) -> Result<String, ClusterError> {
        let output = tokio::process::Command::new(&self.spec.pgbaton)
            .arg("ctl")
            .arg("--dcs")
            .arg(format!("127.0.0.1:{}", self.spec.base_port))
            .args(["--scope", "local"])
            .args(args)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(limit, output)
            .await
            .map_err(|_| {
                ClusterError::Ctl(format!("{args:?}: no answer within {} s", limit.as_secs()))
            })?
            .map_err(|e| ClusterError::Ctl(e.to_string()))?;
        if !output.status.success() {
            return Err(ClusterError::Ctl(format!(
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The member table, from `pgbaton ctl list -f json`.
    pub async fn list(&self) -> Result<Vec<MemberRow>, ClusterError> {
        let json = self
            .ctl(&["list", "-f", "json"], Duration::from_secs(10))
            .await?;
        Ok(members::parse(&json)?)
    }

    /// `pgbaton ctl edit-config --force` with `args` (e.g. `-s key=value`).
    pub async fn edit_config(&self, args: &[&str]) -> Result<(), ClusterError> {
        let mut all = vec!["edit-config", "--force"];
        all.extend_from_slice(args);
        self.ctl(&all, Duration::from_secs(30)).await.map(|_| ())
    }

    /// A planned switchover with `pgbaton ctl switchover --force`; returns its output.
    /// Without a candidate, `ctl` leaves the choice to the cluster.
    pub async fn switchover(
        &self,
        leader: &str,
        candidate: Option<&str>,
    ) -> Result<String, ClusterError> {
        let mut cmd = tokio::process::Command::new(&self.spec.pgbaton);
        cmd.arg("ctl")
            .arg("--dcs")
            .arg(format!("127.0.0.1:{}", self.spec.base_port))
            .args(["--scope", "local", "switchover", "--leader", leader]);
        if let Some(c) = candidate {
            cmd.args(["--candidate", c]);
        }
        let output = cmd.arg("--force").kill_on_drop(true).output();
        let failed = |output: String| ClusterError::Switchover {
            leader: leader.to_string(),
            candidate: candidate.unwrap_or("(none named)").to_string(),
            output,
        };
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .map_err(|_| failed("no answer within 60 s".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return Err(failed(text.trim().to_string()));
        }
        Ok(text.trim().to_string())
    }

    /// Wait until the cluster is whole again; returns the leader's name.
    pub async fn wait_whole(&self, limit: Duration) -> Result<String, ClusterError> {
        let deadline = Instant::now() + limit;
        let mut last;
        loop {
            match self.list().await {
                Ok(rows) => match members::whole(&rows, self.spec.members as usize) {
                    Ok(leader) => return Ok(leader),
                    Err(why) => last = why,
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotWhole {
                    secs: limit.as_secs(),
                    last,
                    dir: self.spec.dir.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The pid in `<member>/agent.pid`.
    pub fn agent_pid(&self, member: &str) -> Result<i32, ClusterError> {
        read_pid(&self.member_dir(member).join("agent.pid"), member)
    }

    /// The first line of `<member>/data/postmaster.pid`.
    pub fn postmaster_pid(&self, member: &str) -> Result<i32, ClusterError> {
        read_pid(
            &self.member_dir(member).join("data").join("postmaster.pid"),
            member,
        )
    }

    /// SIGTERM `local up`, wait for it to stop everything; force only if it hangs.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        tracing::info!(
            profile = self.spec.profile.name(),
            "stopping the cluster (SIGTERM to local up, pid {pid})"
        );
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!(
            "local up did not stop within {} s; killing what it started",
            STOP_WAIT.as_secs()
        );
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        let _ = child.wait();
        kill_processes_using(&self.spec.dir);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_pid(file: &Path, member: &str) -> Result<i32, ClusterError> {
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| ClusterError::NoPid {
            file: file.to_path_buf(),
            member: member.to_string(),
        })
}

/// Last resort after `local up` hung: SIGKILL every process whose command line names our
/// cluster directory (the agents, their postmasters and etcd, all started by this bench).
pub fn kill_processes_using(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            tracing::warn!(pid, "killing leftover process");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
