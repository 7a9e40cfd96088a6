//! Declared publications and subscriptions (`logical:` of the dynamic configuration), kept
//! by the leader: the core asks for it each leader cycle (`PgAction::ApplyLogical`); this
//! runs one round at a time in the background (a slow server or an unreachable publisher
//! must not delay the lease renewal), at most every [`ROUND_EVERY`].
//!
//! A round, in each database the declaration names:
//! - creates and alters the declared publications and subscriptions to match (one object
//!   at a time: one that fails does not hold the others back), and drops those named under
//!   `logical.drop` (written by `ctl edit-config --force`) unless declared again;
//! - reads their state: the subscribers' slots on a publisher (lag in bytes and seconds,
//!   whether the slot is a permanent one that survives a failover here), each subscription's
//!   worker, table copies, error counts, and the last error its workers logged;
//! - checks what would break replication (tables without replica identity in an UPDATE or
//!   DELETE publication, sequences, subscribers' slots that a failover would lose, and, at
//!   most every [`CHECK_EVERY`], subscribed tables missing or lacking columns here).
//!
//! Each problem and each worker error is logged once while it lasts; `GET /patroni`
//! (`logical`), `ctl logical` and `/metrics` show the last round.
//!
//! Failovers: the catalog (publications, subscriptions, replication origins) reaches the
//! replicas by WAL, and so does each subscription's progress (the replication origin's
//! position is in every commit record its apply worker writes), so a promoted subscriber's
//! apply workers, which PostgreSQL starts once it is promoted, resume where the replica's
//! copy of the data stops. A publisher's slot survives the publisher's failover when it is
//! a permanent slot (`slots:`): the check says so when it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgbaton_api::{
    LogicalProblem, LogicalStatus, PublicationRow, SubscriberSlotRow, SubscriptionRow,
};
use pgbaton_config::{LogicalSpec, PublicationSpec, SubscriptionSpec};
use pgbaton_dcs::Dcs;
use pgbaton_postgres as pg;
use tokio::time::Instant;
use tracing::Instrument;

use super::{settings, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

/// A round in one database gives up after this long.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// At most one round per this long.
const ROUND_EVERY: Duration = Duration::from_secs(2);
/// The subscribed tables are compared with the publisher's at most this often (and when the
/// declaration changes).
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// ... and after this long when a publisher could not be reached for it.
const CHECK_AGAIN: Duration = Duration::from_secs(10);
/// An object whose change failed is tried again after this long (or when the declaration
/// changes): a subscription whose publisher is unreachable does not fill the server log
/// with a failed CREATE SUBSCRIPTION every round.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// A worker error older than this no longer makes a streaming subscription `error`.
const ERROR_FRESH: Duration = Duration::from_secs(15);

/// What the background rounds found, shared with the loop (for the status).
#[derive(Default)]
pub(super) struct DeclaredShared {
    busy: bool,
    last_round: Option<Instant>,
    report: Option<LogicalStatus>,
    /// Messages logged, each once while it lasts.
    logged: BTreeSet<String>,
    /// The last comparison with the publishers: when, for which declaration, what it found.
    last_check: Option<(Instant, LogicalSpec)>,
    remote_problems: Vec<LogicalProblem>,
    /// Objects whose change failed (`kind:name`): when, and why.
    held: BTreeMap<String, (Instant, String)>,
    log: WorkerLog,
}

pub(super) type SharedDeclared = Arc<Mutex<DeclaredShared>>;

fn lock(shared: &SharedDeclared) -> std::sync::MutexGuard<'_, DeclaredShared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// Start a round (none while one runs or the last one is too recent).
    pub(super) fn apply_logical(&mut self, timeout: Duration) {
        let declared = self.dynamic.logical.clone();
        let remote_check;
        let held;
        {
            let mut s = lock(&self.declared_logical);
            if s.busy || s.last_round.is_some_and(|at| at.elapsed() < ROUND_EVERY) {
                return;
            }
            s.busy = true;
            s.last_round = Some(Instant::now());
            let changed = s
                .last_check
                .as_ref()
                .is_none_or(|(_, spec)| spec != &declared);
            remote_check = changed
                || s.last_check
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() >= CHECK_EVERY);
            if remote_check {
                s.last_check = Some((Instant::now(), declared.clone()));
            }
            if changed {
                s.held.clear();
            }
            s.held.retain(|_, (at, _)| at.elapsed() < RETRY_EVERY);
            held = s
                .held
                .iter()
                .map(|(k, (_, why))| (k.clone(), why.clone()))
                .collect();
        }
        let round = Round {
            spec: self.spec.clone(),
            permanent: settings::permanent_logical_slots(&self.dynamic)
                .into_iter()
                .map(|s| s.name)
                .collect(),
            declared,
            timeout,
            remote_check,
            held,
            log_file: self.spec.log_file.clone(),
        };
        let shared = self.declared_logical.clone();
        tokio::spawn(
            async move {
                round.run(&shared).await;
                lock(&shared).busy = false;
            }
            .in_current_span(),
        );
    }

    /// The last round's findings while this member leads with something declared.
    pub(super) fn logical_report(&self, leading: bool) -> Option<LogicalStatus> {
        let mut s = lock(&self.declared_logical);
        if !leading || self.dynamic.logical.is_empty() {
            s.report = None;
            return None;
        }
        s.report.clone()
    }
}

