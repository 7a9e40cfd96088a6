//! The REST API over https (`restapi.certfile/keyfile`), `ctl` trusting it through
//! `ctl.cacert` / `--cacert` / `-k`, and scheduled restarts: `ctl restart --scheduled`
//! shows in `list`, `ctl flush restart` cancels it, and a due one restarts PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{edit_member_yaml, Cluster, UP};

/// The test certificate for 127.0.0.1 (the agents' REST API presents it).
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    pgbaton_testkit::self_signed_cert(dir, "api")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The "Scheduled restart" cell of `member` in `ctl list -f json` ("" when none).
fn scheduled_cell(cluster: &Cluster, member: &str) -> String {
    cluster
        .ctl_list_json()
        .into_iter()
        .find(|row| row["Member"] == member)
        .and_then(|row| row.get("Scheduled restart").cloned())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn wait_scheduled_cell(cluster: &Cluster, member: &str, want_some: bool) -> String {
    let deadline = Instant::now() + UP;
    loop {
        let cell = scheduled_cell(cluster, member);
        if cell.is_empty() != want_some {
            return cell;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "{member}'s Scheduled restart column never became {}",
                if want_some { "set" } else { "empty" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When the member's postmaster started ("" when it does not answer).
async fn started(cluster: &Cluster, member: &str) -> String {
    cluster
        .query_one(member, "SELECT pg_postmaster_start_time()::text")
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_rest_api_with_ctl_and_scheduled_restarts() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    let (cert, key) = make_cert(cluster.root());
    for name in ["node1", "node2"] {
        cluster.add_member(name);
        edit_member_yaml(&cluster, name, |yaml| {
            let with_tls = yaml.replacen(
                "restapi:\n",
                &format!(
                    "restapi:\n  certfile: {}\n  keyfile: {}\n",
                    cert.display(),
                    key.display()
                ),
                1,
            );
            format!("{with_tls}\nctl:\n  cacert: {}\n", cert.display())
        });
        cluster.start_agent(name);
    }
    let leader = cluster.wait_until_all_streaming(UP).await;
    let replica = if leader == "node1" { "node2" } else { "node1" };

    // Members publish https API URLs, and the API answers https only.
    let state = cluster.state().await.expect("cluster state");
    let api_url = state.members[replica].api_url.clone();
    assert!(
        api_url.starts_with("https://127.0.0.1:"),
        "api_url should be https: {api_url}"
    );
    let plain = common::http::get(cluster.api_port(replica), "/patroni").await;
    assert!(
        plain.is_err(),
        "plain http to the https port should fail, got {plain:?}"
    );

    // ctl without a way to trust the certificate refuses, naming the certificate problem.
    let when = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let out = cluster.ctl(&["restart", replica, "--scheduled", &when, "--force"]);
    assert!(
        !out.status.success(),
        "ctl trusting nothing should fail against a self-signed API: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("restart failed"),
        "the error should say the restart failed: {}",
        stderr(&out)
    );

    // With --cacert: scheduled, shown in list, cancelled by flush.
    let cacert = cert.display().to_string();
    let out = cluster.ctl(&[
        "--cacert",
        &cacert,
        "restart",
        replica,
        "--scheduled",
        &when,
        "--force",
    ]);
    assert!(
        out.status.success(),
        "scheduling a restart: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("restart scheduled"),
        "{}",
        stdout(&out)
    );
    let cell = wait_scheduled_cell(&cluster, replica, true).await;
    assert!(
        cell.starts_with(&when[..16]),
        "list should show the schedule {when}, shows {cell:?}"
    );
    // A second one is refused while the first is pending (Patroni allows one).
    let out = cluster.ctl(&["-k", "restart", replica, "--scheduled", &when, "--force"]);
    assert!(
        !out.status.success(),
        "a second scheduled restart should be refused"
    );
    assert!(
        stderr(&out).contains("another one is scheduled"),
        "{}",
        stderr(&out)
    );
    let out = cluster.ctl(&["-k", "flush", "restart", replica, "--force"]);
    assert!(
        out.status.success(),
        "flush restart: {}{}",
        stdout(&out),
        stderr(&out)
    );
    wait_scheduled_cell(&cluster, replica, false).await;

    // A restart due in a few seconds happens: the postmaster start time changes.
    let before = started(&cluster, replica).await;
    assert!(!before.is_empty(), "{replica} should answer SQL");
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let out = cluster.ctl(&["-k", "restart", replica, "--scheduled", &soon, "--force"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let deadline = Instant::now() + UP;
    loop {
        let now = started(&cluster, replica).await;
        if !now.is_empty() && now != before {
            break;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "the scheduled restart of {replica} did not happen (start time still {before})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_scheduled_cell(&cluster, replica, false).await;
    cluster.wait_until_all_streaming(UP).await;
}
