//! [`Cluster`]: a real etcd and N `pgbaton agent --config` processes the test controls one by
//! one (no supervisor): kill an agent, its postmaster or both, start an agent again, stop and
//! restart etcd. Dropping the guard kills every process it started (agents, every postmaster
//! of its data directories, etcd) and removes the temp dir, also when the test panics (then
//! it first prints the tail of every log, so a failure explains itself).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgbaton_dcs::{load_cluster, ClusterPath, ClusterState, EtcdProcess};
use tempfile::TempDir;

use super::config::{member_yaml, MemberPorts, Timing};
use super::ports::{self, PortBlock};
use super::procs;

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const PGBATON: &str = env!("CARGO_BIN_EXE_pgbaton");

/// Panic with the install command when a binary the tests need is missing.
pub fn require_binaries() {
    assert!(
        Path::new(ETCD_BIN).exists(),
        "{ETCD_BIN} is missing: install it with `apt-get install -y etcd-server`"
    );
    assert!(
        Path::new(PG_BIN).join("postgres").exists(),
        "{PG_BIN}/postgres is missing: install it with `apt-get install -y postgresql-15`"
    );
}

/// A temp dir under /tmp the postgres user can enter.
pub fn temp_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a temp dir under /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 on the temp dir");
    dir
}

pub struct Cluster {
    pub scope: String,
    pub timing: Timing,
    pub ports: PortBlock,
    root: PathBuf,
    dir: Option<TempDir>,
    etcd: Option<EtcdProcess>,
    /// The client port of the etcd the members use (this cluster's own, or another's).
    etcd_port: u16,
    agents: BTreeMap<String, Child>,
    /// Every member that has a directory (data dirs to clean up).
    members: Vec<String>,
}

impl Cluster {
    /// etcd plus `n` agents (node1..nodeN) with pgbaton's default timings.
    pub async fn start(n: u16) -> Cluster {
        Cluster::start_with(n, Timing::default()).await
    }

    pub async fn start_with(n: u16, timing: Timing) -> Cluster {
        let mut cluster = Cluster::unstarted("it", timing, None);
        cluster.start_etcd().await;
        cluster.start_members(n);
        cluster
    }

    /// `n` agents of the cluster `scope` in the etcd of `other` (two clusters in one DCS
    /// namespace, as `ctl move` needs).
    pub fn start_beside(other: &Cluster, scope: &str, n: u16) -> Cluster {
        let mut cluster = Cluster::unstarted(scope, other.timing, Some(other.etcd_port));
        cluster.start_members(n);
        cluster
    }

    fn unstarted(scope: &str, timing: Timing, etcd_port: Option<u16>) -> Cluster {
        require_binaries();
        let dir = temp_dir("pgbaton-it-");
        let root = dir.path().to_path_buf();
        let ports = ports::reserve();
        Cluster {
            scope: scope.to_string(),
            timing,
            etcd_port: etcd_port.unwrap_or(ports.etcd_client()),
            ports,
            root,
            dir: Some(dir),
            etcd: None,
            agents: BTreeMap::new(),
            members: Vec::new(),
        }
    }

    fn start_members(&mut self, n: u16) {
        let cluster = self;
        for k in 1..=n {
            let name = format!("node{k}");
            cluster.add_member(&name);
            cluster.start_agent(&name);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The members other than `name`, in order (the replicas of a leader).
    pub fn others(&self, name: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| *m != name)
            .cloned()
            .collect()
    }

    /// Names of members that have a directory, in order.
    pub fn members(&self) -> Vec<String> {
        self.members.clone()
    }

    fn k(name: &str) -> u16 {
        name.trim_start_matches("node")
            .parse()
            .unwrap_or_else(|_| panic!("member names are node<k>, not {name}"))
    }

    pub fn member_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.member_dir(name).join("data")
    }

    pub fn pg_port(&self, name: &str) -> u16 {
        self.ports.postgres(Self::k(name))
    }

    pub fn api_port(&self, name: &str) -> u16 {
        self.ports.api(Self::k(name))
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.member_dir(name).join("pgbaton.yml")
    }