struct Round {
    spec: pg::PgSpec,
    declared: LogicalSpec,
    /// Names of the permanent logical slots (`slots:`).
    permanent: BTreeSet<String>,
    timeout: Duration,
    remote_check: bool,
    /// Objects not to try again yet (`kind:name` → why their last change failed).
    held: BTreeMap<String, String>,
    log_file: PathBuf,
}

/// One database's share of the declaration.
struct InDatabase {
    publications: BTreeMap<String, PublicationSpec>,
    subscriptions: BTreeMap<String, SubscriptionSpec>,
    drop_publications: BTreeSet<String>,
    drop_subscriptions: BTreeSet<String>,
}

fn in_database(declared: &LogicalSpec, db: &str) -> InDatabase {
    let names = |m: &BTreeMap<String, String>, declared: &dyn Fn(&str) -> bool| {
        m.iter()
            .filter(|(name, d)| d.as_str() == db && !declared(name))
            .map(|(name, _)| name.clone())
            .collect()
    };
    InDatabase {
        publications: declared
            .publications
            .iter()
            .filter(|(_, p)| p.database == db)
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
        subscriptions: declared
            .subscriptions
            .iter()
            .filter(|(_, s)| s.database == db)
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect(),
        drop_publications: names(&declared.drop_publications, &|n| {
            declared.publications.contains_key(n)
        }),
        drop_subscriptions: names(&declared.drop_subscriptions, &|n| {
            declared.subscriptions.contains_key(n)
        }),
    }
}

/// Objects whose changes failed this round, by name, with why.
type Failures = BTreeMap<String, String>;

