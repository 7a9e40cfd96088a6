//! A real test of the Patroni side of the comparison: a 3-member Patroni 3.0 cluster with
//! its own etcd behind HAProxy comes up whole, the client writes through HAProxy across a
//! planned switchover (one scenario run, measured like the benchmark does), the old leader
//! streams again, and dropping the cluster leaves no process behind.

use std::time::Duration;

use crate::crash::Crash;
use crate::patroni::{self, PatroniCluster, PatroniSpec};
use crate::patroni_config::TUNED_CHECKS;
use crate::profile::Profile;
use crate::scenario;
use crate::target::Target;
use crate::writer;

fn processes_naming(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_cluster_behind_haproxy_switches_over_and_cleans_up() {
    if let Err(e) = patroni::check_binaries() {
        panic!("{e}");
    }
    let tmp = tempfile::Builder::new()
        .prefix("pgbaton-bench-patroni-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod temp dir");
    let dir = tmp.path().join("cluster");
    // 40 ports per cluster, away from the benches' 17000-18200 and other test binaries.
    let base_port = 19000 + (std::process::id() % 100) as u16 * 40;
    let spec = PatroniSpec {
        dir: dir.clone(),
        base_port,
        members: 3,
        profile: Profile::Ttl5,
        checks: TUNED_CHECKS,
    };
    let cluster = PatroniCluster::start(spec).await.expect("patroni cluster");
    let leader = cluster
        .wait_whole(Duration::from_secs(180))
        .await
        .expect("whole cluster");
    writer::create_table(&cluster.write_endpoints(&leader))
        .await
        .expect("create table through haproxy");

    let mut results = Vec::new();
    let mut next_run = 0;
    scenario::crash_runs(
        &cluster,
        Crash::Switchover,
        1,
        None,
        &mut next_run,
        &mut results,
    )
    .await
    .expect("one switchover run");
    let r = &results[0];
    assert!(r.gap_s.is_some(), "no write after the switchover: {r:?}");
    assert_eq!(r.old_leader_streams, Some(true), "{r:?}");
    assert_eq!(r.lost_acked, Some(0), "{r:?}");
    assert!(r.note.is_none(), "{r:?}");
    let now = cluster
        .wait_whole(Duration::from_secs(60))
        .await
        .expect("whole after the switchover");
    assert_eq!(Some(now), r.candidate.clone());

    drop(cluster);
    let left = processes_naming(&dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
