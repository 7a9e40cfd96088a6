//! `ctl backup`: the leader's agent takes a pgBackRest backup (`POST /backup`); ctl follows
//! it in the leader's `GET /patroni` until it ends.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{json, Value};

use super::ops::Ops;

/// How often the leader's status is read while the backup runs.
const POLL: Duration = Duration::from_secs(1);
/// Failed status reads in a row before ctl stops following (the backup may still run).
const LOST_AFTER: u32 = 10;

impl Ops {
    pub(super) async fn backup(
        &self,
        kind: &str,
        from: Option<&str>,
        wait: bool,
    ) -> anyhow::Result<()> {
        let leader = self
            .state
            .leader_name()
            .ok_or_else(|| {
                anyhow!(
                    "cluster {} has no leader now: a backup is started by the leader's agent; retry when `pgbaton ctl list` shows one",
                    self.scope()
                )
            })?
            .to_string();
        let url = self.api_url(&leader)?.to_string();
        let mut body = json!({ "type": kind });
        if let Some(from) = from {
            body["from"] = json!(from);
        }
        let answer = self
            .api
            .call(reqwest::Method::POST, &url, "/backup", Some(&body))
            .await?;
        if !answer.ok() {
            bail!(
                "backup refused by {leader} ({}): {}",
                answer.status,
                answer.message()
            );
        }
        println!("{leader}: {}", answer.message());
        if !wait {
            return Ok(());
        }
        let started = Instant::now();
        let mut failures = 0;
        let mut said = Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            let status = match self
                .api
                .call(reqwest::Method::GET, &url, "/patroni", None)
                .await
            {
                Ok(a) if a.ok() => serde_json::from_str::<Value>(&a.body).ok(),
                _ => None,
            };
            let Some(repo) = status.and_then(|s| s.get("pgbackrest").cloned()) else {
                failures += 1;
                if failures >= LOST_AFTER {
                    bail!(
                        "lost contact with {leader}'s REST API ({url}); the backup may still run there: see pgbackrest.backup in its GET /patroni, or `pgbackrest info`"
                    );
                }
                continue;
            };
            failures = 0;
            let run = &repo["backup"];
            match run["state"].as_str() {
                Some("running") => {
                    if said.elapsed() >= Duration::from_secs(10) {
                        println!("still running ({} s)", started.elapsed().as_secs());
                        said = Instant::now();
                    }
                }
                Some("ok") => {
                    println!(
                        "Success: backup finished in {:.0} s{}",
                        started.elapsed().as_secs_f64(),
                        describe_last(&repo["last_backup"])
                    );
                    return Ok(());
                }
                Some("failed") => bail!(
                    "the backup failed on {leader}: {}",
                    run["error"].as_str().unwrap_or("no error was reported")
                ),
                _ => bail!("{leader} no longer shows the backup (did its agent restart?); see `pgbackrest info`"),
            }
        }
    }
}

/// `: 20261204-222651F (full, 21.9 MiB, 2.9 MiB in the repository)`.
fn describe_last(last: &Value) -> String {
    let Some(label) = last["label"].as_str() else {
        return String::new();
    };
    format!(
        ": {label} ({}, {}, {} in the repository)",
        last["type"].as_str().unwrap_or("?"),
        mib(last["size"].as_u64()),
        mib(last["repository_size"].as_u64())
    )
}

fn mib(bytes: Option<u64>) -> String {
    format!("{:.1} MiB", bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_backup_in_one_line() {
        let last = json!({"label": "20261204-222651F", "type": "full", "size": 22992569, "repository_size": 3043462});
        assert_eq!(
            describe_last(&last),
            ": 20261204-222651F (full, 21.9 MiB, 2.9 MiB in the repository)"
        );
        assert_eq!(describe_last(&Value::Null), "");
    }
}
