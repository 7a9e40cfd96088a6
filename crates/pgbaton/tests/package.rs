//! The Debian package and its systemd units: `scripts/build-deb.sh` builds a package whose
//! units pass `systemd-analyze verify`, whose configuration files are conffiles that an
//! upgrade keeps (and a data directory is never touched); the agent speaks systemd's
//! notification protocol (`Type=notify`): READY=1 once the member has joined, WATCHDOG=1
//! every cycle, STOPPING=1 at the end.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{temp_dir, PGBATON};
use common::Cluster;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn build_deb(out: &Path, version: &str) -> String {
    run(Command::new("bash")
        .arg(format!("{REPO}/scripts/build-deb.sh"))
        // A debug binary is large; compressing it would only slow the test.
        .args([
            "--binary",
            PGBATON,
            "--version",
            version,
            "--compression",
            "none",
        ])
        .arg("--out")
        .arg(out))
    .trim()
    .to_string()
}

fn dpkg_install(root: &Path, deb: &str) -> String {
    run(Command::new("dpkg")
        .arg(format!("--instdir={}", root.display()))
        .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "-i",
            deb,
        ]))
}

#[test]
fn the_package_installs_upgrades_and_keeps_configuration_and_data() {
    let dir = temp_dir("pgbaton-it-deb-");
    let first = build_deb(dir.path(), "0.0.1");
    let second = build_deb(dir.path(), "0.0.2");
    let contents = run(Command::new("dpkg-deb").args(["-c", &first]));
    for path in [
        "./usr/bin/pgbaton",
        "./lib/systemd/system/pgbaton.service",
        "./lib/systemd/system/pgbaton-router.service",
        "./etc/pgbaton/pgbaton.yml",
        "./etc/pgbaton/router.yml",
    ] {
        assert!(
            contents.contains(path),
            "{path} is not in the package:\n{contents}"
        );
    }
    let info = run(Command::new("dpkg-deb").args(["-I", &first]));
    assert!(info.contains("conffiles"), "{info}");

    // Install into a separate root (no chroot needed), edit the configuration, make data.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("admindir");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("admindir");
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    dpkg_install(&root, &first);
    let config = root.join("etc/pgbaton/pgbaton.yml");
    let mut edited = std::fs::read_to_string(&config).expect("installed config");
    edited.push_str("# the operator's edit\n");
    std::fs::write(&config, &edited).expect("editing");
    let data = root.join("var/lib/postgresql/15/pgbaton");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("PG_VERSION"), "15\n").expect("data");

    // The shipped example is a valid configuration.
    let check = Command::new(PGBATON)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "the shipped /etc/pgbaton/pgbaton.yml does not validate: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    dpkg_install(&root, &second);
    assert_eq!(
        std::fs::read_to_string(&config).expect("config after upgrade"),
        edited,
        "the upgrade kept the operator's configuration"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("PG_VERSION")).expect("data after upgrade"),
        "15\n"
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).expect("status");
    assert!(status.contains("Version: 0.0.2"), "{status}");
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = temp_dir("pgbaton-it-units-");
    for unit in ["pgbaton.service", "pgbaton-router.service"] {
        let text = std::fs::read_to_string(format!("{REPO}/packaging/systemd/{unit}"))
            .expect("reading the unit");
        // verify checks that ExecStart's binary exists: point it at the one under test.
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/bin/pgbaton", PGBATON)).expect("unit copy");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package) must be installed");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_notifies_systemd_ready_watchdog_and_stopping() {
    let mut cluster = Cluster::start_with(0, common::config::Timing::default()).await;
    cluster.add_member("node1");
    let socket_path = cluster.root().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let started = Instant::now();
    cluster.start_agent_with_env(
        "node1",
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready_at = None;
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains("READY=1") && ready_at.is_none() {
                ready_at = Some(started.elapsed());
            }
            messages.push(text);
            let watchdogs = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
            if ready_at.is_some() && watchdogs >= 3 {
                break;
            }
        }
    }
    let ready_at = ready_at.unwrap_or_else(|| cluster.fail(&format!("no READY=1: {messages:?}")));
    eprintln!("READY=1 after {ready_at:?}");
    // Ready means joined: the member is in the cluster when systemd hears it.
    let state = cluster.state().await.expect("cluster state");
    assert!(state.members.contains_key("node1"));
    assert!(
        messages.iter().any(|m| m.contains("STATUS=")),
        "{messages:?}"
    );
    // SIGTERM: STOPPING=1.
    let pid = cluster.agent_pid("node1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
}
