//! Synchronous replication on real PostgreSQL: with `synchronous_mode` the leader names one
//! synchronous standby (DCS `sync` key, `ctl list`, `synchronous_standby_names`) and a failover
//! promotes exactly that standby with every acknowledged commit; with
//! `synchronous_mode_strict` commits wait while no standby runs and resume when one returns.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_single_primary, sql, start_sync_cluster, Cluster, UP};
use tokio_postgres::Client;

/// Poll until the leader has exactly one synchronous standby everywhere it shows: the DCS
/// `sync` key (leader + one name), `ctl list` ("Sync Standby") and the leader's
/// `synchronous_standby_names`. Returns the standby's name.
async fn wait_for_sync_standby(cluster: &Cluster, leader: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match sync_standby_now(cluster, leader).await {
            Ok(name) => return name,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            cluster.fail(&format!(
                "{leader} named no synchronous standby within {timeout:?} (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync_standby_now(cluster: &Cluster, leader: &str) -> anyhow::Result<String> {
    let state = cluster.state().await?;
    let sync = state
        .sync
        .as_ref()
        .map(|s| s.value.clone())
        .ok_or_else(|| anyhow::anyhow!("no sync key"))?;
    anyhow::ensure!(
        sync.leader.as_deref() == Some(leader),
        "sync key leader {:?}, not {leader}",
        sync.leader
    );
    let named = sync.members();
    anyhow::ensure!(named.len() == 1, "sync key names {named:?}");
    let name = named[0].clone();
    anyhow::ensure!(name != leader, "sync key names the leader itself");

    let rows = cluster.ctl_list_json();
    let sync_rows: Vec<&str> = rows
        .iter()
        .filter(|r| r["Role"] == "Sync Standby")
        .filter_map(|r| r["Member"].as_str())
        .collect();
    anyhow::ensure!(
        sync_rows == [name.as_str()],
        "ctl list shows Sync Standby {sync_rows:?}, the key names {name}"
    );

    let names = cluster
        .query_one(leader, "SHOW synchronous_standby_names")
        .await?;
    anyhow::ensure!(
        names.contains(&name),
        "synchronous_standby_names on {leader} is {names:?}, the key names {name}"
    );
    Ok(name)
}

/// A client on `port` inserting 1, 2, 3, ... into `acked` (one statement each, reconnecting
/// after errors) until `stop`; every id whose INSERT returned success is pushed to `acked_ids`.
async fn insert_numbered(port: u16, stop: Arc<AtomicBool>, acked_ids: Arc<Mutex<Vec<i64>>>) {
    let mut client: Option<Client> = None;
    let mut id: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let conn = match &client {
            Some(c) if !c.is_closed() => c,
            _ => match sql::connect(port, Duration::from_secs(1)).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        id += 1;
        let statement = format!("INSERT INTO acked VALUES ({id})");
        let insert = conn.simple_query(&statement);
        match tokio::time::timeout(Duration::from_secs(3), insert).await {
            Ok(Ok(_)) => acked_ids.lock().expect("acked ids lock").push(id),
            _ => {
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A client inserting numbered rows into `acked` on the leader (see `insert_numbered`).
struct Writer {
    stop: Arc<AtomicBool>,
    acked_ids: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Create the table on `leader`, start writing, and return once `min_acked` commits
    /// were acknowledged.
    async fn start(cluster: &Cluster, leader: &str, min_acked: usize) -> Writer {
        cluster
            .query(leader, "CREATE TABLE acked (id bigint PRIMARY KEY)")
            .await
            .expect("creating the table on the leader");
        let stop = Arc::new(AtomicBool::new(false));
        let acked_ids = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(insert_numbered(
            cluster.pg_port(leader),
            stop.clone(),
            acked_ids.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked_ids.lock().expect("acked ids lock").len() < min_acked {
            if Instant::now() >= deadline {
                cluster.fail(&format!(
                    "the client did not get {min_acked} synchronous commits within 30 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Writer {
            stop,
            acked_ids,
            task,
        }
    }

    /// Stop writing; the ids whose commit was acknowledged.
    async fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer task");
        let acked = self.acked_ids.lock().expect("acked ids lock").clone();
        acked
    }
}

/// Poll until another member than `old` holds the leader key and runs as primary.
async fn wait_for_new_leader(cluster: &Cluster, old: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match cluster.state().await {
            Ok(state) => match (state.leader_name(), state.leader_member()) {
                (Some(name), Some(doc))
                    if name != old && doc.state == "running" && doc.is_primary_role() =>
                {
                    return name.to_string()
                }
                (name, _) => format!("leader {name:?}"),
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            cluster.fail(&format!(
                "no new leader within {timeout:?} of the kill ({last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The acknowledged ids that `member` does not have.
async fn missing_on(cluster: &Cluster, member: &str, acked: &[i64]) -> Vec<i64> {
    let present: std::collections::BTreeSet<i64> = cluster
        .query(member, "SELECT id FROM acked")
        .await
        .expect("reading the rows on the new leader")
        .iter()
        .map(|v| v.parse().expect("an id"))
        .collect();
    acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect()
}

/// INSERT `value` into `strict` on its own connection (after `SET statement_timeout` when
/// given); returns when the commit was acknowledged.
async fn insert_and_time(
    port: u16,
    statement_timeout: Option<&'static str>,
    value: &'static str,
) -> anyhow::Result<Instant> {
    let client = sql::connect(port, Duration::from_secs(5)).await?;
    if let Some(t) = statement_timeout {
        client
            .batch_execute(&format!("SET statement_timeout = '{t}'"))
            .await?;
    }
    client
        .simple_query(&format!("INSERT INTO strict VALUES ('{value}')"))
        .await?;
    Ok(Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_names_a_sync_standby_and_failover_promotes_it() {
    let started = Instant::now();
    let mut cluster = start_sync_cluster(3, false).await;
    let old = cluster.wait_until_all_streaming(UP).await;
    let standby = wait_for_sync_standby(&cluster, &old, Duration::from_secs(60)).await;
    eprintln!(
        "{old} leads, {standby} is the synchronous standby after {:?}",
        started.elapsed()
    );

    let writer = Writer::start(&cluster, &old, 50).await;
    // The key must still name the same standby right before the kill.
    let state = cluster.state().await.expect("reading the cluster");
    let named = state.sync.map(|s| s.value.members()).unwrap_or_default();
    assert_eq!(
        named,
        std::slice::from_ref(&standby),
        "sync key just before the kill"
    );

    let monitor = cluster.monitor_primaries();
    let killed_at = Instant::now();
    cluster.kill_node(&old);

    let new = wait_for_new_leader(&cluster, &old, Duration::from_secs(60)).await;
    eprintln!(
        "{new} leads {:?} after {old} was killed",
        killed_at.elapsed()
    );
    let acked = writer.finish().await;
    assert_eq!(
        new, standby,
        "the new leader must be the former sync standby"
    );
    assert!(
        !cluster.in_recovery(&new).await.expect("pg_is_in_recovery"),
        "{new} is leader but still in recovery"
    );

    let missing = missing_on(&cluster, &new, &acked).await;
    eprintln!(
        "{} commits acknowledged, {} missing on {new}",
        acked.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged ids missing on the new leader {new}: {missing:?}"
    );

    let report = monitor.stop();
    assert_single_primary(&report);
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_blocks_commits_without_a_standby_and_resumes() {
    let started = Instant::now();
    let mut cluster = start_sync_cluster(3, true).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let standby = wait_for_sync_standby(&cluster, &leader, Duration::from_secs(60)).await;
    eprintln!(
        "{leader} leads, {standby} is the synchronous standby after {:?}",
        started.elapsed()
    );
    cluster
        .write(&leader, "strict", "before")
        .await
        .expect("a commit with a synchronous standby");

    let replicas: Vec<String> = cluster
        .members()
        .into_iter()
        .filter(|m| *m != leader)
        .collect();
    for r in &replicas {
        cluster.kill_node(r);
    }

    // Commits without any standby are not acknowledged: they wait in SyncRep. One client
    // also sets statement_timeout = 3s; PostgreSQL disables the statement timeout before the
    // commit (finish_xact_command), so it does not end the wait either.
    let port = cluster.pg_port(&leader);
    let mut plain = tokio::spawn(insert_and_time(port, None, "blocked"));
    let mut timed = tokio::spawn(insert_and_time(port, Some("3s"), "timed"));
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(10);
    loop {
        let waiting = cluster
            .query_one(
                &leader,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            )
            .await;
        if matches!(waiting.as_deref(), Ok("2")) {
            break;
        }
        if Instant::now() >= deadline {
            cluster.fail(&format!(
                "two commits did not wait in SyncRep within 10 s (last: {waiting:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the 3 s statement_timeout (+ 5 s), neither commit was acknowledged.
    let after_timeout = asked + Duration::from_secs(8);
    for (what, handle) in [("plain", &mut plain), ("statement_timeout 3s", &mut timed)] {
        if let Ok(result) = tokio::time::timeout_at(after_timeout.into(), handle).await {
            cluster.fail(&format!(
                "the {what} commit returned with no standby running in strict mode \
                 after {:?}: {result:?}",
                asked.elapsed()
            ));
        }
    }
    let names = cluster
        .query_one(&leader, "SHOW synchronous_standby_names")
        .await
        .expect("synchronous_standby_names");
    eprintln!(
        "no commit acknowledged {:?} after asking; synchronous_standby_names {names:?}",
        asked.elapsed()
    );

    // One replica comes back: the waiting commits are released and new commits succeed.
    let back = replicas[0].clone();
    let restarted = Instant::now();
    cluster.start_agent(&back);
    for (what, handle) in [("plain", &mut plain), ("statement_timeout 3s", &mut timed)] {
        match tokio::time::timeout(Duration::from_secs(90), handle).await {
            Ok(Ok(Ok(at))) => eprintln!(
                "the waiting {what} commit was acknowledged {:?} after {back} was started",
                at.duration_since(restarted)
            ),
            other => cluster.fail(&format!(
                "the waiting {what} commit was not acknowledged within 90 s of starting \
                 {back}: {other:?}"
            )),
        }
    }
    let mut n = 0;
    loop {
        n += 1;
        let value = format!("after-{n}");
        let insert = cluster.write(&leader, "strict", &value).await;
        if insert.is_ok() {
            cluster
                .wait_for_value(&back, "strict", &value, Duration::from_secs(10))
                .await;
            break;
        }
        if restarted.elapsed() >= Duration::from_secs(90) {
            cluster.fail(&format!(
                "no INSERT succeeded within 90 s of starting {back}: {insert:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "a new commit succeeded {:?} after {back} was started",
        restarted.elapsed()
    );
    let now_sync = wait_for_sync_standby(&cluster, &leader, Duration::from_secs(30)).await;
    assert_eq!(
        now_sync, back,
        "the returned replica is the synchronous standby"
    );
    eprintln!("test took {:?}", started.elapsed());
}

/// Quorum commit (`synchronous_mode: quorum`, seed ch. 3): the leader puts `ANY 1 (...)` with
/// both replicas in force, PostgreSQL reports them as `quorum`, the `sync` key names both with
/// `quorum: 1`, `ctl list` shows them as Quorum Standby, and after the leader's node dies the
/// promoted member holds every acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_mode_uses_any_n_and_failover_keeps_every_acknowledged_commit() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for k in 1..=3 {
        let name = format!("node{k}");
        cluster.add_member(&name);
        common::edit_member_yaml(&cluster, &name, |yaml| {
            common::with_sync_mode(yaml, false).replacen(
                "synchronous_mode: true",
                "synchronous_mode: quorum",
                1,
            )
        });
        cluster.start_agent(&name);
    }
    cluster.wait_until_all_streaming(UP).await;

    // Everything agrees on ANY 1 over both replicas (of whoever leads now).
    let deadline = Instant::now() + Duration::from_secs(60);
    let old = loop {
        let old = cluster
            .state()
            .await
            .ok()
            .and_then(|s| s.leader_name().map(str::to_string))
            .unwrap_or_default();
        let replicas: Vec<String> = cluster
            .members()
            .into_iter()
            .filter(|m| *m != old)
            .collect();
        let ssn = cluster
            .query_one(&old, "SHOW synchronous_standby_names")
            .await
            .unwrap_or_default();
        let quorum_rows = cluster
            .query_one(
                &old,
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'",
            )
            .await
            .unwrap_or_default();
        let key = cluster
            .state()
            .await
            .ok()
            .and_then(|s| s.sync.map(|k| k.value));
        let key_ok = key.as_ref().is_some_and(|k| {
            let mut named = k.members();
            named.sort();
            k.quorum == Some(1) && named == replicas
        });
        let listed = cluster
            .ctl_list_json()
            .iter()
            .filter(|r| r["Role"] == "Quorum Standby")
            .count();
        if ssn.starts_with("ANY 1 (")
            && replicas.iter().all(|r| ssn.contains(r.as_str()))
            && quorum_rows == "2"
            && key_ok
            && listed == 2
        {
            break old;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "quorum mode never settled: leader {old}, ssn {ssn:?}, quorum rows {quorum_rows}, key {key:?}, Quorum Standby rows {listed}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let writer = Writer::start(&cluster, &old, 50).await;
    let monitor = cluster.monitor_primaries();
    cluster.kill_node(&old);
    let new = wait_for_new_leader(&cluster, &old, Duration::from_secs(60)).await;
    let acked = writer.finish().await;
    let missing = missing_on(&cluster, &new, &acked).await;
    assert!(
        missing.is_empty(),
        "acknowledged ids missing on the new leader {new}: {missing:?}"
    );
    assert_single_primary(&monitor.stop());
}
