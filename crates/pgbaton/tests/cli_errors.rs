//! Errors a user makes on the command line: an invalid configuration is refused before
//! anything starts, naming the file, the key and the reason; `ctl` against an etcd that
//! does not answer prints one line naming it and exits 1.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{temp_dir, PGBATON};
use common::ports::closed_port;

#[test]
fn agent_with_an_invalid_config_exits_before_starting_anything() {
    let dir = temp_dir("pgbaton-it-cli-");
    let api = closed_port();
    let data_dir = dir.path().join("member").join("data");
    let config = dir.path().join("bad.yml");
    std::fs::write(
        &config,
        format!(
            r#"scope: it
name: node1
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: [127.0.0.1:{etcd}]
bootstrap:
  dcs:
    ttl: soon
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data_dir}
  authentication:
    superuser: {{username: postgres, password: postgres}}
    replication: {{username: replicator, password: replicator}}
"#,
            etcd = closed_port(),
            pg = closed_port(),
            data_dir = data_dir.display(),
        ),
    )
    .expect("writing bad.yml");

    let started = Instant::now();
    let out = Command::new(PGBATON)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("running pgbaton agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {:?}; stderr: {stderr}",
        out.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains(&config.display().to_string()),
        "stderr names the file: {stderr}"
    );
    assert!(
        stderr.contains("bootstrap.dcs.ttl"),
        "stderr names the key path: {stderr}"
    );
    assert!(
        stderr.contains("soon"),
        "stderr says what is wrong with the value: {stderr}"
    );
    // Nothing was started or created.
    assert!(
        !data_dir.parent().expect("parent").exists(),
        "the agent created {}",
        data_dir.display()
    );
    assert!(
        TcpListener::bind(("127.0.0.1", api)).is_ok(),
        "the REST port is free"
    );
}

#[test]
fn ctl_against_an_unreachable_etcd_prints_one_line_and_exits_1() {
    let port = closed_port();
    let started = Instant::now();
    let out = Command::new(PGBATON)
        .args([
            "ctl",
            "--dcs",
            &format!("127.0.0.1:{port}"),
            "--scope",
            "x",
            "list",
        ])
        .output()
        .expect("running pgbaton ctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it took {:?}",
        started.elapsed()
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")) && lines[0].contains("etcd"),
        "the line names the unreachable etcd: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn patroni_environment_variables_override_the_file_and_a_wrong_one_is_named() {
    let dir = temp_dir("pgbaton-it-env-");
    let config = dir.path().join("patroni.yml");
    std::fs::write(
        &config,
        "scope: pg-cluster\nname: node1\npostgresql:\n  data_dir: /var/lib/postgresql/15/main\n",
    )
    .expect("writing patroni.yml");
    let check = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(PGBATON);
        cmd.arg("check-config").arg("--config").arg(&config);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().expect("running pgbaton check-config")
    };
    let out = check(&[
        ("PATRONI_NAME", "node7"),
        ("PATRONI_ETCD3_HOSTS", "127.0.0.9:2379"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("member node7"), "{stdout}");
    assert!(stdout.contains("etcd 127.0.0.9:2379"), "{stdout}");

    let out = check(&[("PATRONI_RESTAPI_LISTN", "0.0.0.0:8008")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a wrong variable must stop it: {stderr}"
    );
    assert!(
        stderr.contains("PATRONI_RESTAPI_LISTN") && stderr.contains("PATRONI_RESTAPI_LISTEN"),
        "the error names the variable and the likely one: {stderr}"
    );
}
