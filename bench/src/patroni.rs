//! A Patroni 3.0 cluster behind HAProxy for the side-by-side comparison: its own etcd, one
//! Patroni per member (run as the `postgres` user, PostgreSQL 15 data under the bench
//! directory) and HAProxy with the seed's write/read backends. Everything is started in its
//! own process group and stopped when the guard is dropped, also after a failure or Ctrl-C.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

use crate::cluster::kill_processes_using;
use crate::members::{self, MemberRow};
use crate::patroni_config::{self, Checks, Ports};
use crate::profile::Profile;
use crate::scenario::RunError;
use crate::target::{System, Target};
use crate::writer::{self, Endpoint};

pub const PATRONI: &str = "/usr/bin/patroni";
pub const PATRONICTL: &str = "/usr/bin/patronictl";
pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const ETCD: &str = "/usr/bin/etcd";
const SCOPE: &str = "bench";
/// How long Patroni may take to stop its PostgreSQL on SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(40);

#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error("{0} is missing: apt-get install -y {1}")]
    Missing(&'static str, &'static str),
    #[error("there is no `postgres` user: apt-get install -y postgresql-15")]
    NoPostgresUser,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not listen on 127.0.0.1:{port} within {secs} s; see {log}")]
    NotListening {
        what: &'static str,
        port: u16,
        secs: u64,
        log: PathBuf,
    },
    #[error("`patronictl {args}` failed: {output}")]
    Ctl { args: String, output: String },
    #[error(transparent)]
    Parse(#[from] members::ParseError),
    #[error("the Patroni cluster did not become whole (one leader, all replicas streaming) within {secs} s: {last}; see {dir}/node*/patroni.log")]
    NotWhole {
        secs: u64,
        last: String,
        dir: PathBuf,
    },
    #[error("{file} does not hold a pid (is {member}'s PostgreSQL running?)")]
    NoPid { file: PathBuf, member: String },
    #[error("no Patroni process runs for {0}")]
    NotRunning(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PatroniError + '_ {
    move |source| PatroniError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to start one Patroni cluster.
#[derive(Debug, Clone)]
pub struct PatroniSpec {
    pub dir: PathBuf,
    pub base_port: u16,
    pub members: u8,
    pub profile: Profile,
    pub checks: Checks,
}

/// A running Patroni cluster with its etcd and HAProxy; dropping it stops everything.
pub struct PatroniCluster {
    pub spec: PatroniSpec,
    ports: Ports,
    user: User,
    etcd: Option<Child>,
    haproxy: Option<Child>,
    agents: Mutex<HashMap<String, Child>>,
    /// When every member had registered.
    pub up_at: Instant,
}

/// Fail (with the install command) when a binary the comparison needs is missing.
pub fn check_binaries() -> Result<(), PatroniError> {
    for (bin, package) in [
        (PATRONI, "patroni"),
        (PATRONICTL, "patroni"),
        (HAPROXY, "haproxy"),
        (ETCD, "etcd-server"),
        ("/usr/lib/postgresql/15/bin/postgres", "postgresql-15"),
    ] {
        if !Path::new(bin).exists() {
            return Err(PatroniError::Missing(bin, package));
        }
    }
    Ok(())
}

impl PatroniCluster {
    /// Write the configuration, start etcd, the Patroni agents and HAProxy.
    pub async fn start(spec: PatroniSpec) -> Result<PatroniCluster, PatroniError> {
        check_binaries()?;
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(PatroniError::NoPostgresUser)?;
        if spec.dir.exists() {
            std::fs::remove_dir_all(&spec.dir).map_err(io(&spec.dir))?;
        }
        std::fs::create_dir_all(&spec.dir).map_err(io(&spec.dir))?;
        let ports = Ports {
            base: spec.base_port,
        };
        let mut cluster = PatroniCluster {
            spec,
            ports,
            user,
            etcd: None,
            haproxy: None,
            agents: Mutex::new(HashMap::new()),
            up_at: Instant::now(),
        };
        cluster.start_etcd().await?;
        for k in 1..=cluster.spec.members as u16 {
            cluster.write_node_config(k)?;
        }
        for name in cluster.members() {
            cluster.start_agent(&name)?;
        }
        cluster.start_haproxy().await?;
        cluster.up_at = Instant::now();
        Ok(cluster)
    }

    fn node_dir(&self, member: &str) -> PathBuf {
        self.spec.dir.join(member)
    }

    fn config_path(&self, member: &str) -> PathBuf {
        self.node_dir(member).join("patroni.yml")
    }

    fn index(member: &str) -> u16 {
        member.trim_start_matches("node").parse().unwrap_or(1)
    }

    fn write_node_config(&self, k: u16) -> Result<(), PatroniError> {
        let dir = self.node_dir(&format!("node{k}"));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let yaml = patroni_config::patroni_yaml(
            SCOPE,
            k,
            self.ports,
            &dir,
            self.spec.profile.effective_timing(),
        );
        let file = dir.join("patroni.yml");
        std::fs::write(&file, yaml).map_err(io(&file))?;
        for path in [&dir, &file] {
            chown(path.as_path(), Some(self.user.uid), Some(self.user.gid)).map_err(|e| {
                PatroniError::Io {
                    path: path.to_path_buf(),
                    source: e.into(),
                }
            })?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))
    }

    fn log_file(&self, name: &str) -> Result<(File, File), PatroniError> {
        let path = self.spec.dir.join(name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let err = out.try_clone().map_err(io(&path))?;
        Ok((out, err))
    }

    async fn start_etcd(&mut self) -> Result<(), PatroniError> {
        let (out, err) = self.log_file("etcd.log")?;
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client());
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer());
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(self.spec.dir.join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        self.etcd = Some(cmd.spawn().map_err(|source| PatroniError::Spawn {
            what: "etcd".into(),
            source,
        })?);
        wait_listening(
            "etcd",
            self.ports.etcd_client(),
            self.spec.dir.join("etcd.log"),
        )
        .await
    }

    async fn start_haproxy(&mut self) -> Result<(), PatroniError> {
        let cfg = self.spec.dir.join("haproxy.cfg");
        let text =
            patroni_config::haproxy_cfg(self.ports, self.spec.members as u16, self.spec.checks);
        std::fs::write(&cfg, text).map_err(io(&cfg))?;
        let (out, err) = self.log_file("haproxy.log")?;
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        self.haproxy = Some(cmd.spawn().map_err(|source| PatroniError::Spawn {
            what: "haproxy".into(),
            source,
        })?);
        wait_listening(
            "haproxy",
            self.ports.haproxy_write(),
            self.spec.dir.join("haproxy.log"),
        )
        .await
    }

    /// Start (or restart) one member's Patroni as the postgres user.
    fn start_agent(&self, member: &str) -> Result<(), PatroniError> {
        let dir = self.node_dir(member);
        let log = dir.join("patroni.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let err = out.try_clone().map_err(io(&log))?;
        let mut cmd = Command::new(PATRONI);
        cmd.arg(self.config_path(member))
            .uid(self.user.uid.as_raw())
            .gid(self.user.gid.as_raw())
            .env("HOME", &dir)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(|source| PatroniError::Spawn {
            what: format!("patroni for {member}"),
            source,
        })?;
        tracing::info!(member, pid = child.id(), "started patroni");
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = agents.insert(member.to_string(), child) {
            let _ = old.try_wait();
        }
        Ok(())
    }

    async fn patronictl(&self, args: &[&str]) -> Result<String, PatroniError> {
        let output = tokio::process::Command::new(PATRONICTL)
            .arg("-c")
            .arg(self.config_path("node1"))
            .args(args)
            .kill_on_drop(true)
            .output();
        let failed = |output: String| PatroniError::Ctl {
            args: args.join(" "),
            output,
        };
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .map_err(|_| failed("no answer within 60 s".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(format!("{stdout}{stderr}").trim().to_string()));
        }
        Ok(stdout)
    }

    async fn list(&self) -> Result<Vec<MemberRow>, PatroniError> {
        let out = self.patronictl(&["list", "-f", "json"]).await?;
        Ok(members::parse(&out)?)
    }

    /// Patroni 3.0.2 shows a streaming replica as `running`: ask the leader's PostgreSQL
    /// how many replicas stream from it.
    async fn streaming_replicas(&self, leader: &str) -> Result<i64, String> {
        let endpoint = self.member_endpoint(leader);
        let client = writer::connect(&endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0))
    }

    async fn whole_once(&self) -> Result<String, String> {
        let rows = self.list().await.map_err(|e| e.to_string())?;
        let running: Vec<MemberRow> = rows
            .into_iter()
            .map(|mut r| {
                if r.role != "Leader" && r.state == "running" {
                    r.state = "streaming".into();
                }
                r
            })
            .collect();
        let leader = members::whole(&running, self.spec.members as usize)?;
        let streaming = self.streaming_replicas(&leader).await?;
        if streaming + 1 < self.spec.members as i64 {
            return Err(format!(
                "{streaming} replicas stream from the leader {leader}"
            ));
        }
        Ok(leader)
    }

    /// Stop every Patroni (which stops its PostgreSQL), then HAProxy and etcd.
    pub fn stop(&mut self) {
        let mut agents = std::mem::take(self.agents.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (member, child) in agents.iter_mut() {
            tracing::info!(member, "stopping patroni (SIGTERM)");
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        for (member, child) in agents.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                tracing::warn!(member, "patroni did not stop in time; killing its group");
                let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        // Postmasters run in their own sessions: kill whatever is left under our directory.
        kill_processes_using(&self.spec.dir);
        for child in [self.haproxy.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            stop_group(child);
        }
    }
}

fn stop_group(mut child: Child) {
    let group = Pid::from_raw(-(child.id() as i32));
    let _ = kill(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(group, Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_listening(what: &'static str, port: u16, log: PathBuf) -> Result<(), PatroniError> {
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(PatroniError::NotListening {
        what,
        port,
        secs: limit.as_secs(),
        log,
    })
}

fn read_pid(file: &Path, member: &str) -> Result<i32, PatroniError> {
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| PatroniError::NoPid {
            file: file.to_path_buf(),
            member: member.to_string(),
        })
}

impl Target for PatroniCluster {
    fn system(&self) -> System {
        System::Patroni
    }

    fn profile(&self) -> Profile {
        self.spec.profile
    }

    fn members(&self) -> Vec<String> {
        (1..=self.spec.members)
            .map(|k| format!("node{k}"))
            .collect()
    }

    fn whole_limit(&self) -> Duration {
        Duration::from_secs_f64(self.spec.profile.effective_timing().ttl * 4.0 + 120.0)
    }

    async fn wait_whole(&self, limit: Duration) -> Result<String, RunError> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.whole_once().await {
                Ok(leader) => return Ok(leader),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(PatroniError::NotWhole {
                    secs: limit.as_secs(),
                    last,
                    dir: self.spec.dir.clone(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn write_endpoints(&self, _leader: &str) -> Vec<Endpoint> {
        vec![Endpoint {
            member: "haproxy".into(),
            port: self.ports.haproxy_write(),
        }]
    }

    fn member_endpoint(&self, member: &str) -> Endpoint {
        Endpoint {
            member: member.to_string(),
            port: self.ports.postgres(Self::index(member)),
        }
    }

    fn agent_pid(&self, member: &str) -> Result<i32, RunError> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        Ok(agents
            .get(member)
            .map(|c| c.id() as i32)
            .ok_or_else(|| PatroniError::NotRunning(member.to_string()))?)
    }

    fn postmaster_pid(&self, member: &str) -> Result<i32, RunError> {
        let file = self.node_dir(member).join("data").join("postmaster.pid");
        Ok(read_pid(&file, member)?)
    }

    async fn revive(&self, member: &str) -> Result<(), RunError> {
        {
            let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(child) = agents.get_mut(member) {
                let _ = child.wait();
            }
        }
        Ok(self.start_agent(member)?)
    }

    async fn switchover(&self, leader: &str, candidate: Option<&str>) -> Result<String, RunError> {
        // Without --candidate, patronictl 3.0.2 with --force sends no candidate and Patroni
        // picks the healthiest replica itself.
        let mut args = vec!["switchover", "--leader", leader];
        if let Some(c) = candidate {
            args.extend(["--candidate", c]);
        }
        args.push("--force");
        let out = self.patronictl(&args).await?;
        if !out.contains("Successfully switched over") {
            return Err(PatroniError::Ctl {
                args: args.join(" "),
                output: out.trim().to_string(),
            }
            .into());
        }
        Ok(out)
    }

    async fn list(&self) -> Result<Vec<MemberRow>, RunError> {
        Ok(PatroniCluster::list(self).await?)
    }

    fn agent_log(&self, member: &str) -> (PathBuf, &'static str) {
        (self.node_dir(member).join("patroni.log"), "pg_rewind")
    }
}