impl Round {
    async fn run(self, shared: &SharedDeclared) {
        let mut report = LogicalStatus {
            checked_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ..Default::default()
        };
        let mut notes: Vec<(String, String)> = Vec::new();
        let worker_errors = {
            let mut s = lock(shared);
            s.log.scan(&self.log_file);
            s.log.recent(ERROR_FRESH)
        };
        let mut remote_problems = Vec::new();
        let mut tried = Failures::new();
        let previous = lock(shared).report.clone().unwrap_or_default();
        for db in self.declared.databases() {
            let want = in_database(&self.declared, &db);
            let mut found = LogicalStatus::default();
            // Bounded: a round that hangs would hold every later one back.
            let outcome = tokio::time::timeout(
                ROUND_LIMIT,
                self.database(
                    &db,
                    &want,
                    &worker_errors,
                    &mut found,
                    &mut remote_problems,
                    &mut tried,
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(pg::PgError::Timeout {
                    what: "the round".into(),
                    after: ROUND_LIMIT,
                })
            });
            match outcome {
                Ok(()) => {
                    report.publications.append(&mut found.publications);
                    report.subscriptions.append(&mut found.subscriptions);
                    report.problems.append(&mut found.problems);
                }
                Err(e) => {
                    // The local server did not answer this time (a busy machine, a restart):
                    // the last round's findings stand, and nothing is reported again.
                    let message = format!("database {db}: {e}");
                    notes.push((
                        format!("db:{db}"),
                        format!("cannot keep the declared publications and subscriptions this round: {message}"),
                    ));
                    let mine = |name: &String, database: &String| {
                        database == &db
                            && (want.publications.contains_key(name)
                                || want.subscriptions.contains_key(name))
                    };
                    report.publications.extend(
                        previous
                            .publications
                            .iter()
                            .filter(|p| mine(&p.name, &p.database))
                            .cloned(),
                    );
                    report.subscriptions.extend(
                        previous
                            .subscriptions
                            .iter()
                            .filter(|p| mine(&p.name, &p.database))
                            .cloned(),
                    );
                    // Never seen yet (the database does not exist, the first round): say why.
                    for name in want.publications.keys() {
                        if !report.publications.iter().any(|p| &p.name == name) {
                            report.publications.push(PublicationRow {
                                name: name.clone(),
                                database: db.clone(),
                                state: message.clone(),
                                subscribers: vec![],
                            });
                        }
                    }
                    for name in want.subscriptions.keys() {
                        if !report.subscriptions.iter().any(|s| &s.name == name) {
                            let mut row = missing_subscription(name, &db, &message);
                            row.state = "unknown".into();
                            report.subscriptions.push(row);
                        }
                    }
                    // The publisher-side problems (the subscriber-side ones are kept with
                    // the comparisons with the publishers).
                    report.problems.extend(
                        previous
                            .problems
                            .iter()
                            .filter(|p| {
                                p.object
                                    .split(',')
                                    .any(|o| want.publications.contains_key(o))
                            })
                            .cloned(),
                    );
                    if self.remote_check {
                        remote_problems.extend(
                            previous
                                .problems
                                .iter()
                                .filter(|p| want.subscriptions.contains_key(&p.object))
                                .cloned(),
                        );
                    }
                }
            }
        }
        let mut s = lock(shared);
        let now = Instant::now();
        for (key, why) in tried {
            s.held.insert(key, (now, why));
        }
        if self.remote_check {
            // A comparison that could not be made is tried again sooner.
            if remote_problems.iter().any(|p| p.target == "publisher") {
                if let Some((at, _)) = s.last_check.as_mut() {
                    *at = Instant::now()
                        .checked_sub(CHECK_EVERY - CHECK_AGAIN)
                        .unwrap_or(*at);
                }
            }
            s.remote_problems = remote_problems;
        }
        report.problems.extend(s.remote_problems.iter().cloned());
        for p in &report.problems {
            notes.push((
                format!("problem:{}:{}:{}", p.object, p.target, p.problem),
                format!(
                    "logical replication check: {} {}: {}; fix: {}",
                    p.object, p.target, p.problem, p.fix
                ),
            ));
        }
        for sub in &report.subscriptions {
            if let Some(e) = &sub.last_error {
                notes.push((
                    format!("sub:{}:{e}", sub.name),
                    format!("subscription {} ({}): {e}", sub.name, sub.state),
                ));
            }
        }
        for p in &report.publications {
            if p.state != "present" {
                notes.push((
                    format!("pub:{}:{}", p.name, p.state),
                    format!("publication {}: {}", p.name, p.state),
                ));
            }
        }
        // Each once while it lasts: a subscription in an error loop is reported once with
        // its error, again only when the error changes or comes back.
        let keys: BTreeSet<String> = notes.iter().map(|(k, _)| k.clone()).collect();
        for (key, message) in &notes {
            if !s.logged.contains(key) {
                tracing::warn!("{message}");
            }
        }
        s.logged = keys;
        s.report = Some(report);
    }

