//! The agent's DCS port in the real-runtime simulation: the in-memory DCS behind a link that a
//! fault can cut (requests and answers then hang, as over a partition or to an etcd without
//! quorum: the agent's own time bounds end them) or slow down (each way up to a delay drawn
//! from the member's seeded generator).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbaton_dcs::{
    ClusterPath, ClusterState, Dcs, DcsError, FailoverDoc, HistoryEntry, LeaseAck, MemberDoc,
    MemoryDcs, StatusDoc, SyncDoc,
};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::pg::SimPostgres;

/// `Link::stop_stage`: no SIGSTOP pending.
pub(crate) const STOP_NONE: u8 = 0;
/// Waiting for a read that shows the agent holding the leader key.
pub(crate) const STOP_ARMED: u8 = 1;
/// The next answer stops the agent.
const STOP_NEXT_ANSWER: u8 = 2;

/// One member's link to the DCS.
#[derive(Debug)]
pub(crate) struct Link {
    pub cut: AtomicBool,
    /// Each way, at most (0: answers at once).
    pub max_delay_ms: AtomicU64,
    /// A SIGSTOP `mid_cycle` (`STOP_*`): armed, it waits for the agent's next read of the
    /// cluster that shows it holding the leader key, then hits right after the answer to the
    /// first request the agent sends after that read: between the decision on the read and
    /// the rest of its actions (a promotion, a restart as primary).
    pub stop_stage: AtomicU8,
    rng: Mutex<StdRng>,
}

impl Link {
    pub fn new(rng: StdRng) -> Self {
        Link {
            cut: AtomicBool::new(false),
            max_delay_ms: AtomicU64::new(0),
            stop_stage: AtomicU8::new(STOP_NONE),
            rng: Mutex::new(rng),
        }
    }

