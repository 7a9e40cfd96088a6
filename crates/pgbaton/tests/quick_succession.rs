//! Leader changes in quick succession, as users make them, on real etcd, PostgreSQL and
//! agents: a switchover and then the new leader's node lost seconds later; switchovers
//! without a named candidate, one after another; a failover and another one 10 s later.
//!
//! Each happens before any restartpoint, while a replica's control file still names the
//! timeline it had before the switch: the replicas must judge their own timeline as their
//! peers do (the timeline of the WAL they replayed), elect a new leader within
//! ttl + loop_wait + 2 s of the old lease's end, and the old leader of a switchover never
//! takes the key back.

mod common;

use std::time::{Duration, Instant};

use common::{assert_single_primary, Cluster, UP};

/// Longest time from a leader's loss to the first acknowledged write on another member:
/// its lease runs out (ttl), then the election and promotion (loop_wait + 2 s, SAFETY.md 4).
fn failover_bound(cluster: &Cluster) -> Duration {
    Duration::from_secs_f64(cluster.timing.ttl + cluster.timing.loop_wait + 2.0)
}

/// Poll every member in `candidates` with a write until one accepts it; fails past `limit`
/// (measured from `since`). Returns the member and the time since `since`.
async fn first_writable(
    cluster: &Cluster,
    candidates: &[String],
    table: &str,
    since: Instant,
    limit: Duration,
) -> (String, Duration) {
    loop {
        for m in candidates {
            if cluster.write(m, table, "first").await.is_ok() {
                return (m.clone(), since.elapsed());
            }
        }
        if since.elapsed() > limit {
            let list = cluster.ctl(&["list"]);
            cluster.fail(&format!(
                "no member of {candidates:?} accepted a write within {limit:?}\n{}",
                String::from_utf8_lossy(&list.stdout)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The timeline a member publishes in its DCS document.
async fn published_timeline(cluster: &Cluster, name: &str) -> Option<u32> {
    let state = cluster.state().await.ok()?;
    state.members.get(name).and_then(|d| d.timeline)
}

/// Wait until every member in `names` publishes `timeline`.
async fn wait_published_timeline(cluster: &Cluster, names: &[String], timeline: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = true;
        for n in names {
            all &= published_timeline(cluster, n).await == Some(timeline);
        }
        if all {
            return;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("{names:?} do not all publish timeline {timeline}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn others(cluster: &Cluster, but: &[&str]) -> Vec<String> {
    cluster
        .members()
        .into_iter()
        .filter(|m| !but.contains(&m.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_then_the_new_leader_lost_elects_another_member_at_once() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.wait_until_all_streaming(UP).await;
    let candidate = others(&cluster, &[&old])[0].clone();
    cluster
        .write(&old, "before", "on-timeline-1")
        .await
        .expect("write on the first leader");

    let out = cluster.ctl_ok(&[
        "switchover",
        "--leader",
        &old,
        "--candidate",
        &candidate,
        "--force",
    ]);
    eprintln!("{out}");
    cluster.wait_writable(&candidate, "probes", UP).await;
    cluster
        .write(&candidate, "before", "on-timeline-2")
        .await
        .expect("write on the new leader");
    // The others follow the new leader (they replayed its timeline 2), as in the report:
    // then the new leader's node is lost, long before any restartpoint.
    let all = cluster.members();
    cluster
        .wait_until_streaming(&all, Duration::from_secs(30))
        .await;
    wait_published_timeline(&cluster, &all, 2).await;
    for m in others(&cluster, &[&candidate]) {
        cluster
            .wait_for_value(&m, "before", "on-timeline-2", Duration::from_secs(10))
            .await;
    }

    let monitor = cluster.monitor_primaries();
    let lost_at = Instant::now();
    cluster.kill_node(&candidate);
    let survivors = others(&cluster, &[&candidate]);
    let limit = failover_bound(&cluster);
    let (new, took) = first_writable(&cluster, &survivors, "after", lost_at, limit).await;
    eprintln!("switchover then loss: {new} accepted a write {took:?} after {candidate} was lost (bound {limit:?})");
    assert_eq!(cluster.timeline(&new).await.expect("timeline"), 3);
    let rows = cluster.values(&new, "before").await.expect("rows");
    assert_eq!(rows, vec!["on-timeline-1", "on-timeline-2"]);

    // The lost node comes back and rejoins the new leader.
    cluster.start_agent(&candidate);
    let leader = cluster
        .wait_until_streaming(&all, Duration::from_secs(60))
        .await;
    assert_eq!(leader, new);
    let report = monitor.stop();
    assert_single_primary(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_switchovers_without_a_candidate_each_hand_over_to_another_member() {
    let cluster = Cluster::start(3).await;
    let all = cluster.members();
    let mut leader = cluster.wait_until_all_streaming(UP).await;
    let mut timeline = cluster.timeline(&leader).await.expect("timeline");
    assert_eq!(timeline, 1);
    let monitor = cluster.monitor_primaries();
    for round in 1..=10 {
        // A switchover needs a healthy, streaming replica: wait for them, as a user would
        // see in `ctl list`.
        cluster
            .wait_until_streaming(&all, Duration::from_secs(30))
            .await;
        let started = Instant::now();
        let out = cluster.ctl_ok(&["switchover", "--force"]);
        // The DCS may still show the old leader for a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        let new = loop {
            let now = cluster.wait_for_leader(Duration::from_secs(30)).await;
            if now != leader {
                break now;
            }
            if Instant::now() > deadline {
                cluster.fail(&format!(
                    "round {round}: {leader} is still the leader after `ctl switchover --force`: {out}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        cluster.wait_writable(&new, "rounds", UP).await;
        let new_timeline = cluster.timeline(&new).await.expect("timeline");
        eprintln!(
            "round {round}: {leader} -> {new}, timeline {timeline} -> {new_timeline}, {:?}",
            started.elapsed()
        );
        assert_ne!(new, leader, "round {round}: the old leader promoted itself");
        assert_eq!(
            new_timeline,
            timeline + 1,
            "round {round}: exactly one promotion per switchover"
        );
        assert!(
            cluster.in_recovery(&leader).await.unwrap_or(true),
            "round {round}: the old leader {leader} runs a primary"
        );
        leader = new;
        timeline = new_timeline;
    }
    assert_eq!(timeline, 11);
    let report = monitor.stop();
    assert_single_primary(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_then_another_failover_ten_seconds_later() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.wait_until_all_streaming(UP).await;
    let all = cluster.members();
    cluster
        .write(&first, "rows", "tl1")
        .await
        .expect("write on the first leader");
    for m in others(&cluster, &[&first]) {
        cluster
            .wait_for_value(&m, "rows", "tl1", Duration::from_secs(10))
            .await;
    }
    let monitor = cluster.monitor_primaries();
    let limit = failover_bound(&cluster);

    let lost_at = Instant::now();
    cluster.kill_node(&first);
    let (second, took) = first_writable(
        &cluster,
        &others(&cluster, &[&first]),
        "rows",
        lost_at,
        limit,
    )
    .await;
    eprintln!("first failover: {second} writable {took:?} after {first} was lost");
    cluster
        .write(&second, "rows", "tl2")
        .await
        .expect("write on the second leader");
    let third = others(&cluster, &[&first, &second])[0].clone();
    cluster
        .wait_for_value(&third, "rows", "tl2", Duration::from_secs(10))
        .await;

    // 10 s after the first loss: long before any restartpoint on the survivor.
    tokio::time::sleep_until((lost_at + Duration::from_secs(10)).into()).await;
    let lost_again_at = Instant::now();
    cluster.kill_node(&second);
    let (new, took) = first_writable(
        &cluster,
        std::slice::from_ref(&third),
        "rows",
        lost_again_at,
        limit,
    )
    .await;
    eprintln!("second failover: {new} writable {took:?} after {second} was lost");
    assert_eq!(cluster.timeline(&new).await.expect("timeline"), 3);
    let rows = cluster.values(&new, "rows").await.expect("rows");
    assert!(rows.contains(&"tl1".to_string()) && rows.contains(&"tl2".to_string()));

    // Both lost nodes come back and follow.
    cluster.start_agent(&first);
    cluster.start_agent(&second);
    let leader = cluster
        .wait_until_streaming(&all, Duration::from_secs(90))
        .await;
    assert_eq!(leader, third);
    let report = monitor.stop();
    assert_single_primary(&report);
}