    async fn database(
        &self,
        db: &str,
        want: &InDatabase,
        worker_errors: &BTreeMap<String, String>,
        report: &mut LogicalStatus,
        remote_problems: &mut Vec<LogicalProblem>,
        tried: &mut Failures,
    ) -> Result<(), pg::PgError> {
        // In the background: a busy server may take longer than a cycle's bound.
        let client =
            pg::connect_database(&self.spec, db, self.timeout.max(Duration::from_secs(5))).await?;
        let failures = self.converge(&client, want, tried).await?;

        // Publisher side.
        if !want.publications.is_empty() {
            let slots = pg::subscriber_slots(&client).await?;
            let subscribers: Vec<SubscriberSlotRow> = slots
                .into_iter()
                .map(|s| SubscriberSlotRow {
                    permanent: self.permanent.contains(&s.name),
                    slot: s.name,
                    active: s.active,
                    lag_bytes: s.lag_bytes,
                    lag_seconds: s.lag_seconds,
                })
                .collect();
            for name in want.publications.keys() {
                report.publications.push(PublicationRow {
                    name: name.clone(),
                    database: db.to_string(),
                    state: failures
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| "present".into()),
                    subscribers: subscribers.clone(),
                });
            }
            for p in pg::check_publications(&client, &want.publications).await? {
                report.problems.push(problem(p));
            }
            for s in subscribers.iter().filter(|s| !s.permanent) {
                report.problems.push(LogicalProblem {
                    object: want.publications.keys().cloned().collect::<Vec<_>>().join(","),
                    target: s.slot.clone(),
                    problem: "a subscriber's slot that is not a permanent slot: a failover of this cluster loses it, and the subscriber stops".into(),
                    fix: format!(
                        "pgbaton ctl edit-config -s slots.{0}.type=logical -s slots.{0}.database={db} -s slots.{0}.plugin=pgoutput",
                        s.slot
                    ),
                });
            }
        }

