//! patronictl's command lines typed as `pgbaton ctl`, on a real cluster: the cluster name as
//! the first positional argument (`restart pg-cluster node1`, `reload pg-cluster`, `list
//! pg-cluster`, `switchover pg-cluster`), a name that is not the configured scope refused
//! with both names, and a closed stdout (`ctl list | true`) ending the command quietly.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::PGBATON;
use common::{Cluster, UP};

/// `pgbaton ctl -c <node1's config> <args>`, as the seed's `patronictl -c patroni.yml`.
fn ctl_c(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(PGBATON)
        .arg("ctl")
        .arg("-c")
        .arg(cluster.config_path("node1"))
        .args(args)
        .output()
        .expect("running pgbaton ctl")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_command_lines_work_as_typed() {
    let cluster = Cluster::start(2).await;
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replica = if leader == "node1" { "node2" } else { "node1" };
    let scope = cluster.scope.clone();

    let out = ctl_c(&cluster, &["list", &scope]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&leader));

    // Patroni 4.1's position columns and the lag in seconds, on a real cluster.
    let out = ctl_c(&cluster, &["list", "--positions", "-f", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let replica_row = rows
        .as_array()
        .and_then(|r| r.iter().find(|m| m["Member"] == replica))
        .unwrap_or_else(|| panic!("no row for {replica}: {rows}"));
    assert!(
        replica_row["Replay LSN"]
            .as_str()
            .is_some_and(|s| s.contains('/')),
        "{replica_row}"
    );
    assert!(replica_row.get("Lag (s)").is_some(), "{replica_row}");

    let out = ctl_c(&cluster, &["list", "pg-other"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg-other") && err.contains(&scope),
        "the error names both clusters: {err}"
    );

    let out = ctl_c(&cluster, &["reload", &scope, "--force"]);
    assert!(out.status.success(), "reload CLUSTER: {}", text(&out));

    let out = ctl_c(&cluster, &["restart", &scope, replica, "--force"]);
    assert!(
        out.status.success(),
        "restart CLUSTER MEMBER: {}",
        text(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(replica), "{said}");

    // The cluster name without --config: --dcs only, as `patronictl --dcs-url ... list NAME`.
    let out = Command::new(PGBATON)
        .args(["ctl", "--dcs", &cluster.etcd_endpoint(), "list", &scope])
        .output()
        .expect("ctl");
    assert!(out.status.success(), "{}", text(&out));

    cluster
        .wait_until_streaming(&cluster.members(), Duration::from_secs(60))
        .await;
    let out = ctl_c(&cluster, &["switchover", &scope, "--force"]);
    assert!(out.status.success(), "switchover CLUSTER: {}", text(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = cluster.wait_for_leader(Duration::from_secs(30)).await;
        if now == replica {
            break;
        }
        if std::time::Instant::now() > deadline {
            cluster.fail(&format!("{replica} did not become the leader"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A reader that went away: the command ends quietly, killed by SIGPIPE as `ls | true`
    // would be, never a panic about a broken pipe.
    let script = format!(
        "{PGBATON} ctl -c {} list; echo \"exit=$?\" >&2",
        cluster.config_path("node1").display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("({script}) | true"))
        .output()
        .expect("sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("exit=141") || err.contains("exit=0"),
        "ends by SIGPIPE (or wrote before the reader left): {err}"
    );
}
