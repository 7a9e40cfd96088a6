//! The peers' REST APIs and the host, as the simulated agents see them.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use pgbaton_agent::fence::Fence;
use pgbaton_agent::peers::Peers;
use pgbaton_agent::ports::host::{GuardProcess, Host};
use pgbaton_api::{Commands, NodeStatus};
use pgbaton_config::Credentials;
use tokio::sync::watch;
use tokio::time::Instant;

use super::pg::{lock, Shared};

/// The wall clock at virtual time 0 (2023-11-14).
pub(crate) const UNIX_MS_AT_START: u64 = 1_700_000_000_000;

/// What each member's agent last published for its REST API (None: no agent runs).
pub(crate) type Statuses = Arc<Mutex<Vec<Option<watch::Receiver<NodeStatus>>>>>;

/// Each member's REST write endpoints (the agent's `commands()`), for `POST /failsafe`
/// (None: no agent runs).
pub(crate) type Endpoints = Arc<Mutex<Vec<Option<Arc<dyn Commands>>>>>;

/// `GET /patroni` of another member: answered from what its agent published, when the two
/// members are linked and that agent runs (a stopped agent does not answer).
#[derive(Clone)]
pub(crate) struct SimPeers {
    pub world: Shared,
    pub statuses: Statuses,
    pub endpoints: Endpoints,
    pub me: usize,
}

impl SimPeers {
    /// The member an API URL names (members' addresses are their names), when this member
    /// can reach its REST API: linked, its agent running (a stopped agent does not answer).
    fn reachable(&self, api_url: &str) -> Option<usize> {
        let host = api_url.split("://").nth(1)?.split([':', '/']).next()?;
        let w = lock(&self.world);
        let peer = w.index_of(host)?;
        let member = &w.members[peer];
        (w.linked(self.me, peer) && member.agent_alive && !member.agent_frozen).then_some(peer)
    }
}

impl Peers for SimPeers {
    fn status(
        &self,
        api_url: String,
    ) -> impl Future<Output = Option<serde_json::Value>> + Send + 'static {
        let answer = (|| {
            let peer = self.reachable(&api_url)?;
            let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
            let status = statuses.get(peer)?.as_ref()?.borrow().clone();
            Some(pgbaton_api::patroni_json(&status))
        })();
        async move { answer }
    }

    /// `POST /failsafe` to another member: its agent's own handler answers (a promise, or
    /// a refusal), when the member is reachable; otherwise no answer (the caller's bound
    /// ends the wait).
    fn failsafe(
        &self,
        api_url: String,
        body: serde_json::Value,
        _auth: Option<Credentials>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let endpoint = self.reachable(&api_url).and_then(|peer| {
            let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            endpoints.get(peer)?.clone()
        });
        let leader = body["name"].as_str().unwrap_or_default().to_string();
        async move {
            let Some(endpoint) = endpoint else {
                return std::future::pending().await;
            };
            let outcome = endpoint.failsafe(&leader);
            if outcome.status == 200 {
                Ok(())
            } else {
                Err(format!("{}: {}", outcome.status, outcome.message))
            }
        }
    }
}

/// Wall-clock and monotonic time follow virtual time. No lease-guard process: the
/// in-process guard task, which outlives a killed agent here, stands for it; its file is
/// the member's `fence` in the world, kept across agent starts as the file is.
#[derive(Clone)]
pub(crate) struct SimHost {
    pub start: Instant,
    pub world: Shared,
    pub m: usize,
    /// Which start of the member's agent this host belongs to.
    pub incarnation: u64,
}

impl Host for SimHost {
    fn unix_now_ms(&self) -> u64 {
        UNIX_MS_AT_START + self.start.elapsed().as_millis() as u64
    }

    fn fences_out_of_process(&self) -> bool {
        true
    }

    fn spawn_lease_guard(&self, _file: &Path) -> Option<GuardProcess> {
        None
    }

    fn monotonic_ms(&self) -> u64 {
        1_000_000 + self.start.elapsed().as_millis() as u64
    }

    fn write_fence(&self, _file: &Path, fence: Fence) -> std::io::Result<()> {
        // Only a running agent writes the file: the guard task of a killed one, which stays
        // here to stand for the `pgbaton lease-guard` process, only reads.
        let mut w = lock(&self.world);
        let member = &mut w.members[self.m];
        if member.incarnation == self.incarnation && member.agent_alive {
            member.fence = Some(fence);
        }
        Ok(())
    }

    fn read_fence(&self, _file: &Path) -> Option<Fence> {
        lock(&self.world).members[self.m].fence
    }
}