        // Subscriber side.
        if !want.subscriptions.is_empty() {
            let stats = pg::subscription_stats(&client).await?;
            for (name, spec) in &want.subscriptions {
                let row = match stats.iter().find(|s| &s.name == name) {
                    Some(st) => subscription_row(db, st, worker_errors.get(name)),
                    None => missing_subscription(
                        name,
                        db,
                        failures
                            .get(name)
                            .map(String::as_str)
                            .unwrap_or("not created yet"),
                    ),
                };
                report.subscriptions.push(row);
                if self.remote_check {
                    remote_problems.extend(self.check_subscription(&client, name, spec).await);
                }
            }
        }
        Ok(())
    }

    /// Create, alter and drop, one object at a time; what failed, by object name (those
    /// tried this round also in `tried`, by `kind:name`; held ones are not tried).
    async fn converge(
        &self,
        client: &pg::Client,
        want: &InDatabase,
        tried: &mut Failures,
    ) -> Result<Failures, pg::PgError> {
        let mut failures = Failures::new();
        let none = BTreeSet::new();
        let now = pg::read_publications(client).await?;
        let mut plans: Vec<(String, String, Vec<pg::Change>)> = Vec::new();
        for (name, spec) in &want.publications {
            let one = BTreeMap::from([(name.clone(), spec.clone())]);
            plans.push((
                format!("publication:{name}"),
                name.clone(),
                pg::plan_publications(&one, &now, &none),
            ));
        }
        for name in &want.drop_publications {
            let drop = BTreeSet::from([name.clone()]);
            plans.push((
                format!("publication:{name}"),
                name.clone(),
                pg::plan_publications(&BTreeMap::new(), &now, &drop),
            ));
        }
        let now = pg::read_subscriptions(client).await?;
        for (name, spec) in &want.subscriptions {
            let one = BTreeMap::from([(name.clone(), spec.clone())]);
            plans.push((
                format!("subscription:{name}"),
                name.clone(),
                pg::plan_subscriptions(&one, &now, &none),
            ));
        }
        for name in &want.drop_subscriptions {
            let drop = BTreeSet::from([name.clone()]);
            plans.push((
                format!("subscription:{name}"),
                name.clone(),
                pg::plan_subscriptions(&BTreeMap::new(), &now, &drop),
            ));
        }
        for (key, name, plan) in plans {
            if plan.is_empty() {
                continue;
            }
            if let Some(why) = self.held.get(&key) {
                failures.insert(name, why.clone());
                continue;
            }
            if let Err(e) = self.carry_out(client, &plan).await {
                tried.insert(key, e.clone());
                failures.insert(name, e);
            }
        }
        Ok(failures)
    }

    async fn carry_out(&self, client: &pg::Client, plan: &[pg::Change]) -> Result<(), String> {
        for change in plan {
            // CREATE SUBSCRIPTION waits for the publisher to build its slot's snapshot.
            let limit = self.timeout.max(Duration::from_secs(30));
            match tokio::time::timeout(limit, pg::apply_logical_change(client, change)).await {
                Ok(Ok(())) => tracing::info!(sql = %change.sql, "{}", change.what),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    return Err(format!(
                        "cannot {}: no answer within {}s",
                        change.what,
                        limit.as_secs()
                    ))
                }
            }
        }
        Ok(())
    }

    /// The subscribed tables against the publisher's: missing here, or lacking columns.
    async fn check_subscription(
        &self,
        client: &pg::Client,
        name: &str,
        spec: &SubscriptionSpec,
    ) -> Vec<LogicalProblem> {
        // A busy publisher (SCRAM, several hosts to try) may take longer than a cycle's bound.
        let limit = self.timeout.max(Duration::from_secs(10));
        let found = async {
            let source = pg::connect_source(&spec.source, limit).await?;
            let published = pg::published_columns(&source, &spec.publications).await?;
            let tables: Vec<String> = published.keys().cloned().collect();
            let local = pg::local_columns(client, &tables).await?;
            Ok::<_, pg::PgError>(pg::compare_subscribed_tables(name, &published, &local))
        };
        match tokio::time::timeout(limit * 2, found).await {
            Ok(Ok(problems)) => problems.into_iter().map(problem).collect(),
            Ok(Err(e)) => vec![LogicalProblem {
                object: name.to_string(),
                target: "publisher".into(),
                problem: format!("cannot compare the subscribed tables with the publisher's: {e}"),
                fix: "make the publisher reachable from this cluster with the subscription's source (host, port, user, password in the string, pg_hba.conf on the publisher)".into(),
            }],
            Err(_) => vec![LogicalProblem {
                object: name.to_string(),
                target: "publisher".into(),
                problem: "cannot compare the subscribed tables with the publisher's: no answer".into(),
                fix: "make the publisher reachable from this cluster with the subscription's source".into(),
            }],
        }
    }
}

fn problem(p: pg::Problem) -> LogicalProblem {
    LogicalProblem {
        object: p.publication,
        target: p.table,
        problem: p.problem,
        fix: p.fix,
    }
}

fn missing_subscription(name: &str, db: &str, why: &str) -> SubscriptionRow {
    SubscriptionRow {
        name: name.to_string(),
        database: db.to_string(),
        state: "missing".into(),
        enabled: false,
        tables_syncing: 0,
        lag_bytes: None,
        lag_seconds: None,
        apply_error_count: 0,
        sync_error_count: 0,
        last_error: Some(why.to_string()),
    }
}

/// A subscription's state word: streaming, syncing, disabled, stopped or error.
fn subscription_row(
    db: &str,
    st: &pg::SubscriptionStats,
    recent_error: Option<&String>,
) -> SubscriptionRow {
    let state = match (st.enabled, st.running, recent_error) {
        (false, _, _) => "disabled",
        (true, _, Some(_)) => "error",
        (true, false, None) => "stopped",
        (true, true, None) if st.tables_syncing > 0 => "syncing",
        (true, true, None) => "streaming",
    };
    SubscriptionRow {
        name: st.name.clone(),
        database: db.to_string(),
        state: state.into(),
        enabled: st.enabled,
        tables_syncing: st.tables_syncing,
        lag_bytes: st.unconfirmed_bytes,
        lag_seconds: st.last_message_age_s,
        apply_error_count: st.apply_error_count,
        sync_error_count: st.sync_error_count,
        last_error: recent_error.cloned(),
    }
}

