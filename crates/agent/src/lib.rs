//! The agent: the loop that observes, asks the core to decide, and carries the decision out.
//!
//! Each cycle: read the DCS (one range request), look at PostgreSQL (one connection),
//! ask peers for their positions when the cluster has no leader, call
//! `pgbaton_core::decide`, carry out the actions in order, publish the status for the REST
//! API, then sleep until the decision's `next_wake` or until something happens (the leader
//! key changes in etcd, PostgreSQL exits, a background operation ends).

pub mod commands;
mod declared_logical;
mod dynamic_config;
mod execute;
mod failsafe;
pub mod fence;
pub mod flaws;
mod guard;
mod host_watchdog;
mod jobs;
mod logical;
mod observe;
pub mod peers;
pub mod ports;
pub mod sd_notify;
pub mod settings;
pub mod shutdown;
mod status;
pub mod view;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use pgbaton_api::NodeStatus;
use pgbaton_config::{Config, DynamicConfig};
use pgbaton_core::{decide, HaConfig, MemberState, Millis};
use pgbaton_dcs::{ClusterState, Dcs, LeaseAck};
use pgbaton_postgres::{PgSpec, PgStatus};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use jobs::JobRunner;
use peers::{HttpPeers, Peers};
use ports::{Host, LocalPostgres, LogFrom, OsHost, Postgres};

/// Everything the agent knows between cycles. Only `state` is decision memory; the rest
/// is adapter bookkeeping (handles, the last reads, the lease proof).
pub struct Agent<D: Dcs, P: Peers = HttpPeers, G: Postgres = LocalPostgres, H: Host = OsHost> {
    cfg: Config,
    /// The dynamic configuration in force (DCS `config` over `bootstrap.dcs`).
    dynamic: DynamicConfig,
    ha: HaConfig,
    spec: PgSpec,
    dcs: Arc<D>,
    /// The core's memory.
    state: MemberState,
    /// Monotonic origin of the core's `Millis`.
    origin: Instant,
    /// The last keepalive etcd acknowledged (the lease proof).
    lease: Option<LeaseAck>,
    /// The lease our leader key is attached to, as last known (a DCS read naming us, our
    /// acquisition of the key, the adoption at start; None: the key is not ours). Only that
    /// lease proves leadership: a keepalive can return a new lease (the old one expired in
    /// etcd), which no key hangs on.
    key_lease: Option<i64>,
    /// The last successful DCS read.
    cluster: Option<ClusterState>,
    dcs_last_seen_unix: Option<u64>,
    /// The local PostgreSQL (its postmaster, files and queries).
    pg: G,
    /// The wall clock and the out-of-process lease guard.
    host: H,
    jobs: JobRunner,
    /// The member primary_conninfo points at, as last written by us.
    configured_upstream: Option<String>,
    /// A restart or reinitialize for the next cycle's decision (REST API or schedule).
    pending_command: Option<commands::PendingCommand>,
    /// Standby cluster: primary_conninfo points at the remote primary of `standby_cluster`,
    /// as last written by us.
    follows_remote_primary: bool,
    /// The synchronous_standby_names in force, as last written by us.
    configured_sync: Option<pgbaton_core::SyncStandbyNames>,
    last_pg_status: Option<PgStatus>,
    /// When the query behind `last_pg_status` was sent: its positions were read after that.
    last_pg_status_asked_at: Option<Instant>,
    status_tx: watch::Sender<NodeStatus>,
    /// Other members' REST APIs (their positions, failsafe rounds).
    peers: P,
    /// Woken by job ends and postmaster exits.
    wake: Arc<Notify>,
    /// Stops PostgreSQL at the demotion deadline even when this loop is busy.
    guard: guard::LeaseGuard,
    /// The lease deadline a previous start of this agent left for the primary that still
    /// runs (core time): enforced until this start has a lease of its own, or PostgreSQL no
    /// longer runs as a primary.
    inherited_deadline: Option<u64>,
    last_reason: String,
    /// PostgreSQL parameters changed in the DCS config: rewrite postgresql.conf and reload.
    parameters_changed: bool,
    last_leader: Option<String>,
    leader_changes: u64,
    /// A restart to carry out at its time (`POST /restart` with `schedule`).
    scheduled_restart: Option<pgbaton_api::ScheduledRestart>,
    /// Permanent logical slots: what the background maintenance found.
    logical: logical::SharedLogical,
    /// Declared publications and subscriptions (`logical:`): the background rounds' findings.
    declared_logical: declared_logical::SharedDeclared,
    /// A background round of physical slot maintenance runs (`SyncSlots`).
    physical_slots_busy: Arc<std::sync::atomic::AtomicBool>,
    /// Replica: when it last restarted to install copies of logical slots.
    last_slot_copy: Option<Instant>,
    /// Slots over the retained-WAL warning limit (warned once).
    slots_over_limit: std::collections::BTreeSet<String>,
    /// Failsafe leader: send time of the last round every member acknowledged.
    failsafe_acked_at: Option<Millis>,
    /// Failsafe member side, shared with the REST API.
    failsafe_member: failsafe::FailsafeMember,
    /// Replica: follows PostgreSQL's log since the agent started it, for an upstream saying
    /// it removed WAL the replica asked for.
    wal_log: Option<Box<dyn ports::WalLog>>,
    /// The host watchdog device (`watchdog:`), armed while this member runs a primary.
    watchdog: watchdog::Watchdog,
    /// `pgbackrest:`: stanza created and checked each time this member starts leading.
    repo_check: pgbaton_postgres::RepoCheck,
    /// Deliberate faults (simulator only; none without the `flaws` feature).
    flaws: flaws::Flaws,
}

