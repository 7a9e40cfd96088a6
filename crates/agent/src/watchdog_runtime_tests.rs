//! The agent's loop with a simulated watchdog device, a real PostgreSQL 15 and the in-memory
//! DCS: the device is armed while PostgreSQL is still a standby (before the promotion), fed
//! while the lease is renewed, not fed once etcd stops confirming it, and disarmed after the
//! demotion that follows (before it could have fired) and at a clean stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbaton_api::NodeStatus;
use pgbaton_dcs::{ClusterPath, MemoryDcs};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::super::{settings, Agent};
use crate::watchdog::{Device, Watchdog};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    /// Armed; whether standby.signal was still there (PostgreSQL not promoted yet).
    Arm {
        standby: bool,
    },
    Keepalive,
    Disarm,
}

#[derive(Default)]
struct Log {
    calls: Vec<(Instant, Call)>,
    /// When the device would fire (while armed).
    due: Option<Instant>,
    /// A call came after `due`: a real device would have reset the host.
    fired: bool,
}

#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<Log>>,
    data_dir: std::path::PathBuf,
}

impl Recorder {
    fn record(&self, call: Call, timeout: Option<u32>) {
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        if log.due.is_some_and(|due| now > due) {
            log.fired = true;
        }
        log.due = match call {
            Call::Disarm => None,
            _ => timeout
                .map(|t| now + Duration::from_secs(t.into()))
                .or(log.due.map(|_| now + Duration::from_secs(2))),
        };
        log.calls.push((now, call));
    }
    fn calls(&self) -> Vec<(Instant, Call)> {
        self.log.lock().unwrap().calls.clone()
    }
}