    /// One way over the link (`answer`: back to the agent).
    async fn hop(&self, answer: bool) {
        if self.cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let max = self.max_delay_ms.load(Ordering::SeqCst);
        if max == 0 {
            if answer {
                // Even an immediate answer is a network round trip: whatever is ready to run
                // meanwhile (a job the agent just started, such as pg_promote) runs first.
                tokio::task::yield_now().await;
            }
            return;
        }
        let ms = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random_range(0..=max);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if self.cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

pub(crate) struct SimDcs {
    pub inner: MemoryDcs,
    pub link: Arc<Link>,
    /// Counts every time a member took the leader key or a restarted agent adopted the
    /// lease its key is attached to (when the store did it): the liveness check's clock
    /// starts again at each (a second failure is bounded on its own).
    pub takings: Arc<AtomicU64>,
    /// `RealFlaw::LeaseFromAnswerTime`.
    pub lease_from_answer: bool,
    /// The start of the member's agent this link belongs to (its PostgreSQL port knows
    /// whether that start still runs), to stop it (`Link::stop_stage`).
    pub agent: SimPostgres,
}

impl SimDcs {
    /// The request travels, the store does it, the answer travels back.
    async fn via<T>(&self, op: impl Future<Output = Result<T, DcsError>>) -> Result<T, DcsError> {
        self.round_trip(op, true).await
    }

    /// `via` for a read: an immediate answer does not let other tasks run first (the
    /// agents' first reads and claims at start keep the order they start in).
    async fn read<T>(&self, op: impl Future<Output = Result<T, DcsError>>) -> Result<T, DcsError> {
        self.round_trip(op, false).await
    }

    async fn round_trip<T>(
        &self,
        op: impl Future<Output = Result<T, DcsError>>,
        yields: bool,
    ) -> Result<T, DcsError> {
        self.link.hop(false).await;
        let answer = op.await;
        self.link.hop(yields).await;
        let stage = &self.link.stop_stage;
        if stage
            .compare_exchange(
                STOP_NEXT_ANSWER,
                STOP_NONE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            self.agent
                .stop_here("its decision as key holder, as its next request")
                .await;
        }
        answer
    }

    /// A keepalive proves the lease from when it was sent, not from when etcd saw it.
    async fn keepalive_sent_now(
        &self,
        op: impl Future<Output = Result<LeaseAck, DcsError>>,
    ) -> Result<LeaseAck, DcsError> {
        let sent_at = Instant::now();
        let ack = self.via(op).await?;
        if self.lease_from_answer {
            return Ok(LeaseAck {
                sent_at: Instant::now(),
                ..ack
            });
        }
        Ok(LeaseAck { sent_at, ..ack })
    }
}

impl Dcs for SimDcs {
    fn member_name(&self) -> &str {
        self.inner.member_name()
    }

    fn path(&self) -> &ClusterPath {
        self.inner.path()
    }

    async fn load(&self) -> Result<ClusterState, DcsError> {
        let state = self.read(self.inner.load()).await?;
        if state.leader_name() == Some(self.inner.member_name()) {
            let _ = self.link.stop_stage.compare_exchange(
                STOP_ARMED,
                STOP_NEXT_ANSWER,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        Ok(state)
    }

    async fn keepalive(&self) -> Result<LeaseAck, DcsError> {
        self.keepalive_sent_now(self.inner.keepalive()).await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        let taken = self
            .via(async {
                let taken = self.inner.acquire_leader().await;
                if matches!(taken, Ok(true)) {
                    self.takings.fetch_add(1, Ordering::SeqCst);
                }
                taken
            })
            .await;
        taken
    }

    async fn adopt_leader_lease(&self) -> Result<Option<LeaseAck>, DcsError> {
        let sent_at = Instant::now();
        let ack = self
            .via(async {
                let adopted = self.inner.adopt_leader_lease().await;
                if matches!(adopted, Ok(Some(_))) {
                    self.takings.fetch_add(1, Ordering::SeqCst);
                }
                adopted
            })
            .await?;
        Ok(ack.map(|ack| LeaseAck { sent_at, ..ack }))
    }

    async fn lease_remaining(&self, lease_id: i64) -> Result<Option<Duration>, DcsError> {
        self.read(self.inner.lease_remaining(lease_id)).await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        self.via(self.inner.release_leader()).await
    }

    async fn touch_member(&self, doc: &MemberDoc) -> Result<(), DcsError> {
        self.via(self.inner.touch_member(doc)).await
    }

    async fn claim_initialize(&self, value: &str) -> Result<bool, DcsError> {
        self.via(self.inner.claim_initialize(value)).await
    }

    async fn set_initialize(&self, expected: &str, value: &str) -> Result<bool, DcsError> {
        self.via(self.inner.set_initialize(expected, value)).await
    }

    async fn cancel_initialize(&self, expected: &str) -> Result<bool, DcsError> {
        self.via(self.inner.cancel_initialize(expected)).await
    }

    async fn set_config(
        &self,
        value: &serde_json::Value,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.via(self.inner.set_config(value, expected_revision))
            .await
    }

    async fn set_history(&self, history: &[HistoryEntry]) -> Result<bool, DcsError> {
        self.via(self.inner.set_history(history)).await
    }

    async fn set_status(&self, status: &StatusDoc) -> Result<bool, DcsError> {
        self.via(self.inner.set_status(status)).await
    }

    async fn set_sync(
        &self,
        doc: &SyncDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.via(self.inner.set_sync(doc, expected_revision)).await
    }

    async fn set_failover(
        &self,
        doc: &FailoverDoc,
        expected_revision: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.via(self.inner.set_failover(doc, expected_revision))
            .await
    }

    async fn delete_failover(&self) -> Result<(), DcsError> {
        self.via(self.inner.delete_failover()).await
    }

    async fn set_failsafe(
        &self,
        members: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, DcsError> {
        self.via(self.inner.set_failsafe(members)).await
    }

    async fn delete_member(&self, name: &str) -> Result<(), DcsError> {
        self.via(self.inner.delete_member(name)).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }
}