    pub fn agent_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.member_dir(name).join("agent.log")).unwrap_or_default()
    }

    /// Create the member's directory and configuration (no agent yet).
    pub fn add_member(&mut self, name: &str) {
        let member_dir = self.member_dir(name);
        std::fs::create_dir_all(&member_dir).expect("creating the member dir");
        std::fs::set_permissions(&member_dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 on the member dir");
        let ports = MemberPorts {
            etcd: self.etcd_port,
            postgres: self.pg_port(name),
            api: self.api_port(name),
        };
        let yaml = member_yaml(&self.scope, name, &member_dir, &ports, self.timing);
        std::fs::write(self.config_path(name), yaml).expect("writing pgbaton.yml");
        if !self.members.iter().any(|m| m == name) {
            self.members.push(name.to_string());
        }
    }

    /// Start `pgbaton agent --config` for the member, its output appended to agent.log.
    pub fn start_agent(&mut self, name: &str) {
        self.start_agent_with_env(name, &[]);
    }

    /// [`Cluster::start_agent`] with extra environment variables.
    pub fn start_agent_with_env(&mut self, name: &str, env: &[(&str, &str)]) {
        if let Some(child) = self.agents.get_mut(name) {
            if matches!(child.try_wait(), Ok(None)) {
                panic!("the agent of {name} runs already");
            }
        }
        let log_path = self.member_dir(name).join("agent.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("opening agent.log");
        let log_err = log.try_clone().expect("cloning the agent.log handle");
        let child = Command::new(PGBATON)
            .arg("agent")
            .arg("--config")
            .arg(self.config_path(name))
            .env("PGBATON_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawning pgbaton agent");
        self.agents.insert(name.to_string(), child);
    }

    /// The pid of the member's running agent.
    pub fn agent_pid(&self, name: &str) -> i32 {
        self.agents
            .get(name)
            .map(|c| c.id() as i32)
            .unwrap_or_else(|| panic!("{name} has no running agent"))
    }

    /// SIGKILL the agent alone; its PostgreSQL keeps running.
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut child) = self.agents.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL the postmaster alone (the agent keeps running). Returns its pid.
    pub fn kill_postmaster(&self, name: &str) -> i32 {
        procs::kill_postmaster_only(&self.data_dir(name))
            .unwrap_or_else(|| panic!("{name} has no running postmaster"))
    }

    /// The whole node dies: the agent and every PostgreSQL process.
    pub fn kill_node(&mut self, name: &str) {
        self.kill_agent(name);
        procs::kill_postmaster_group(&self.data_dir(name));
    }

    pub fn etcd_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.etcd_port)
    }

    /// SIGKILL etcd (its data stays for `start_etcd`).
    pub fn stop_etcd(&mut self) {
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop();
        }
    }

    /// Start etcd (again) on the same data dir and ports.
    pub async fn start_etcd(&mut self) {
        let etcd = EtcdProcess::start(
            &self.root.join("etcd"),
            "etcd",
            self.ports.etcd_client(),
            self.ports.etcd_peer(),
        )
        .await
        .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        self.etcd = Some(etcd);
    }

    pub fn path(&self) -> ClusterPath {
        ClusterPath::new("/service/", &self.scope)
    }

    /// One read of the cluster in etcd.
    pub async fn state(&self) -> anyhow::Result<ClusterState> {
        let state = load_cluster(
            &[self.etcd_endpoint()],
            &self.path(),
            Duration::from_secs(2),
        )
        .await?;
        Ok(state)
    }

    /// Every `state` word member `name` wrote to its member key after etcd revision
    /// `after`, in order, repeats folded: etcd keeps each version, and a watch from a past
    /// revision replays them, so a state that lasted a fraction of a second is not missed
    /// the way polling would miss it.
    #[allow(dead_code)]
    pub async fn member_states_after(&self, name: &str, after: i64) -> anyhow::Result<Vec<String>> {
        use etcd_client::{Client, EventType, WatchOptions};
        let key = self.path().member_key(name);
        let mut client = Client::connect([self.etcd_endpoint()], None).await?;
        let now = client.get(key.as_str(), None).await?;
        let Some(last) = now.kvs().first().map(|kv| kv.mod_revision()) else {
            anyhow::bail!("no member key {key}");
        };
        let mut stream = client
            .watch(
                key.as_str(),
                Some(WatchOptions::new().with_start_revision(after + 1)),
            )
            .await?;
        let mut states = Vec::<String>::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, stream.message()).await else {
                anyhow::bail!("the watch of {key} did not reach revision {last} within 10 s");
            };
            let Some(response) = message? else {
                anyhow::bail!("the watch of {key} ended early");
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() == EventType::Put {
                    let doc: serde_json::Value = serde_json::from_slice(kv.value())?;
                    if let Some(state) = doc["state"].as_str() {
                        if states.last().map(String::as_str) != Some(state) {
                            states.push(state.to_string());
                        }
                    }
                }
                if kv.mod_revision() >= last {
                    return Ok(states);
                }
            }
        }
    }

    /// The etcd revision now.
    #[allow(dead_code)]
    pub async fn etcd_revision(&self) -> anyhow::Result<i64> {
        Ok(self.state().await?.revision)
    }

    /// The last lines of every agent.log and postgresql.log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for name in &self.members {
            let dir = self.member_dir(name);
            out.push_str(&format!(
                "\n===== {name} agent.log (last 40 lines) =====\n{}\n",
                procs::tail(&dir.join("agent.log"), 40)
            ));
            out.push_str(&format!(
                "===== {name} postgresql.log (last 10 lines) =====\n{}\n",
                procs::tail(&dir.join("postgresql.log"), 10)
            ));
        }
        out
    }

    /// Panic naming what was awaited, with the logs.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.log_tails())
    }

    /// Poll `check` every 200 ms until it holds; past `timeout`, fail naming `what` (with
    /// the logs).
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            if Instant::now() > deadline {
                self.fail(&format!("{what}: not within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until the leader key names a member whose document says running master.
    pub async fn wait_for_leader(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.state().await {
                Ok(state) => {
                    if let (Some(name), Some(doc)) = (state.leader_name(), state.leader_member()) {
                        if doc.state == "running" && doc.is_primary_role() {
                            return name.to_string();
                        }
                    }
                    last = format!(
                        "leader {:?}, members {:?}",
                        state.leader_name(),
                        state
                            .members
                            .iter()
                            .map(|(n, d)| format!("{n}:{}/{}", d.role, d.state))
                            .collect::<Vec<_>>()
                    );
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no leader within {timeout:?} ({last})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `names` are all running: the leader as master, the others streaming and
    /// published within 1 MiB of the leader's position (what a switchover to them needs:
    /// `maximum_lag_on_failover`). Returns the leader's name.
    pub async fn wait_until_streaming(&self, names: &[String], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.state().await {
                Ok(state) => {
                    let leader = state.leader_name().map(str::to_string);
                    let optime = state.leader_optime().unwrap_or(0);
                    let ok = names.iter().all(|n| {
                        state.members.get(n).is_some_and(|d| {
                            d.state == "running"
                                && if Some(n) == leader.as_ref() {
                                    d.is_primary_role()
                                } else {
                                    !d.is_primary_role()
                                        && d.replication_state.as_deref() == Some("streaming")
                                        && d.xlog_location.is_some_and(|at| {
                                            optime.saturating_sub(at) <= 1024 * 1024
                                        })
                                }
                        })
                    });
                    if let (true, Some(leader)) = (ok, &leader) {
                        return leader.clone();
                    }
                    last = format!(
                        "leader {leader:?}, members {:?}",
                        state
                            .members
                            .iter()
                            .map(|(n, d)| format!(
                                "{n}:{}/{}/{:?}/tl{:?}",
                                d.role, d.state, d.replication_state, d.timeline
                            ))
                            .collect::<Vec<_>>()
                    );
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{names:?} not all running and streaming within {timeout:?} ({last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every current member running and streaming.
    pub async fn wait_until_all_streaming(&self, timeout: Duration) -> String {
        let names = self.members();
        self.wait_until_streaming(&names, timeout).await
    }

    /// `pgbaton ctl --dcs <etcd> --scope <scope> <args>`.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(PGBATON)
            .arg("ctl")
            .arg("--dcs")
            .arg(self.etcd_endpoint())
            .arg("--scope")
            .arg(&self.scope)
            .args(args)
            .output()
            .expect("running pgbaton ctl")
    }

    /// `pgbaton ctl ARGS`, which must succeed: its standard output (the test fails with
    /// both outputs otherwise).
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        if !out.status.success() {
            self.fail(&format!(
                "ctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctl list -f json`, parsed.
    pub fn ctl_list_json(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["list", "-f", "json"]);
        assert!(
            out.status.success(),
            "ctl list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctl list -f json printed no JSON array ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for name in names {
            self.kill_agent(&name);
        }
        for name in self.members.clone() {
            kill_postmasters_of(&self.member_dir(&name));
        }
        if let Some(dir) = &self.dir {
            pgbaton_testkit::release_shared_memory_under(dir.path());
        }
        self.stop_etcd();
        if std::env::var_os("PGBATON_IT_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping {}", dir.keep().display());
            }
        }
        self.dir.take();
    }
}

/// SIGKILL the postmaster groups of the member's data dir and of any copy moved aside
/// (`data.<reason>.<stamp>`), then wait until they are gone so the dir can be removed.
pub fn kill_postmasters_of(member_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(member_dir) else {
        return;
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("data") {
            if let Some(pid) = procs::kill_postmaster_group(&entry.path()) {
                pids.push(pid);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| procs::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