/// The adapters an [`Agent`] runs with.
pub struct Ports<D, P, G, H> {
    pub dcs: D,
    pub peers: P,
    pub pg: G,
    pub host: H,
}

impl<D: Dcs, P: Peers> Agent<D, P> {
    /// The production agent: PostgreSQL as `cfg` describes it on this host.
    pub fn new(
        cfg: Config,
        dynamic: DynamicConfig,
        ha: HaConfig,
        dcs: D,
        status_tx: watch::Sender<NodeStatus>,
        peers: P,
    ) -> Self {
        let pg = LocalPostgres::new(settings::pg_spec(&cfg));
        let ports = Ports {
            dcs,
            peers,
            pg,
            host: OsHost,
        };
        Agent::with_ports(cfg, dynamic, ha, status_tx, ports)
    }
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    pub fn with_ports(
        cfg: Config,
        dynamic: DynamicConfig,
        ha: HaConfig,
        status_tx: watch::Sender<NodeStatus>,
        ports: Ports<D, P, G, H>,
    ) -> Self {
        let Ports {
            dcs,
            peers,
            pg,
            host,
        } = ports;
        let wake = Arc::new(Notify::new());
        let spec = settings::pg_spec(&cfg);
        let origin = Instant::now();
        let watchdog = watchdog::Watchdog::from_config(&cfg.watchdog, &ha, spec.run_as.as_deref());
        let fence = host.fences_out_of_process().then(|| fence_file(&cfg));
        let guard = guard::LeaseGuard::new(origin, host.monotonic_ms(), fence);
        Agent {
            spec,
            dynamic,
            ha,
            dcs: Arc::new(dcs),
            state: MemberState::new(),
            origin,
            lease: None,
            key_lease: None,
            cluster: None,
            dcs_last_seen_unix: None,
            pg,
            host,
            jobs: JobRunner::new(wake.clone()),
            configured_upstream: None,
            follows_remote_primary: false,
            pending_command: None,
            configured_sync: None,
            last_pg_status: None,
            last_pg_status_asked_at: None,
            status_tx,
            peers,
            wake,
            guard,
            inherited_deadline: None,
            last_reason: String::new(),
            parameters_changed: false,
            last_leader: None,
            leader_changes: 0,
            scheduled_restart: None,
            logical: Default::default(),
            declared_logical: Default::default(),
            physical_slots_busy: Default::default(),
            last_slot_copy: None,
            slots_over_limit: Default::default(),
            failsafe_acked_at: None,
            failsafe_member: failsafe::FailsafeMember::default(),
            wal_log: None,
            watchdog,
            repo_check: pgbaton_postgres::RepoCheck::new(settings::pgbackrest(&cfg)),
            flaws: Default::default(),
            cfg,
        }
    }

    /// Switch deliberate faults on (the simulator's checks of its checker).
    #[cfg(feature = "flaws")]
    pub fn with_flaws(mut self, on: Vec<flaws::Flaw>) -> Self {
        self.flaws = flaws::Flaws::new(on);
        self
    }

    fn now(&self) -> Millis {
        self.origin.elapsed().as_millis() as Millis
    }

