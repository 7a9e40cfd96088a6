//! The two backends the conformance suite runs against: the in-memory store (on tokio's
//! paused clock) and a real etcd started for each test on free ports.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use pgbaton_dcs::{
    ClusterPath, Dcs, EtcdDcs, EtcdProcess, EtcdProcessError, MemoryDcs, MemoryStore, ETCD_BIN,
};

/// What a conformance test needs from a DCS backend.
pub trait Backend: Sized {
    type D: Dcs;
    async fn start() -> Self;
    /// A new handle for `member` (a new agent process, as far as the DCS can tell).
    fn handle(&self, member: &str, ttl: Duration) -> Self::D;
    fn request_timeout(&self) -> Duration;
    /// What an Unreachable error must name.
    fn endpoint_label(&self) -> String;
    /// Make the DCS stop answering `dcs` (etcd: SIGSTOP the server).
    fn cut(&mut self, dcs: &Self::D);
    /// Undo `cut`.
    fn heal(&mut self, dcs: &Self::D);
}

pub fn cluster_path() -> ClusterPath {
    ClusterPath::new("/service/", "conformance")
}

pub struct Memory {
    store: MemoryStore,
}

impl Backend for Memory {
    type D = MemoryDcs;

    async fn start() -> Self {
        Memory {
            store: MemoryDcs::new_store(),
        }
    }

    fn handle(&self, member: &str, ttl: Duration) -> MemoryDcs {
        MemoryDcs::new(&self.store, cluster_path(), member, ttl)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn endpoint_label(&self) -> String {
        "memory".to_string()
    }

    fn cut(&mut self, dcs: &MemoryDcs) {
        dcs.set_unreachable(true);
    }

    fn heal(&mut self, dcs: &MemoryDcs) {
        dcs.set_unreachable(false);
    }
}

pub struct Etcd {
    pub etcd: EtcdProcess,
    // Declared after `etcd` so the process is killed before its directory is removed.
    _dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Start a real etcd on free ports in a temporary directory; retries if a port was taken
/// by someone else in between.
pub async fn start_etcd() -> (EtcdProcess, tempfile::TempDir) {
    assert!(
        Path::new(ETCD_BIN).exists(),
        "etcd is not installed at {ETCD_BIN}: run `apt-get install -y etcd-server`"
    );
    let mut last_error = None;
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        match EtcdProcess::start(dir.path(), "test", client, peer).await {
            Ok(etcd) => return (etcd, dir),
            Err(e @ EtcdProcessError::BinaryMissing { .. }) => panic!("{e}"),
            Err(e) => last_error = Some(e),
        }
    }
    panic!("etcd did not start: {last_error:?}");
}

impl Backend for Etcd {
    type D = EtcdDcs;

    async fn start() -> Self {
        let (etcd, dir) = start_etcd().await;
        Etcd { etcd, _dir: dir }
    }

    fn handle(&self, member: &str, ttl: Duration) -> EtcdDcs {
        EtcdDcs::new(
            vec![self.etcd.endpoint()],
            cluster_path(),
            member,
            ttl,
            self.request_timeout(),
        )
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn endpoint_label(&self) -> String {
        self.etcd.endpoint()
    }

    fn cut(&mut self, _dcs: &EtcdDcs) {
        self.etcd.pause();
    }

    fn heal(&mut self, _dcs: &EtcdDcs) {
        self.etcd.resume();
    }
}