impl Device for Recorder {
    fn describe(&self) -> String {
        "recording watchdog".into()
    }
    fn probe(&self, _writer: Option<(u32, u32)>) -> Result<(), String> {
        Ok(())
    }
    fn arm(&mut self, timeout_s: u32) -> Result<u32, String> {
        let standby = self.data_dir.join("standby.signal").exists();
        self.record(Call::Arm { standby }, Some(timeout_s));
        Ok(timeout_s)
    }
    fn keepalive(&mut self) -> Result<(), String> {
        self.record(Call::Keepalive, Some(2));
        Ok(())
    }
    fn disarm(&mut self) -> Result<(), String> {
        self.record(Call::Disarm, None);
        Ok(())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// PostgreSQL's role over time, polled every 10 ms: (when, running as a primary).
type Roles = Arc<Mutex<Vec<(Instant, Option<bool>)>>>;

fn first_primary_after(roles: &Roles, after: Instant) -> Option<Instant> {
    roles
        .lock()
        .unwrap()
        .iter()
        .find(|(at, primary)| *at >= after && *primary == Some(true))
        .map(|(at, _)| *at)
}

fn last_primary_between(roles: &Roles, from: Instant, to: Instant) -> Option<Instant> {
    roles
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, primary)| *at >= from && *at <= to && *primary == Some(true))
        .map(|(at, _)| *at)
        .next_back()
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_arms_before_promoting_feeds_while_leading_and_disarms_on_demotion_and_stop() {
    assert!(
        std::path::Path::new("/usr/lib/postgresql/15/bin/postgres").exists(),
        "PostgreSQL 15 is needed: apt-get install -y postgresql-15"
    );
    // The agent's log, in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::Builder::new()
        .prefix("pgbaton-watchdog-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let root = dir.path().display().to_string();
    let (pg_port, api_port) = (free_port(), free_port());
    let yaml = format!(
        "scope: wd\nname: node1\nrestapi:\n  listen: 127.0.0.1:{api_port}\n  connect_address: 127.0.0.1:{api_port}\n\
         etcd3:\n  hosts: 127.0.0.1:9\nbootstrap:\n  dcs:\n    ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5\n\
         postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n  data_dir: {root}/data\n\
         \x20 bin_dir: /usr/lib/postgresql/15/bin\n  pgpass: {root}/pgpass\n  authentication:\n\
         \x20   superuser: {{username: postgres, password: postgres}}\n\
         \x20   replication: {{username: replicator, password: replicator}}\n\
         \x20 parameters:\n    unix_socket_directories: {root}/sock\n    shared_buffers: 32MB\n\
         pgbaton:\n  log_dir: {root}\nwatchdog:\n  mode: required\n  safety_margin: -1\n"
    );
    let cfg = pgbaton_config::parse_str(&yaml, "<test>")
        .expect("config")
        .value;
    let spec = settings::pg_spec(&cfg);
    // A data directory of its own: the agent adopts it, starts it as a standby, wins the
    // race for the leader key and promotes it.
    pgbaton_postgres::initdb(&spec, &[]).await.expect("initdb");
    let guard = scopeguard(&spec);
    pgbaton_api::install_default_crypto_provider();

    let dynamic = cfg.bootstrap.dcs.clone();
    let ha = settings::ha_config(&cfg, &dynamic);
    let store = MemoryDcs::new_store();
    let dcs = MemoryDcs::new(
        &store,
        ClusterPath::new(&cfg.namespace, &cfg.scope),
        "node1",
        Duration::from_millis(ha.ttl_ms),
    );
    let (status_tx, _status_rx) = watch::channel(NodeStatus::starting("wd", "node1", ha.ttl_ms));
    let watchdog_cfg = cfg.watchdog.clone();
    let mut agent = Agent::new(
        cfg,
        dynamic,
        ha.clone(),
        dcs,
        status_tx,
        crate::peers::HttpPeers::new(reqwest::Client::new()),
    );
    let device = Recorder {
        log: Default::default(),
        data_dir: spec.data_dir.clone(),
    };
    agent.watchdog = Watchdog::new(&watchdog_cfg, &ha, Box::new(device.clone()), None);
    let dcs = agent.dcs.clone();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_local_tx, local_rx) = mpsc::channel(1);
    // (The agent also starts `pgbaton lease-guard` from its own executable, here the test
    // binary, which refuses the arguments: only the in-process lease guard runs.)
    let run = tokio::spawn(async move { agent.run(shutdown_rx, local_rx).await });

    let roles: Roles = Default::default();
    let stop_polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (roles, stop, spec) = (roles.clone(), stop_polling.clone(), spec.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let role = pgbaton_postgres::query_status(&spec, Duration::from_millis(500))
                    .await
                    .ok()
                    .map(|s| !s.in_recovery);
                roles.lock().unwrap().push((Instant::now(), role));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let t0 = Instant::now();

    // 1. Armed while still a standby, before PostgreSQL became a primary.
    wait_for("the promotion", Duration::from_secs(90), || {
        first_primary_after(&roles, t0).is_some()
    })
    .await;
    let promoted = first_primary_after(&roles, t0).expect("promoted");
    let calls = device.calls();
    let (armed_at, first) = calls[0];
    assert_eq!(first, Call::Arm { standby: true }, "{calls:?}");
    assert!(
        armed_at <= promoted,
        "armed at {armed_at:?}, primary at {promoted:?}"
    );

    // 2. Fed while the lease is renewed (at each renewal and every 200 ms), and never
    //    disarmed while it leads: no demotion of a healthy leader because of the device.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let healthy: Vec<Instant> = device
        .calls()
        .iter()
        .filter(|(at, c)| *at > promoted && *c == Call::Keepalive)
        .map(|(at, _)| *at)
        .collect();
    assert!(healthy.len() >= 10, "keepalives: {healthy:?}");
    let calls = device.calls();
    assert!(
        !calls.iter().any(|(_, c)| *c == Call::Disarm),
        "disarmed while leading: {calls:?}"
    );
    // (The feeder runs every 50 ms; a loaded 2-core machine stretches that, but a gap as long
    // as the 2 s timeout would have reset the host.)
    for pair in healthy.windows(2) {
        assert!(
            pair[1] - pair[0] < Duration::from_secs(2),
            "gap {:?}: a real device would have fired",
            pair[1] - pair[0]
        );
    }
    assert!(!device.log.lock().unwrap().fired, "the device fired");

    // 3. etcd stops confirming the lease: keepalives stop once the last acknowledged renewal
    //    (sent before the cut) no longer covers the 2 s timeout, i.e. within ttl − 2 s; the
    //    agent demotes before the device is due and disarms it then.
    let cut = Instant::now();
    dcs.set_unreachable(true);
    wait_for("the disarm", Duration::from_secs(15), || {
        device
            .calls()
            .iter()
            .any(|(at, c)| *at > cut && *c == Call::Disarm)
    })
    .await;
    let calls = device.calls();
    let late_feeds: Vec<_> = calls
        .iter()
        .filter(|(at, c)| *at > cut + Duration::from_millis(2_300) && *c == Call::Keepalive)
        .collect();
    assert!(
        late_feeds.is_empty(),
        "fed without a confirmed lease: {late_feeds:?}"
    );
    let (disarmed_at, _) = *calls
        .iter()
        .find(|(at, c)| *at > cut && *c == Call::Disarm)
        .expect("disarmed");
    // The last moment PostgreSQL answered as a primary: it was stopped after that, and only
    // then was the device disarmed.
    let demoted = last_primary_between(&roles, cut, disarmed_at).unwrap_or(cut);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let primary_after_disarm = roles.lock().unwrap().iter().any(|(at, primary)| {
        *at > disarmed_at + Duration::from_millis(100) && *primary == Some(true)
    });
    assert!(
        !primary_after_disarm,
        "disarmed while PostgreSQL still ran as a primary"
    );
    let last_feed = calls
        .iter()
        .filter(|(at, c)| *at < disarmed_at && matches!(c, Call::Keepalive | Call::Arm { .. }))
        .map(|(at, _)| *at)
        .next_back()
        .expect("fed");
    assert!(
        disarmed_at < last_feed + Duration::from_secs(2),
        "disarmed {:?} after the last keepalive: a real device would have fired",
        disarmed_at - last_feed
    );
    assert!(!device.log.lock().unwrap().fired, "the device fired");
    eprintln!(
        "etcd cut: last keepalive {:.3}s after the cut, disarmed {:.3}s before the device was due",
        (last_feed - cut).as_secs_f64(),
        (last_feed + Duration::from_secs(2) - disarmed_at).as_secs_f64()
    );
    assert!(
        demoted - cut < Duration::from_millis(4_500),
        "demoted {:?} after the cut",
        demoted - cut
    );

    // 4. etcd back: leading again, armed again before PostgreSQL is a primary again.
    let back = Instant::now();
    dcs.set_unreachable(false);
    wait_for("leading again", Duration::from_secs(60), || {
        first_primary_after(&roles, back).is_some()
    })
    .await;
    let primary_again = first_primary_after(&roles, back).expect("primary again");
    let rearmed = device
        .calls()
        .iter()
        .find(|(at, c)| *at > back && matches!(c, Call::Arm { .. }))
        .map(|(at, _)| *at)
        .expect("armed again");
    assert!(rearmed <= primary_again, "{rearmed:?} / {primary_again:?}");

    // 5. A clean stop: PostgreSQL stopped, then the device disarmed.
    let stopping = Instant::now();
    shutdown_tx.send(true).expect("shutdown");
    run.await.expect("agent task").expect("agent run");
    stop_polling.store(true, std::sync::atomic::Ordering::SeqCst);
    poller.await.expect("poller");
    let calls = device.calls();
    // The timeline, for whoever reads the test output.
    let at = |t: Instant| format!("{:.3}s", (t - t0).as_secs_f64());
    eprintln!(
        "primary at {}, etcd cut at {}, last seen primary at {}, etcd back at {}, primary again at {}, stop at {}",
        at(promoted),
        at(cut),
        at(demoted),
        at(back),
        at(primary_again),
        at(stopping)
    );
    for (t, c) in &calls {
        eprintln!("  {} {c:?}", at(*t));
    }
    assert_eq!(
        calls.last().map(|(_, c)| *c),
        Some(Call::Disarm),
        "{calls:?}"
    );
    assert!(calls.last().is_some_and(|(at, _)| *at > stopping));
    assert!(!device.log.lock().unwrap().fired, "the device fired");
    assert!(
        pgbaton_postgres::query_status(&spec, Duration::from_millis(500))
            .await
            .is_err(),
        "PostgreSQL still runs after the clean stop"
    );
    drop(guard);
}

/// Stops a postmaster left behind by a failing test (immediate shutdown by its pid file).
struct PostmasterGuard(std::path::PathBuf);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        let pid_file = self.0.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

fn scopeguard(spec: &pgbaton_postgres::PgSpec) -> PostmasterGuard {
    PostmasterGuard(spec.data_dir.clone())
}