    fn to_millis(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.origin).as_millis() as Millis
    }

    /// Until when the lease is certainly alive, in core time (while the host watchdog is
    /// armed, shorter by the time PostgreSQL is given to stop before the device is due).
    fn lease_valid_until(&self) -> Option<Millis> {
        // Found by the real-runtime simulation (failsafe mode over a slow DCS): a failsafe
        // leader whose key had expired renewed a newly granted lease and kept its primary
        // on it, past its failsafe right, while another member was promoted.
        let holds_key = |ack: &LeaseAck| self.key_lease == Some(ack.lease_id);
        self.lease.filter(holds_key).map(|ack| {
            let ttl = ack.ttl.min(Duration::from_millis(self.ha.ttl_ms));
            self.to_millis(ack.sent_at + ttl - self.watchdog.stop_margin())
        })
    }

    async fn startup(&mut self) {
        if self.ha.failsafe_mode {
            // This process may have promised a failsafe leader before it was restarted.
            self.failsafe_member
                .startup_grace(Duration::from_millis(self.ha.ttl_ms));
        }
        match self.pg.adopt().await {
            Ok(Some(pid)) => {
                tracing::info!(pid, "adopted a running PostgreSQL");
                // What it logged lately still tells whether its upstream lacks WAL.
                self.wal_log = Some(self.pg.wal_log(LogFrom::Tail(ADOPTED_LOG_TAIL)));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check for a running PostgreSQL"),
        }
        let timeout = Duration::from_millis(self.ha.retry_timeout_ms);
        match tokio::time::timeout(timeout, self.dcs.adopt_leader_lease()).await {
            Ok(Ok(Some(ack))) => {
                tracing::info!("the leader key names this member: keeping its lease");
                self.lease = Some(ack);
                self.key_lease = Some(ack.lease_id);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the leader key at start"),
            Err(_) => tracing::warn!("etcd did not answer in time at start"),
        }
    }

    /// The HA loop.
    pub async fn run(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
        mut local: tokio::sync::mpsc::Receiver<commands::LocalRequest>,
    ) -> anyhow::Result<()> {
        // The guard runs from the start, with the deadline a previous start left: startup
        // may wait for an unreachable DCS.
        self.inherit_lease_deadline();
        let lease_guard = tokio::spawn(
            self.guard
                .clone()
                .run(self.pg.clone(), self.host.clone())
                .in_current_span(),
        );
        self.startup().await;
        let mut dcs_events = self.dcs.subscribe();
        let pm_watch =
            tokio::spawn(watch_postmaster(self.pg.clone(), self.wake.clone()).in_current_span());
        let mut watchdog = if self.host.fences_out_of_process() {
            self.host.spawn_lease_guard(&fence_file(&self.cfg))
        } else {
            None
        };
        // systemd (Type=notify): ready once this member is in the cluster's member list.
        let mut systemd = crate::sd_notify::Notifier::from_env();
        loop {
            let obs = self.observe().await;
            let decision = decide(&self.state, &obs, &self.ha);
            let reason = decision.reason.to_string();
            if reason != self.last_reason {
                tracing::info!(phase = %decision.state.phase, "{reason}");
                self.last_reason = reason;
            } else {
                tracing::debug!(phase = %decision.state.phase, "{reason}");
            }
            self.state = decision.state.clone();
            // Before acting: a failsafe promise must not cross a claim decided just now.
            self.failsafe_member.set_state(
                self.state.phase,
                obs.pg.is_primary(),
                self.cluster.as_ref().and_then(|c| c.leader_name()),
                Duration::from_millis(self.ha.ttl_ms),
            );
            if self.status_tx.borrow().pg_role == pgbaton_api::PgRole::Primary
                && !obs.pg.is_primary()
            {
                // Before this cycle's DCS writes: giving the leader key up wakes the others,
                // who ask this member at once whether it still runs a primary.
                self.publish_status(&obs);
            }
            self.execute(&decision, &obs).await;
            self.answer_command(&decision);
            self.tend_watchdog(&obs);
            if !(obs.pg.is_primary() || obs.pg == pgbaton_core::LocalPg::Starting) {
                // No primary any more: the previous start's deadline has nothing to guard.
                self.inherited_deadline = None;
            }
            self.arm_lease_guard();
            self.run_scheduled_restart().await;
            if self.parameters_changed && !self.jobs.is_running() {
                self.parameters_changed = false;
                self.rewrite_config_and_reload(&obs).await;
            }
            self.publish_status(&obs);
            self.warn_retained_wal();
            let joined = obs
                .dcs
                .as_ref()
                .is_some_and(|v| v.members.contains_key(&self.cfg.name));
            systemd.cycle(joined, &self.last_reason);

            let wake_at = self.origin + Duration::from_millis(decision.next_wake);
            let leader_before = self
                .cluster
                .as_ref()
                .and_then(|c| c.leader_name().map(str::to_string));
            loop {
                tokio::select! {
                    // In this order when several are ready: one schedule per run (the
                    // simulator relies on it), and a due wake-up is never starved.
                    biased;
                    _ = tokio::time::sleep_until(wake_at) => break,
                    _ = self.wake.notified() => break,
                    Some(request) = local.recv() => {
                        self.handle_local_command(request).await;
                        break;
                    }
                    _ = shutdown.changed() => {
                        systemd.stopping();
                        pm_watch.abort();
                        lease_guard.abort();
                        self.shutdown().await;
                        self.guard.write_disarmed(&self.host);
                        if let Some(stop) = watchdog.take() {
                            stop();
                        }
                        return Ok(());
                    }
                    changed = dcs_events.changed() => {
                        if changed.is_err() { tokio::time::sleep_until(wake_at).await; break; }
                        // Every write in the cluster bumps the watch; only a change of the
                        // leader key (or initialize) is worth a cycle before next_wake. The
                        // read never delays a due cycle: over a slow DCS it can take the whole
                        // retry_timeout (found by the real-runtime simulation, seed 168632: a
                        // demoted leader slept 2.7 s in this read past its wake-up).
                        let check = self.leader_key_changed(&leader_before);
                        tokio::select! {
                            biased;
                            _ = tokio::time::sleep_until(wake_at) => break,
                            _ = self.wake.notified() => break,
                            changed = check => if changed { break; },
                        }
                    }
                }
            }
        }
    }

    /// A previous start of this agent left a deadline for the postmaster that still runs:
    /// keep enforcing it (before anything else, the DCS may be out of reach).
    fn inherit_lease_deadline(&mut self) {
        let Ok(Some(pid)) = self.pg.try_postmaster_pid() else {
            return;
        };
        if let Some(deadline) = self.guard.inherited(&self.host, pid) {
            tracing::info!(
                postmaster = pid,
                in_ms = deadline.saturating_sub(self.now()),
                "the previous agent left a lease deadline for the running PostgreSQL; enforcing it until this agent holds the lease"
            );
            self.inherited_deadline = Some(deadline);
            self.guard.arm(deadline);
        }
    }

    /// While PostgreSQL may be a writable primary, the guard stops it at the lease deadline
    /// minus the margin unless a renewal moves the deadline.
    fn arm_lease_guard(&mut self) {
        // (A member creating a new cluster runs its primary before it has a lease: no guard.)
        let leading = matches!(
            self.state.phase,
            pgbaton_core::Phase::Leader
                | pgbaton_core::Phase::Promoting
                | pgbaton_core::Phase::RestartingPrimary
                | pgbaton_core::Phase::HandingOver
        );
        // A failsafe leader's right counts like the lease (whichever lasts longer).
        let own = self.lease_valid_until().max(self.failsafe_valid_until());
        if own.is_some() && leading {
            self.inherited_deadline = None;
        }
        match (own, self.inherited_deadline) {
            (Some(until), _) if leading => self
                .guard
                .arm(until.saturating_sub(self.ha.demote_margin_ms)),
            (_, Some(deadline)) => self.guard.arm(deadline),
            _ => self.guard.disarm(),
        }
    }

    async fn leader_key_changed(&self, before: &Option<String>) -> bool {
        let timeout = Duration::from_millis(self.ha.retry_timeout_ms);
        match tokio::time::timeout(timeout, self.dcs.load()).await {
            Ok(Ok(state)) => {
                let now = state.leader_name().map(str::to_string);
                let init_changed =
                    self.cluster.as_ref().map(|c| &c.initialize) != Some(&state.initialize);
                &now != before || init_changed
            }
            _ => true,
        }
    }

    /// SIGTERM: stop PostgreSQL, then give the leader key up (so nothing writes after it is free).
    async fn shutdown(&mut self) {
        tracing::info!("shutting down: stopping PostgreSQL");
        self.jobs.abort().await;
        match self
            .pg
            .stop(pgbaton_postgres::StopMode::Fast, Duration::from_secs(30))
            .await
        {
            Ok(()) => self.watchdog.disarm("clean shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "fast stop failed (the watchdog, if armed, stays armed)")
            }
        }
        let timeout = Duration::from_millis(self.ha.retry_timeout_ms);
        if let Ok(Ok(true)) = tokio::time::timeout(timeout, self.dcs.release_leader()).await {
            tracing::info!("released the leader key");
        }
        tracing::info!("stopped");
    }
}

/// How much of the log of a PostgreSQL the agent adopted at start it reads back.
const ADOPTED_LOG_TAIL: u64 = 64 << 10;

/// Wake the loop at once when the supervised postmaster exits.
async fn watch_postmaster(pg: impl Postgres, wake: Arc<Notify>) {
    let mut was_running = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(running) = pg.try_postmaster_running() else {
            continue;
        };
        if was_running && !running {
            wake.notify_one();
        }
        was_running = running;
    }
}

/// The file the out-of-process lease guard reads: next to the data directory.
fn fence_file(cfg: &Config) -> std::path::PathBuf {
    let data_dir = std::path::Path::new(&cfg.postgresql.data_dir);
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    parent.join(format!(".{name}.pgbaton-lease"))
}
