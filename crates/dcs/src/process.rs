//! A real etcd server process, for tests and for `pgbaton local up`: a single-member
//! cluster on 127.0.0.1 with its data under a given directory, started in its own process
//! group and killed (SIGKILL of the whole group) on `stop()` and on Drop.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Where Debian's `etcd-server` package installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum EtcdProcessError {
    #[error("etcd binary not found at {path}: install it with `apt-get install -y etcd-server`")]
    BinaryMissing { path: String },
    #[error("cannot prepare etcd directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start etcd: {source}")]
    Spawn { source: std::io::Error },
    #[error("etcd exited during start-up ({status}); see its log {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("etcd did not answer on {endpoint} within {timeout:?}; see its log {log}:\n{tail}")]
    NotReady {
        endpoint: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
}

/// A running etcd; killed when dropped.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Option<Child>,
    pid: u32,
    endpoint: String,
    /// `http://127.0.0.1:<peer_port>`: how this etcd is told apart from another one
    /// answering on its client port (one that took the port first; ours then fails to bind).
    peer_url: String,
    log: PathBuf,
}

impl EtcdProcess {
    /// Start etcd with its data dir under `dir` (log in `dir/etcd.log`) and wait until it
    /// answers a read.
    pub async fn start(
        dir: &Path,
        name: &str,
        client_port: u16,
        peer_port: u16,
    ) -> Result<EtcdProcess, EtcdProcessError> {
        if !Path::new(ETCD_BIN).exists() {
            return Err(EtcdProcessError::BinaryMissing {
                path: ETCD_BIN.to_string(),
            });
        }
        let dir_err = |source| EtcdProcessError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let log = dir.join("etcd.log");
        let log_file = File::create(&log).map_err(dir_err)?;
        let log_err = log_file.try_clone().map_err(dir_err)?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(ETCD_BIN)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.join(format!("{name}.etcd")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .args([
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|source| EtcdProcessError::Spawn { source })?;
        let pid = child.id();
        let mut process = EtcdProcess {
            child: Some(child),
            pid,
            endpoint: format!("127.0.0.1:{client_port}"),
            peer_url: peer.clone(),
            log,
        };
        process.wait_ready().await?;
        tracing::info!(pid, endpoint = %process.endpoint, "etcd started");
        Ok(process)
    }

    async fn wait_ready(&mut self) -> Result<(), EtcdProcessError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let endpoints = vec![self.endpoint.clone()];
        let path = crate::model::ClusterPath::new("/", "pgbaton-startup-probe");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(EtcdProcessError::Exited {
                        status: status.to_string(),
                        log: self.log.clone(),
                        tail: self.log_tail(),
                    });
                }
            }
            // Ready when the etcd answering on our client port is ours (lists our peer
            // URL) and serves reads.
            let ours = crate::etcd::member_peer_urls(&endpoints, Duration::from_millis(500))
                .await
                .is_ok_and(|urls| urls.contains(&self.peer_url));
            if ours
                && crate::etcd::load_cluster(&endpoints, &path, Duration::from_millis(500))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let tail = self.log_tail();
                self.stop();
                return Err(EtcdProcessError::NotReady {
                    endpoint: self.endpoint.clone(),
                    timeout: START_TIMEOUT,
                    log: self.log.clone(),
                    tail,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `127.0.0.1:<client_port>`, as `EtcdDcs::new` takes it.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The path of etcd's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn signal(&self, signal: Signal) {
        if self.child.is_none() {
            return;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return;
        };
        if let Err(e) = killpg(Pid::from_raw(pid), signal) {
            tracing::warn!(pid, ?signal, "cannot signal etcd's process group: {e}");
        }
    }

    /// Kill etcd (SIGKILL to its process group) and reap it. Idempotent.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Freeze etcd (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Thaw a paused etcd (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
