//! The write client: an INSERT every 50 ms, sent directly to the members (no proxy).
//!
//! It keeps one connection to the member that took the last write; when a write fails it
//! drops that connection and tries every member in turn, starting with the last known
//! primary, until one accepts the INSERT. Each acknowledged write is logged with the instant
//! its acknowledgement arrived, so the write-unavailability window is measured from the
//! client's side: the gap between the last acknowledged write before a crash and the first
//! one after it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// The table every write goes to (created once per cluster by [`create_table`]).
pub const TABLE: &str = "pgbaton_bench";
/// Bound on connecting and on one statement; a dead member costs at most this much.
const OP_TIMEOUT: Duration = Duration::from_millis(1000);

/// A member the client may write to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub member: String,
    pub port: u16,
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// When the client began this attempt (connecting, if it had to, then the INSERT):
    /// an attempt begun after a crash is a write after the crash.
    pub sent: Instant,
    /// When the acknowledgement arrived at the client.
    pub at: Instant,
    pub member: String,
    /// The write's sequence number within its run (one per 50 ms tick).
    pub seq: i64,
    /// The port of the PostgreSQL that took the write (`inet_server_port()`): the member
    /// behind a proxy too. None if the answer did not say.
    pub port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("connecting to {member} (127.0.0.1:{port}): {source}")]
    Connect {
        member: String,
        port: u16,
        source: tokio_postgres::Error,
    },
    #[error("on {member}: {source}")]
    Statement {
        member: String,
        source: tokio_postgres::Error,
    },
    #[error("{member} did not answer within {} ms", OP_TIMEOUT.as_millis())]
    Timeout { member: String },
    #[error("no member accepted `{what}`: is the cluster up? last error: {last}")]
    NoMember { what: String, last: String },
}

/// Connect as the superuser with a 1 s connect timeout and a 1 s statement timeout.
pub async fn connect(endpoint: &Endpoint) -> Result<Client, WriteError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(endpoint.port)
        .user("postgres")
        .password("postgres")
        .dbname("postgres")
        .application_name("pgbaton-bench")
        .connect_timeout(OP_TIMEOUT)
        .options(format!("-c statement_timeout={}", OP_TIMEOUT.as_millis()));
    let connecting = config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(OP_TIMEOUT, connecting)
        .await
        .map_err(|_| WriteError::Timeout {
            member: endpoint.member.clone(),
        })?
        .map_err(|source| WriteError::Connect {
            member: endpoint.member.clone(),
            port: endpoint.port,
            source,
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Run one statement with the operation timeout.
pub async fn execute(client: &Client, member: &str, sql: &str) -> Result<(), WriteError> {
    tokio::time::timeout(OP_TIMEOUT, client.simple_query(sql))
        .await
        .map_err(|_| WriteError::Timeout {
            member: member.to_string(),
        })?
        .map_err(|source| WriteError::Statement {
            member: member.to_string(),
            source,
        })?;
    Ok(())
}

/// Run one INSERT ... RETURNING inet_server_port() with the operation timeout; returns the
/// port of the PostgreSQL that took it.
async fn insert(client: &Client, member: &str, sql: &str) -> Result<Option<u16>, WriteError> {
    let messages = tokio::time::timeout(OP_TIMEOUT, client.simple_query(sql))
        .await
        .map_err(|_| WriteError::Timeout {
            member: member.to_string(),
        })?
        .map_err(|source| WriteError::Statement {
            member: member.to_string(),
            source,
        })?;
    Ok(messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(parse_port),
        _ => None,
    }))
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse().ok()
}

/// Create the bench table on whichever member accepts writes.
pub async fn create_table(endpoints: &[Endpoint]) -> Result<(), WriteError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (run int NOT NULL, seq bigint NOT NULL, \
         member text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    );
    let mut last = String::from("no members");
    for endpoint in endpoints {
        let result = async {
            let client = connect(endpoint).await?;
            execute(&client, &endpoint.member, &sql).await
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(WriteError::NoMember {
        what: format!("CREATE TABLE {TABLE}"),
        last,
    })
}

/// The sequence numbers of `run` that `endpoint` holds.
pub async fn stored_seqs(endpoint: &Endpoint, run: i32) -> Result<Vec<i64>, WriteError> {
    let client = connect(endpoint).await?;
    let sql = format!("SELECT seq FROM {TABLE} WHERE run = $1");
    let rows = tokio::time::timeout(OP_TIMEOUT * 5, client.query(&sql, &[&run]))
        .await
        .map_err(|_| WriteError::Timeout {
            member: endpoint.member.clone(),
        })?
        .map_err(|source| WriteError::Statement {
            member: endpoint.member.clone(),
            source,
        })?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
}

/// One statement (connect + INSERT) the client saw fail.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When the client learned it had failed.
    pub at: Instant,
    /// True when this was the tick's last try: no member took that write (a failed client
    /// operation, as opposed to one failed statement among several tries).
    pub op_failed: bool,
}

