//! The PostgreSQL port: every operation the runtime does on the local server, its data
//! directory, its configuration files and its postmaster process, typed and grouped.
//! Production is [`LocalPostgres`] over `pgbaton_postgres` (one local server, its `PgSpec`,
//! the supervised postmaster); `pgbaton-sim` answers from its model of a server.
//!
//! The runtime keeps its own logic (polling until a started server answers, the order of a
//! job's steps, what to log): the port only does one thing per call. The runtime applies its
//! own time bounds where it needs them; `timeout` arguments are the operation's own bound.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgbaton_postgres::{
    self as pg, BootstrapCommand, Credentials, DataDirState, LogicalSlotSpec, PassFile, PgError,
    PgSpec, PgStatus, Postmaster, ReplicaMethod, RewindOutcome, SlotChanges, SlotPosition,
    StandbyConfig, StopMode, StreamTrouble, TimelineEnd, Upstream, WalLogScanner,
};
use tokio::sync::Mutex;

/// The postmaster handle is held by someone else just now (a job starting or stopping it):
/// try again at the next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The files the runtime writes for a start: postgresql.conf (+ base), pg_hba.conf, and
/// standby.signal with primary_conninfo iff `standby`.
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    pub parameters: BTreeMap<String, String>,
    pub hba: Vec<String>,
    pub standby: Option<StandbyConfig>,
    pub passfile: Option<PassFile>,
}

/// Follows the server log for an upstream saying it removed WAL this replica asked for.
pub trait WalLog: Send + Sync {
    /// What keeps the replica from streaming (a removed WAL segment, a forked history),
    /// once the log said so and until streaming starts.
    fn poll(&mut self) -> Option<StreamTrouble>;
}

impl WalLog for WalLogScanner {
    fn poll(&mut self) -> Option<StreamTrouble> {
        WalLogScanner::poll(self)
    }
}

/// Where a [`WalLog`] starts reading.
#[derive(Debug, Clone, Copy)]
pub enum LogFrom {
    /// What the server logs from now on (a start by this agent).
    End,
    /// The last `n` bytes too (a server adopted at agent start).
    Tail(u64),
}

