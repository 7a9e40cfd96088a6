//! A block of 40 loopback ports reserved for one test cluster, so that tests running at the
//! same time (threads of one test binary, or nextest's one process per test) never collide.
//!
//! The reservation is an exclusive `flock` on `/tmp/pgbaton-it-ports/<base>.lock`, held for
//! the life of the [`PortBlock`]; on top of it every port of the block must bind free. Blocks
//! lie in 20000..32000, below Linux's ephemeral range (32768+), so that outgoing connections
//! never take one of them. Layout (the same as `pgbaton local up --base-port`): etcd client
//! `base`, peer `base+1`, member k's PostgreSQL `base+10+k`, REST API `base+20+k`.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

pub const BLOCK: u16 = 40;
const FIRST: u16 = 20000;
const SLOTS: u16 = 300;
const LOCK_DIR: &str = "/tmp/pgbaton-it-ports";

/// Ports reserved until dropped.
#[derive(Debug)]
pub struct PortBlock {
    pub base: u16,
    _lock: Flock<File>,
}

impl PortBlock {
    pub fn etcd_client(&self) -> u16 {
        self.base
    }

    pub fn etcd_peer(&self) -> u16 {
        self.base + 1
    }

    pub fn postgres(&self, k: u16) -> u16 {
        self.base + 10 + k
    }

    pub fn api(&self, k: u16) -> u16 {
        self.base + 20 + k
    }
}

/// Reserve a free block, starting the scan at a slot derived from the process id.
pub fn reserve() -> PortBlock {
    std::fs::create_dir_all(LOCK_DIR).expect("creating the port lock directory");
    let _ = std::fs::set_permissions(LOCK_DIR, std::fs::Permissions::from_mode(0o777));
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    for i in 0..SLOTS {
        let base = FIRST + ((start + i) % SLOTS) * BLOCK;
        let path = Path::new(LOCK_DIR).join(format!("{base}.lock"));
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if (base..base + BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return PortBlock { base, _lock: lock };
        }
    }
    panic!(
        "no free block of {BLOCK} ports on 127.0.0.1 in {FIRST}..{}",
        FIRST + SLOTS * BLOCK
    );
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}
