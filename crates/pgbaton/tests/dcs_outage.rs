//! etcd down for longer than ttl: the leader can no longer prove its lease, so it stops
//! accepting writes before the lease could have expired (ttl + 1 s at most from the outage);
//! when etcd returns, a leader exists again and accepts writes.

mod common;

use std::time::{Duration, Instant};

use common::{assert_single_primary, Cluster, UP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_longer_than_ttl_stops_writes_then_cluster_recovers() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    cluster
        .write(&leader, "outage", "before")
        .await
        .expect("write on the leader");
    let monitor = cluster.monitor_primaries();
    let ttl = Duration::from_secs_f64(cluster.timing.ttl);

    let stopped_at = Instant::now();
    cluster.stop_etcd();

    // Writes on the leader must fail (error, read-only, or server down) within ttl + 1 s.
    let limit = ttl + Duration::from_secs(1);
    let mut n = 0;
    let refused_after = loop {
        n += 1;
        if cluster
            .write(&leader, "outage", &format!("during-{n}"))
            .await
            .is_err()
        {
            break stopped_at.elapsed();
        }
        if stopped_at.elapsed() > limit {
            cluster.fail(&format!(
                "{leader} still accepted writes {:?} after etcd stopped (limit {limit:?})",
                stopped_at.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("etcd outage: {leader} refused writes {refused_after:?} after etcd stopped");
    // And it keeps refusing while etcd is down (checked until ttl + 2 s into the outage).
    while stopped_at.elapsed() < ttl + Duration::from_secs(2) {
        assert!(
            cluster.write(&leader, "outage", "late").await.is_err(),
            "{leader} accepted a write again while etcd was still down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cluster.primaries_now().await.is_empty(),
        "no member may run as a primary without the DCS"
    );

    cluster.start_etcd().await;
    let back_at = Instant::now();
    let now_leader = cluster
        .wait_until_all_streaming(Duration::from_secs(60))
        .await;
    cluster
        .wait_writable(&now_leader, "outage", Duration::from_secs(15))
        .await;
    eprintln!(
        "etcd outage: {now_leader} (leader before: {leader}) writable {:?} after etcd returned",
        back_at.elapsed()
    );
    let values = cluster.values(&now_leader, "outage").await.expect("rows");
    assert!(values.contains(&"before".to_string()), "rows: {values:?}");
    assert!(
        !values.iter().any(|v| v == "late"),
        "no write succeeded during the outage: {values:?}"
    );
    let report = monitor.stop();
    assert_single_primary(&report);
}
