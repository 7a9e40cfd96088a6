//! `pgbaton ctl haproxy-config` for users who keep HAProxy: the generated haproxy.cfg passes
//! `haproxy -c`, and a real HAProxy 2.6 running it sends the write port to the leader and the
//! read port to a replica, then, after the leader's node is lost, the write port to the new
//! leader (HAProxy notices within its health-check interval: inter 3 s, fall 3, rise 2).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ports::closed_port;
use common::{sql, Cluster, UP};

const HAPROXY: &str = "/usr/sbin/haproxy";

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The PostgreSQL port behind `port` and whether that server is in recovery.
async fn server_behind(port: u16) -> anyhow::Result<(u16, bool)> {
    let client = sql::connect(port, Duration::from_secs(3)).await?;
    let row = client
        .query_one(
            "SELECT current_setting('port')::int, pg_is_in_recovery()",
            &[],
        )
        .await?;
    Ok((row.get::<_, i32>(0) as u16, row.get(1)))
}

async fn wait_behind(
    cluster: &Cluster,
    port: u16,
    what: &str,
    timeout: Duration,
    want: impl Fn(u16, bool) -> bool,
) -> (u16, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match server_behind(port).await {
            Ok((pg, recovery)) if want(pg, recovery) => return (pg, recovery),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            cluster.fail(&format!("{what}: not within {timeout:?} (last: {last})"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_the_generated_config_follows_a_failover() {
    assert!(
        std::path::Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing: apt-get install haproxy (scripts/install-deps.sh)"
    );
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let (write, read, stats) = (closed_port(), closed_port(), closed_port());
    let out = cluster.ctl(&[
        "haproxy-config",
        "--bind",
        "127.0.0.1",
        "--write-port",
        &write.to_string(),
        "--read-port",
        &read.to_string(),
        "--stats-port",
        &stats.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = cluster.root().join("haproxy.cfg");
    std::fs::write(&cfg, &out.stdout).expect("writing haproxy.cfg");
    let check = Command::new(HAPROXY)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "haproxy -c rejects the generated config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(cluster.root().join("haproxy.log")).expect("log");
    let _haproxy = Haproxy(
        Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting haproxy"),
    );

    let leader_port = cluster.pg_port(&leader);
    let (pg, _) = wait_behind(
        &cluster,
        write,
        "the write port reaches the leader",
        Duration::from_secs(30),
        |pg, recovery| pg == leader_port && !recovery,
    )
    .await;
    assert_eq!(pg, leader_port);
    wait_behind(
        &cluster,
        read,
        "the read port reaches a replica",
        Duration::from_secs(30),
        |_, recovery| recovery,
    )
    .await;

    let lost_at = Instant::now();
    cluster.kill_node(&leader);
    let (pg, _) = wait_behind(
        &cluster,
        write,
        "the write port reaches the new leader",
        Duration::from_secs(60),
        |pg, recovery| pg != leader_port && !recovery,
    )
    .await;
    let new = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_eq!(pg, cluster.pg_port(&new), "the write port leads to {new}");
    eprintln!(
        "HAProxy's write port reached the new leader {new} {:?} after the loss of {leader}",
        lost_at.elapsed()
    );
}