/// The local PostgreSQL server. Cheap to clone (handles on shared state): jobs and background
/// rounds take a clone.
pub trait Postgres: Clone + Send + Sync + 'static {
    // --- Observation ----------------------------------------------------------------------

    /// The supervised postmaster runs (one that exited is forgotten, and logged, here).
    fn postmaster_running(&self) -> impl Future<Output = bool> + Send;
    /// Without waiting: whether the postmaster runs, or `Busy`.
    fn try_postmaster_running(&self) -> Result<bool, Busy>;
    /// Without waiting: the postmaster's pid (`None`: none supervised), or `Busy`.
    fn try_postmaster_pid(&self) -> Result<Option<u32>, Busy>;
    /// Everything the agent observes about the running server, in one connection.
    fn status(&self, timeout: Duration) -> impl Future<Output = Result<PgStatus, PgError>> + Send;
    /// What the data directory holds (pg_control of a stopped server).
    fn data_dir_state(&self) -> Result<DataDirState, PgError>;
    /// The history file of `timeline` (empty for timeline 1).
    fn timeline_history(&self, timeline: u32) -> Result<Vec<TimelineEnd>, PgError>;
    /// Where the oldest WAL segment in pg_wal starts.
    fn oldest_wal_lsn(&self) -> Result<Option<u64>, PgError>;
    /// A running setting as `SHOW` gives it.
    fn show(
        &self,
        setting: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, PgError>> + Send;
    /// The server log (named in error messages).
    fn log_file(&self) -> PathBuf;
    /// Follow the server log (see [`WalLog`]).
    fn wal_log(&self, from: LogFrom) -> Box<dyn WalLog>;

    // --- The postmaster -------------------------------------------------------------------

    /// At agent start: take over a postmaster that already runs on the data directory
    /// (its pid), after making sure the data directory's parent exists.
    fn adopt(&self) -> impl Future<Output = Result<Option<u32>, PgError>> + Send;
    /// Start the postmaster (not waiting until it answers); refused while one runs.
    fn spawn(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Stop the supervised postmaster (if any) and forget it.
    fn stop(
        &self,
        mode: StopMode,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// SIGHUP: `None` when no postmaster is supervised.
    fn reload(&self) -> impl Future<Output = Option<Result<(), PgError>>> + Send;
    /// SIGQUIT to `pid` at once (the lease guard): no waiting, no lock.
    fn quit_immediately(&self, pid: u32);

    // --- Configuration files and the data directory ----------------------------------------

    fn write_config(&self, files: &ConfigFiles) -> Result<(), PgError>;
    /// Rename the data directory aside (never delete); the new path.
    fn move_aside(&self, reason: &str) -> Result<PathBuf, PgError>;
    /// Put the history file of `timeline` into `pg_wal` unless one is there (lines: the
    /// earlier timelines of `ended` and where they ended); whether it wrote one.
    fn install_timeline_history(
        &self,
        timeline: u32,
        ended: &[(u32, u64)],
    ) -> Result<bool, PgError>;

    // --- Operations the jobs are made of ---------------------------------------------------

    fn initdb(&self, options: &[String]) -> impl Future<Output = Result<(), PgError>> + Send;
    fn ensure_users(
        &self,
        users: &[(String, Option<String>, Vec<String>)],
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    /// `bootstrap.method`: restore by command; the recovery parameters to start with.
    fn bootstrap_by_command(
        &self,
        method: &BootstrapCommand,
        scope: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, PgError>> + Send;
    fn wait_until_promoted(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    /// A new data directory copied from `from` (the methods in order, pg_basebackup alone
    /// when empty).
    fn create_replica(
        &self,
        from: &Upstream,
        methods: &[ReplicaMethod],
        scope: &str,
        passfile: Option<&PassFile>,
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    fn rewind(
        &self,
        from: &Upstream,
        passfile: Option<&PassFile>,
    ) -> impl Future<Output = Result<RewindOutcome, PgError>> + Send;
    fn promote(&self, timeout: Duration) -> impl Future<Output = Result<(), PgError>> + Send;
    fn checkpoint(&self, timeout: Duration) -> impl Future<Output = Result<(), PgError>> + Send;

    // --- Replication slots -----------------------------------------------------------------

    fn sync_physical_slots(
        &self,
        wanted: &BTreeSet<String>,
        keep: &BTreeSet<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<SlotChanges, PgError>> + Send;
    fn ensure_logical_slots(
        &self,
        wanted: &[LogicalSlotSpec],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<String>, PgError>> + Send;
    fn logical_slot_positions(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<BTreeMap<String, SlotPosition>, PgError>> + Send;
    fn drop_logical_slots(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<String>, PgError>> + Send;
    fn advance_slot(
        &self,
        name: &str,
        database: &str,
        lsn: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64, PgError>> + Send;
    /// The state file of slot `name` on the leader at `upstream`.
    fn read_slot_state(
        &self,
        upstream: &Upstream,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, PgError>> + Send;
    /// Install a copy of a slot (server stopped).
    fn install_slot_state(&self, name: &str, state: &[u8]) -> Result<(), PgError>;
}

/// The production adapter: the server of `spec` on this host, its postmaster a child of the
/// agent (or adopted at start).
#[derive(Clone)]
pub struct LocalPostgres {
    spec: Arc<PgSpec>,
    postmaster: Arc<Mutex<Option<Postmaster>>>,
}

impl LocalPostgres {
    pub fn new(spec: PgSpec) -> Self {
        LocalPostgres {
            spec: Arc::new(spec),
            postmaster: Arc::new(Mutex::new(None)),
        }
    }
}

impl Postgres for LocalPostgres {
    async fn postmaster_running(&self) -> bool {
        let mut slot = self.postmaster.lock().await;
        let alive = slot.as_mut().is_some_and(|pm| !pm.has_exited());
        if !alive && slot.is_some() {
            tracing::warn!("PostgreSQL exited");
            *slot = None;
        }
        alive
    }

    fn try_postmaster_running(&self) -> Result<bool, Busy> {
        let mut slot = self.postmaster.try_lock().map_err(|_| Busy)?;
        Ok(slot.as_mut().is_some_and(|pm| !pm.has_exited()))
    }

    fn try_postmaster_pid(&self) -> Result<Option<u32>, Busy> {
        let slot = self.postmaster.try_lock().map_err(|_| Busy)?;
        Ok(slot.as_ref().map(|pm| pm.pid()))
    }

    async fn status(&self, timeout: Duration) -> Result<PgStatus, PgError> {
        pg::query_status(&self.spec, timeout).await
    }

    fn data_dir_state(&self) -> Result<DataDirState, PgError> {
        pg::data_dir_state(&self.spec)
    }

    fn timeline_history(&self, timeline: u32) -> Result<Vec<TimelineEnd>, PgError> {
        pg::read_timeline_history(&self.spec.data_dir, timeline)
    }

    fn oldest_wal_lsn(&self) -> Result<Option<u64>, PgError> {
        pg::oldest_wal_lsn(&self.spec)
    }

    async fn show(&self, setting: &str, timeout: Duration) -> Result<String, PgError> {
        let client = pg::connect(&self.spec, timeout).await?;
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(|e| PgError::UnexpectedResult {
                what: format!("SHOW {setting}"),
                detail: e.to_string(),
            })?;
        Ok(row.get(0))
    }

    fn log_file(&self) -> PathBuf {
        self.spec.log_file.clone()
    }

    fn wal_log(&self, from: LogFrom) -> Box<dyn WalLog> {
        let log = &self.spec.log_file;
        Box::new(match from {
            LogFrom::End => WalLogScanner::from_end(log),
            LogFrom::Tail(n) => {
                let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
                WalLogScanner::from_offset(log, len.saturating_sub(n))
            }
        })
    }

    async fn adopt(&self) -> Result<Option<u32>, PgError> {
        if let Some(parent) = self.spec.data_dir.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                tracing::error!(dir = %parent.display(), error = %e, "cannot create the data directory's parent");
            }
        }
        let adopted = Postmaster::adopt(&self.spec)?;
        let pid = adopted.as_ref().map(|pm| pm.pid());
        if adopted.is_some() {
            *self.postmaster.lock().await = adopted;
        }
        Ok(pid)
    }

    async fn spawn(&self) -> Result<(), String> {
        let mut slot = self.postmaster.lock().await;
        if let Some(pm) = slot.as_mut() {
            if !pm.has_exited() {
                return Err(format!("PostgreSQL already runs (pid {})", pm.pid()));
            }
        }
        *slot = Some(Postmaster::spawn(&self.spec).map_err(|e| e.to_string())?);
        Ok(())
    }

    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), String> {
        let taken = self.postmaster.lock().await.take();
        match taken {
            Some(mut pm) => pm.stop(mode, timeout).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    async fn reload(&self) -> Option<Result<(), PgError>> {
        self.postmaster.lock().await.as_ref().map(|pm| pm.reload())
    }

    fn quit_immediately(&self, pid: u32) {
        use nix::sys::signal::{kill, Signal};
        let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGQUIT);
    }

    fn write_config(&self, files: &ConfigFiles) -> Result<(), PgError> {
        pg::write_config_with(
            &self.spec,
            &files.parameters,
            &files.hba,
            files.standby.as_ref(),
            files.passfile.as_ref(),
        )
    }

    fn move_aside(&self, reason: &str) -> Result<PathBuf, PgError> {
        pg::move_aside(&self.spec, reason)
    }

    fn install_timeline_history(
        &self,
        timeline: u32,
        ended: &[(u32, u64)],
    ) -> Result<bool, PgError> {
        pg::install_timeline_history(&self.spec, timeline, ended)
    }

    async fn initdb(&self, options: &[String]) -> Result<(), PgError> {
        pg::initdb(&self.spec, options).await
    }

    async fn ensure_users(
        &self,
        users: &[(String, Option<String>, Vec<String>)],
        timeout: Duration,
    ) -> Result<(), PgError> {
        pg::ensure_users(&self.spec, users, timeout).await
    }

    async fn bootstrap_by_command(
        &self,
        method: &BootstrapCommand,
        scope: &str,
    ) -> Result<BTreeMap<String, String>, PgError> {
        pg::bootstrap_by_command(&self.spec, method, scope).await
    }

    async fn wait_until_promoted(&self, timeout: Duration) -> Result<(), PgError> {
        pg::wait_until_promoted(&self.spec, timeout).await
    }

    async fn create_replica(
        &self,
        from: &Upstream,
        methods: &[ReplicaMethod],
        scope: &str,
        passfile: Option<&PassFile>,
    ) -> Result<(), PgError> {
        let ctx = pg::ReplicaContext { scope, passfile };
        pg::create_replica(&self.spec, from, methods, &ctx)
            .await
            .map(drop)
    }

    async fn rewind(
        &self,
        from: &Upstream,
        passfile: Option<&PassFile>,
    ) -> Result<RewindOutcome, PgError> {
        pg::rewind_with(&self.spec, from, passfile).await
    }

    async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        pg::promote(&self.spec, timeout).await
    }

    async fn checkpoint(&self, timeout: Duration) -> Result<(), PgError> {
        pg::checkpoint(&self.spec, timeout).await
    }

    async fn sync_physical_slots(
        &self,
        wanted: &BTreeSet<String>,
        keep: &BTreeSet<String>,
        timeout: Duration,
    ) -> Result<SlotChanges, PgError> {
        pg::sync_physical_slots(&self.spec, wanted, keep, timeout).await
    }

    async fn ensure_logical_slots(
        &self,
        wanted: &[LogicalSlotSpec],
        timeout: Duration,
    ) -> Result<Vec<String>, PgError> {
        pg::ensure_logical_slots(&self.spec, wanted, timeout).await
    }

    async fn logical_slot_positions(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, SlotPosition>, PgError> {
        pg::logical_slot_positions(&self.spec, timeout).await
    }

    async fn drop_logical_slots(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>, PgError> {
        pg::drop_logical_slots(&self.spec, names, timeout).await
    }

    async fn advance_slot(
        &self,
        name: &str,
        database: &str,
        lsn: u64,
        timeout: Duration,
    ) -> Result<u64, PgError> {
        pg::advance_slot(&self.spec, name, database, lsn, timeout).await
    }

    async fn read_slot_state(
        &self,
        upstream: &Upstream,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, PgError> {
        let credentials: &Credentials = self.spec.rewind_credentials();
        pg::read_slot_state(upstream, credentials, name, timeout).await
    }

    fn install_slot_state(&self, name: &str, state: &[u8]) -> Result<(), PgError> {
        pg::install_slot_state(&self.spec, name, state)
    }
}