/// Follows PostgreSQL's log for what its logical replication workers say: which process
/// works for which subscription (`logical replication apply worker for subscription "s"
/// has started`, the same for table synchronization workers), and the errors they log
/// (the default `log_line_prefix` carries the process id: `... [pid] ERROR:  ...`).
/// PostgreSQL 15 keeps only error counts (pg_stat_subscription_stats); the text is here.
#[derive(Default)]
struct WorkerLog {
    offset: Option<u64>,
    workers: BTreeMap<i32, String>,
    /// Subscription → its last error and when it was read.
    errors: BTreeMap<String, (String, Instant)>,
}

/// At most this much of the log is read per round (the newest part).
const MAX_LOG_READ: u64 = 1 << 20;

impl WorkerLog {
    fn scan(&mut self, path: &std::path::Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // The first scan starts at the end: what was logged before is history.
        let mut from = self.offset.unwrap_or(len);
        if from > len {
            from = 0;
        }
        from = from.max(len.saturating_sub(MAX_LOG_READ));
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_err()
            || file.take(len - from).read_to_end(&mut text).is_err()
        {
            return;
        }
        // Only whole lines; the rest is read next time.
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset = Some(from + whole as u64);
        let now = Instant::now();
        for (sub, error) in self.read(&String::from_utf8_lossy(&text[..whole])) {
            self.errors.insert(sub, (error, now));
        }
    }

    /// The errors in `text`, by subscription (the worker map is updated as it goes).
    fn read(&mut self, text: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let Some((pid, message)) = split_line(line) else {
                // A continuation line (tab first) of the previous message.
                if let (Some(rest), Some(last)) = (line.strip_prefix('\t'), out.last_mut()) {
                    if !last.1.contains(rest.trim()) && last.1.len() < 500 {
                        last.1.push(' ');
                        last.1.push_str(rest.trim());
                    }
                }
                continue;
            };
            if let Some(rest) = message.strip_prefix("LOG:  logical replication ") {
                if let Some(sub) = rest
                    .split("for subscription \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    self.workers.insert(pid, sub.to_string());
                }
                continue;
            }
            let Some(sub) = self.workers.get(&pid) else {
                continue;
            };
            if let Some(error) = message
                .strip_prefix("ERROR:  ")
                .or_else(|| message.strip_prefix("FATAL:  "))
            {
                out.push((sub.clone(), error.to_string()));
            } else if let Some(detail) = message.strip_prefix("DETAIL:  ") {
                if let Some(last) = out.last_mut().filter(|(s, _)| s == sub) {
                    last.1.push_str(&format!(" ({detail})"));
                }
            }
        }
        // A worker that logged an error exits; PostgreSQL starts another.
        out
    }

    /// Errors read within `fresh`, by subscription.
    fn recent(&mut self, fresh: Duration) -> BTreeMap<String, String> {
        self.errors.retain(|_, (_, at)| at.elapsed() < fresh);
        if self.workers.len() > 10_000 {
            self.workers.clear();
        }
        self.errors
            .iter()
            .map(|(s, (e, _))| (s.clone(), e.clone()))
            .collect()
    }
}

