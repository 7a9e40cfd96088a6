//! Talking to a member's PostgreSQL over TCP as postgres/postgres, like a client would:
//! one short connection per call, every call bounded by a timeout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio_postgres::{Client, NoTls};

use super::cluster::Cluster;

const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to 127.0.0.1:`port` as postgres, within `timeout`.
pub async fn connect(port: u16, timeout: Duration) -> anyhow::Result<Client> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres password=postgres dbname=postgres connect_timeout=2"
    );
    let (client, connection) =
        tokio::time::timeout(timeout, tokio_postgres::connect(&conninfo, NoTls))
            .await
            .map_err(|_| anyhow!("no connection to port {port} within {timeout:?}"))?
            .with_context(|| format!("connecting to port {port}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Run `sql` (one statement) and return the first column of every row as text.
pub async fn query_port(port: u16, sql: &str) -> anyhow::Result<Vec<String>> {
    let work = async {
        let client = connect(port, CALL_TIMEOUT).await?;
        let rows = client
            .simple_query(sql)
            .await
            .with_context(|| format!("running {sql:?} on port {port}"))?;
        let values = rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or("").to_string())
                }
                _ => None,
            })
            .collect();
        anyhow::Ok(values)
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("{sql:?} on port {port} took over {CALL_TIMEOUT:?}"))?
}

impl Cluster {
    pub async fn query(&self, name: &str, sql: &str) -> anyhow::Result<Vec<String>> {
        query_port(self.pg_port(name), sql).await
    }

    /// The first column of the first row.
    pub async fn query_one(&self, name: &str, sql: &str) -> anyhow::Result<String> {
        self.query(name, sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{sql:?} on {name} returned no row"))
    }

    pub async fn in_recovery(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.query_one(name, "SELECT pg_is_in_recovery()").await? == "t")
    }

    /// The timeline PostgreSQL runs on (primary: its own; replica: the one it replays).
    pub async fn timeline(&self, name: &str) -> anyhow::Result<u32> {
        let sql = "SELECT CASE WHEN pg_is_in_recovery() \
                   THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
                   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
        let text = self.query_one(name, sql).await?;
        text.parse()
            .with_context(|| format!("timeline of {name}: {text:?}"))
    }

    /// Insert `value` into table `table` (created if missing) on `name`.
    pub async fn write(&self, name: &str, table: &str, value: &str) -> anyhow::Result<()> {
        self.query(
            name,
            &format!("CREATE TABLE IF NOT EXISTS {table} (v text); INSERT INTO {table} VALUES ('{value}')"),
        )
        .await
        .map(|_| ())
    }

    /// Every value of `table` on `name`, sorted.
    pub async fn values(&self, name: &str, table: &str) -> anyhow::Result<Vec<String>> {
        self.query(name, &format!("SELECT v FROM {table} ORDER BY v"))
            .await
    }

    /// Poll until `value` is in `table` on `name`.
    pub async fn wait_for_value(&self, name: &str, table: &str, value: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.values(name, table).await {
                Ok(values) if values.iter().any(|v| v == value) => return,
                Ok(values) => format!("values {values:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{value:?} did not appear in {table} on {name} within {timeout:?} (last: {last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll until a write to `table` succeeds on `name`; returns the time it took.
    pub async fn wait_writable(&self, name: &str, table: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let last = match self.write(name, table, &format!("probe-{n}")).await {
                Ok(()) => return start.elapsed(),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() >= timeout {
                self.fail(&format!(
                    "{name} did not accept a write within {timeout:?} (last: {last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Members whose PostgreSQL answers `pg_is_in_recovery() = false` right now.
    pub async fn primaries_now(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in self.members() {
            if let Ok(false) = self.in_recovery(&name).await {
                out.push(name);
            }
        }
        out
    }
}
