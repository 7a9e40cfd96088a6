//! DCS failsafe mode (`failsafe_mode: true`, as Patroni 3) with real etcd, PostgreSQL and
//! agents: etcd stopped → the leader keeps accepting writes for 3 × ttl because every member
//! acknowledges it (`POST /failsafe`); one replica's agent SIGKILLed → the leader stops
//! accepting writes within ttl; etcd back → one leader again, every write kept. (Without
//! failsafe mode, `dcs_outage.rs` checks that the leader demotes.)

mod common;

use std::time::{Duration, Instant};

use common::{assert_single_primary, edit_member_yaml, Cluster, UP};

/// The member YAML with `failsafe_mode: true` in bootstrap.dcs.
fn with_failsafe_mode(yaml: String) -> String {
    const ANCHOR: &str = "    maximum_lag_on_failover:";
    assert!(
        yaml.contains(ANCHOR),
        "no `{ANCHOR}` line in the member YAML"
    );
    yaml.replacen(ANCHOR, &format!("    failsafe_mode: true\n{ANCHOR}"), 1)
}

async fn start_failsafe_cluster(n: u16) -> Cluster {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    for k in 1..=n {
        let name = format!("node{k}");
        cluster.add_member(&name);
        edit_member_yaml(&cluster, &name, with_failsafe_mode);
        cluster.start_agent(&name);
    }
    cluster
}

/// Poll until the leader wrote the `failsafe` key naming every member.
async fn wait_for_failsafe_key(cluster: &Cluster, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let want = cluster.members();
    loop {
        if let Ok(state) = cluster.state().await {
            let names: Option<Vec<String>> =
                state.failsafe.as_ref().map(|k| k.keys().cloned().collect());
            if names.as_ref() == Some(&want) {
                return;
            }
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("the failsafe key never named {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_the_leader_stays_writable_while_every_member_acknowledges_it() {
    let mut cluster = start_failsafe_cluster(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    cluster
        .write(&leader, "fs", "0-before")
        .await
        .expect("write on the leader");
    wait_for_failsafe_key(&cluster, Duration::from_secs(15)).await;
    let monitor = cluster.monitor_primaries();
    let ttl = Duration::from_secs_f64(cluster.timing.ttl);

    // 1. etcd down: every write on the leader succeeds for 3 × ttl.
    let stopped_at = Instant::now();
    cluster.stop_etcd();
    let mut n = 0;
    while stopped_at.elapsed() < 3 * ttl {
        n += 1;
        if let Err(e) = cluster
            .write(&leader, "fs", &format!("1-during-{n:03}"))
            .await
        {
            cluster.fail(&format!(
                "{leader} refused write {n} {:?} after etcd stopped, in failsafe mode: {e}",
                stopped_at.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "failsafe: {n} writes on {leader} succeeded during {:?} without etcd",
        3 * ttl
    );
    // /patroni says so on the leader and on every member that promised it (Patroni 3's
    // `failsafe_mode_is_active`).
    for member in cluster.members() {
        let patroni = cluster.patroni(&member).await.expect("GET /patroni");
        assert_eq!(
            patroni["failsafe_mode_is_active"], true,
            "{member} should report failsafe mode active: {patroni}"
        );
    }

    // 2. One replica's agent dies: the leader cannot get every acknowledgement any more and
    //    stops accepting writes within ttl.
    let replica = cluster
        .members()
        .into_iter()
        .find(|m| *m != leader)
        .expect("a replica");
    let killed_at = Instant::now();
    cluster.kill_agent(&replica);
    let refused_after = loop {
        if cluster.write(&leader, "fs", "2-after-kill").await.is_err() {
            break killed_at.elapsed();
        }
        if killed_at.elapsed() > ttl {
            cluster.fail(&format!(
                "{leader} still accepted writes {:?} after {replica}'s agent was killed (limit ttl {ttl:?})",
                killed_at.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("failsafe: {leader} refused writes {refused_after:?} after {replica}'s agent died");

    // 3. etcd and the agent come back: one leader again, every acknowledged write kept.
    cluster.start_etcd().await;
    cluster.start_agent(&replica);
    let now_leader = cluster
        .wait_until_all_streaming(Duration::from_secs(60))
        .await;
    cluster
        .wait_writable(&now_leader, "fs", Duration::from_secs(15))
        .await;
    let values = cluster.values(&now_leader, "fs").await.expect("rows");
    let during = values.iter().filter(|v| v.starts_with("1-during-")).count();
    assert_eq!(
        during, n,
        "every write acknowledged during the outage is kept: {values:?}"
    );
    assert!(values.contains(&"0-before".to_string()), "rows: {values:?}");
    let report = monitor.stop();
    assert_single_primary(&report);
}