/// `2026-12-04 22:40:01.125 UTC [12345] ERROR:  text` → (12345, "ERROR:  text").
fn split_line(line: &str) -> Option<(i32, &str)> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let close = rest.find("] ")?;
    let pid = rest[..close].parse().ok()?;
    Some((pid, &rest[close + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_errors_are_read_by_subscription() {
        let mut log = WorkerLog::default();
        let text = "\
2026-12-04 22:40:01.100 UTC [700] LOG:  logical replication apply worker for subscription \"app_sub\" has started
2026-12-04 22:40:01.125 UTC [700] ERROR:  could not connect to the publisher: connection to server at \"127.0.0.1\", port 5999 failed: Connection refused
\tIs the server running on that host and accepting TCP/IP connections?
2026-12-04 22:40:01.130 UTC [55] LOG:  background worker \"logical replication worker\" (PID 700) exited with exit code 1
2026-12-04 22:40:02.000 UTC [701] LOG:  logical replication table synchronization worker for subscription \"other\", table \"t\" has started
2026-12-04 22:40:02.100 UTC [701] ERROR:  duplicate key value violates unique constraint \"t_pkey\"
2026-12-04 22:40:02.100 UTC [701] DETAIL:  Key (id)=(1) already exists.
2026-12-04 22:40:02.100 UTC [701] CONTEXT:  COPY t, line 1
2026-12-04 22:40:03.000 UTC [99] ERROR:  relation \"nope\" does not exist
";
        let errors = log.read(text);
        assert_eq!(
            errors,
            vec![
                ("app_sub".to_string(), "could not connect to the publisher: connection to server at \"127.0.0.1\", port 5999 failed: Connection refused Is the server running on that host and accepting TCP/IP connections?".to_string()),
                ("other".to_string(), "duplicate key value violates unique constraint \"t_pkey\" (Key (id)=(1) already exists.)".to_string()),
            ],
            "a client's error (pid 99) is not a worker's"
        );
    }

    #[test]
    fn the_log_is_followed_from_its_end_and_errors_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("postgresql.log");
        let line = |pid: u32, m: &str| format!("2026-12-04 22:40:01.100 UTC [{pid}] {m}\n");
        std::fs::write(
            &path,
            line(
                1,
                "LOG:  logical replication apply worker for subscription \"old\" has started",
            ) + &line(1, "ERROR:  old news"),
        )
        .expect("write");
        let mut log = WorkerLog::default();
        log.scan(&path);
        assert!(log.recent(ERROR_FRESH).is_empty(), "history is not read");
        let more = line(
            2,
            "LOG:  logical replication apply worker for subscription \"s\" has started",
        ) + &line(2, "ERROR:  boom");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(&more);
        text.push_str("2026-12-04 22:40:01.100 UTC [2] ERROR:  half a li");
        std::fs::write(&path, text).expect("write");
        log.scan(&path);
        assert_eq!(
            log.recent(ERROR_FRESH),
            BTreeMap::from([("s".to_string(), "boom".to_string())])
        );
        assert!(log.recent(Duration::ZERO).is_empty());
    }

    #[test]
    fn a_subscription_state_says_what_it_does() {
        let st = pg::SubscriptionStats {
            name: "s".into(),
            enabled: true,
            running: true,
            tables_syncing: 0,
            unconfirmed_bytes: Some(0),
            latest_end_lsn: None,
            last_message_age_s: Some(0.5),
            apply_error_count: 0,
            sync_error_count: 0,
        };
        assert_eq!(subscription_row("d", &st, None).state, "streaming");
        let syncing = pg::SubscriptionStats {
            tables_syncing: 2,
            ..st.clone()
        };
        assert_eq!(subscription_row("d", &syncing, None).state, "syncing");
        let error = "could not connect".to_string();
        let row = subscription_row("d", &st, Some(&error));
        assert_eq!(
            (row.state.as_str(), row.last_error.as_deref()),
            ("error", Some("could not connect"))
        );
        let stopped = pg::SubscriptionStats {
            running: false,
            ..st.clone()
        };
        assert_eq!(subscription_row("d", &stopped, None).state, "stopped");
        let disabled = pg::SubscriptionStats {
            enabled: false,
            ..st
        };
        assert_eq!(subscription_row("d", &disabled, None).state, "disabled");
    }

    #[test]
    fn drops_are_only_for_names_not_declared_again() {
        let mut spec = LogicalSpec::default();
        spec.drop_publications.insert("old".into(), "d".into());
        spec.drop_publications.insert("back".into(), "d".into());
        spec.drop_publications
            .insert("elsewhere".into(), "e".into());
        spec.publications.insert(
            "back".into(),
            PublicationSpec {
                database: "d".into(),
                scope: pgbaton_config::PublicationScope::AllTables,
                publish: vec!["insert".into()],
            },
        );
        let d = in_database(&spec, "d");
        assert_eq!(d.drop_publications, BTreeSet::from(["old".to_string()]));
        assert_eq!(d.publications.len(), 1);
        assert!(in_database(&spec, "e").publications.is_empty());
    }
}