/// A running write client; stop it with [`Writer::stop`] (dropping it aborts the task).
pub struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start writing every `period`, trying `endpoints[0]` first.
    pub fn start(endpoints: Vec<Endpoint>, run: i32, period: Duration) -> Writer {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = watch::channel(false);
        let log = Log {
            acks: acks.clone(),
            failures: failures.clone(),
        };
        let task = tokio::spawn(write_loop(endpoints, run, period, log, stop_rx));
        Writer {
            acks,
            failures,
            stop,
            task: Some(task),
        }
    }

    /// A copy of the acknowledged writes so far.
    pub fn acks(&self) -> Vec<Ack> {
        match self.acks.lock() {
            Ok(acks) => acks.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A copy of the failed statements so far.
    pub fn failures(&self) -> Vec<Failure> {
        match self.failures.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stop after the write in progress; every acknowledged write and every failure.
    pub async fn stop_with_failures(mut self) -> (Vec<Ack>, Vec<Failure>) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        (self.acks(), self.failures())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where the write loop records what happened.
struct Log {
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
}

impl Log {
    fn ack(&self, member: &str, seq: i64, sent: Instant, port: Option<u16>) {
        let ack = Ack {
            sent,
            at: Instant::now(),
            member: member.to_string(),
            seq,
            port,
        };
        match self.acks.lock() {
            Ok(mut acks) => acks.push(ack),
            Err(poisoned) => poisoned.into_inner().push(ack),
        }
    }

    fn failure(&self, op_failed: bool) {
        let failure = Failure {
            at: Instant::now(),
            op_failed,
        };
        match self.failures.lock() {
            Ok(mut f) => f.push(failure),
            Err(poisoned) => poisoned.into_inner().push(failure),
        }
    }
}

async fn write_loop(
    endpoints: Vec<Endpoint>,
    run: i32,
    period: Duration,
    log: Log,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<(usize, Client)> = None;
    let mut preferred = 0usize;
    let mut seq: i64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        seq += 1;
        if let Some((i, client)) = &current {
            let member = &endpoints[*i].member;
            let sent = Instant::now();
            match insert(client, member, &insert_sql(run, seq, member)).await {
                Ok(port) => {
                    log.ack(member, seq, sent, port);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(run, seq, "write failed: {e}");
                    log.failure(false);
                    current = None;
                }
            }
        }
        for offset in 0..endpoints.len() {
            let i = (preferred + offset) % endpoints.len();
            let endpoint = &endpoints[i];
            let sent = Instant::now();
            let attempt = async {
                let client = connect(endpoint).await?;
                let port = insert(
                    &client,
                    &endpoint.member,
                    &insert_sql(run, seq, &endpoint.member),
                )
                .await?;
                Ok::<_, WriteError>((client, port))
            };
            match attempt.await {
                Ok((client, port)) => {
                    log.ack(&endpoint.member, seq, sent, port);
                    preferred = i;
                    current = Some((i, client));
                    break;
                }
                Err(e) => {
                    tracing::debug!(run, seq, "write failed: {e}");
                    let last_try = offset + 1 == endpoints.len();
                    log.failure(last_try);
                }
            }
        }
    }
}

fn insert_sql(run: i32, seq: i64, member: &str) -> String {
    // Member names come from our own cluster (node1..node9); quote them anyway.
    let member = member.replace('\'', "''");
    format!(
        "INSERT INTO {TABLE} (run, seq, member) VALUES ({run}, {seq}, '{member}') \
         RETURNING inet_server_port()"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_quotes_the_member_name() {
        assert_eq!(
            insert_sql(2, 7, "no'de"),
            "INSERT INTO pgbaton_bench (run, seq, member) VALUES (2, 7, 'no''de') RETURNING inet_server_port()"
        );
    }

    #[test]
    fn server_port_is_read_from_the_answer() {
        assert_eq!(parse_port("17051"), Some(17051));
        assert_eq!(parse_port(""), None);
        assert_eq!(parse_port("x"), None);
    }
}
