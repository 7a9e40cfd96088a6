//! Failover: the leader's whole node dies (agent and PostgreSQL SIGKILLed, agent kept down);
//! a replica takes over within ttl + a few seconds with every replicated row, history records
//! the switch, and the old node, started again, rejoins as a replica of the new leader.

mod common;

use std::time::{Duration, Instant};

use common::{assert_single_primary, Cluster, UP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_node_killed_then_replica_takes_over_and_old_leader_rejoins() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.wait_until_all_streaming(UP).await;
    let others: Vec<String> = cluster
        .members()
        .into_iter()
        .filter(|m| *m != old)
        .collect();

    for i in 0..20 {
        cluster
            .write(&old, "before_kill", &format!("row-{i:02}"))
            .await
            .expect("write on the leader");
    }
    for r in &others {
        cluster
            .wait_for_value(r, "before_kill", "row-19", Duration::from_secs(10))
            .await;
    }

    let monitor = cluster.monitor_primaries();
    let killed_at = Instant::now();
    cluster.kill_node(&old);

    // A new leader accepts writes within ttl + a few seconds.
    let limit = Duration::from_secs_f64(cluster.timing.ttl + 6.0);
    let new = loop {
        let mut found = None;
        for r in &others {
            if cluster.write(r, "after_kill", "first").await.is_ok() {
                found = Some(r.clone());
                break;
            }
        }
        if let Some(new) = found {
            break new;
        }
        if killed_at.elapsed() > limit {
            cluster.fail(&format!(
                "no member accepted a write within {limit:?} of the kill"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed_at.elapsed();
    eprintln!("failover: {new} accepted a write {took:?} after {old} was killed");

    // Everything replicated before the kill is on the new leader.
    let rows = cluster
        .values(&new, "before_kill")
        .await
        .expect("reading the rows on the new leader");
    let expected: Vec<String> = (0..20).map(|i| format!("row-{i:02}")).collect();
    assert_eq!(rows, expected, "rows on the new leader {new}");
    assert_eq!(cluster.timeline(&new).await.expect("timeline"), 2);

    // The DCS names the new leader and the history has the switch from timeline 1.
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(10)).await, new);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = cluster.state().await.expect("reading the cluster");
        if state.history.iter().any(|h| h.timeline == 1) {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "no history entry for timeline 1: {:?}",
                state.history
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = cluster.ctl(&["history", "-f", "json"]);
    assert!(history.status.success(), "ctl history failed");
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(&new), "ctl history names {new}: {history}");

    // The other replica follows the new leader.
    cluster
        .wait_until_streaming(&others, Duration::from_secs(30))
        .await;

    // The old node comes back: it rejoins as a replica on the new timeline.
    cluster.start_agent(&old);
    let all = cluster.members();
    let leader = cluster
        .wait_until_streaming(&all, Duration::from_secs(60))
        .await;
    assert_eq!(leader, new, "the leadership stays with {new}");
    assert!(cluster
        .in_recovery(&old)
        .await
        .expect("pg_is_in_recovery on the old leader"));
    assert_eq!(
        cluster
            .timeline(&old)
            .await
            .expect("timeline of the old leader"),
        2
    );
    let log = cluster.agent_log(&old);
    eprintln!(
        "old leader's agent.log mentions rewind: {}",
        log.to_lowercase().contains("rewind")
    );

    cluster
        .write(&new, "after_kill", "after-rejoin")
        .await
        .expect("write on the new leader");
    cluster
        .wait_for_value(&old, "after_kill", "after-rejoin", Duration::from_secs(10))
        .await;
    let rows = cluster
        .values(&old, "before_kill")
        .await
        .expect("rows on the old leader");
    assert_eq!(rows, expected, "rows on the rejoined old leader");

    let report = monitor.stop();
    assert_single_primary(&report);
    assert!(report.primaries_seen.contains(&new));
}
