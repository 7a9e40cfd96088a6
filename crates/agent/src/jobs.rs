//! Background operations on PostgreSQL: one at a time, their outcome observed by the loop.
//!
//! The HA loop must keep renewing the lease while initdb, pg_basebackup, pg_rewind or a
//! start run, so these run as tasks; the loop only sees `JobView` (running, failed, idle).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgbaton_core::{JobKind, JobView};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::ports::Postgres;

/// How a background operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    Failed(String),
    /// It could not reach the member it reads from and changed nothing locally.
    SourceUnreachable(String),
}

impl From<String> for JobFailure {
    fn from(error: String) -> Self {
        JobFailure::Failed(error)
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobFailure::Failed(e) | JobFailure::SourceUnreachable(e) => f.write_str(e),
        }
    }
}

pub struct JobRunner {
    current: Option<(JobKind, JoinHandle<Result<(), JobFailure>>)>,
    /// Kept until another job starts, so the core can react to the failure.
    failed: Option<(JobKind, JobFailure)>,
    /// Woken when a job ends.
    wake: Arc<Notify>,
}

impl JobRunner {
    pub fn new(wake: Arc<Notify>) -> Self {
        JobRunner {
            current: None,
            failed: None,
            wake,
        }
    }

    /// Collect a finished job's outcome and say what runs now.
    pub async fn view(&mut self) -> JobView {
        if let Some((kind, handle)) = &mut self.current {
            if !handle.is_finished() {
                return JobView::Running(*kind);
            }
            let kind = *kind;
            let outcome = match handle.await {
                Ok(result) => result,
                Err(e) if e.is_cancelled() => Err(JobFailure::Failed("cancelled".to_string())),
                Err(e) => Err(JobFailure::Failed(format!("panicked: {e}"))),
            };
            self.current = None;
            match outcome {
                Ok(()) => {
                    tracing::info!(job = ?kind, "operation finished");
                    self.failed = None;
                }
                Err(error) => {
                    tracing::warn!(job = ?kind, %error, "operation failed");
                    self.failed = Some((kind, error));
                }
            }
        }
        match &self.failed {
            Some((kind, JobFailure::Failed(error))) => JobView::Failed {
                kind: *kind,
                error: error.clone(),
            },
            Some((kind, JobFailure::SourceUnreachable(error))) => JobView::SourceUnreachable {
                kind: *kind,
                error: error.clone(),
            },
            None => JobView::Idle,
        }
    }

    pub fn is_running(&self) -> bool {
        self.current.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    /// Start a job. The caller makes sure none runs (or aborted it).
    pub fn start<F, E>(&mut self, kind: JobKind, job: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<JobFailure> + Send + 'static,
    {
        let wake = self.wake.clone();
        self.failed = None;
        tracing::info!(job = ?kind, "operation started");
        let handle = tokio::spawn(
            async move {
                let result = job.await.map_err(Into::into);
                wake.notify_one();
                result
            }
            .in_current_span(),
        );
        self.current = Some((kind, handle));
    }

    /// Abort the running job (an immediate stop preempts everything).
    pub async fn abort(&mut self) {
        if let Some((kind, handle)) = self.current.take() {
            handle.abort();
            let _ = handle.await;
            tracing::warn!(job = ?kind, "operation aborted");
        }
    }
}

/// Spawn the postmaster and wait until it answers, it exits, or `timeout` passes.
pub async fn start_and_wait(pg: &impl Postgres, timeout: Duration) -> Result<(), String> {
    pg.spawn().await?;
    wait_answers(pg, timeout).await
}

/// Poll until PostgreSQL answers a query; fail when the postmaster exits or on timeout.
pub async fn wait_answers(pg: &impl Postgres, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if pg.status(Duration::from_millis(1000)).await.is_ok() {
            return Ok(());
        }
        if !pg.postmaster_running().await {
            return Err(format!(
                "PostgreSQL exited during start; see {}",
                pg.log_file().display()
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "PostgreSQL did not accept connections within {:.1} s; see {}",
                timeout.as_secs_f64(),
                pg.log_file().display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
