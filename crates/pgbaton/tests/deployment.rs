//! docs/DEPLOYMENT.md, followed by a test. The guide's blocks marked `run=...` run as they
//! are (openssl makes the CA and the host certificates; sed derives db2's and db3's files),
//! its `file=...` blocks are written as they are, and the four hosts are network namespaces
//! with the guide's addresses (192.0.2.11-13 for db1-db3, 192.0.2.21 for app1, on a bridge of
//! their own: nothing outside the namespaces is touched). Each host's files are installed as
//! the guide installs them, with every path under /etc and /var moved below the host's
//! directory of this test. The services start with the `Environment` and `ExecStart` of
//! their units (packaging/systemd, the guide's proxy unit; Debian's etcd unit
//! reads /etc/default/etcd as its environment). The guide's blocks marked `on=<host>` run on
//! that host and what they print is checked: etcd healthy over TLS, `ctl list`, the REST API
//! over https, a write through the router verified with `sslmode=verify-full`, a plain-text
//! connection refused, replication over TLS, a switchover, then the loss of the leader's
//! host and its return as a replica. Every process and namespace goes away at the end, also
//! when the test fails (the guard's Drop). `PGBATON_DEPLOYMENT_OUTPUTS=FILE` writes what each
//! check printed (the outputs the guide shows).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{require_binaries, PGBATON};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The guide's hosts and their addresses.
const HOSTS: [(&str, &str); 4] = [
    ("db1", "192.0.2.11"),
    ("db2", "192.0.2.12"),
    ("db3", "192.0.2.13"),
    ("app1", "192.0.2.21"),
];
const DB_HOSTS: [&str; 3] = ["db1", "db2", "db3"];

/// One fenced block of the guide: its attributes (`run=certs`, `file=...`, `on=db1`,
/// `check=list`) and its text.
struct Block {
    attrs: BTreeMap<String, String>,
    body: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => {
                    let attrs = info
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|a| a.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    current = Some(Block {
                        attrs,
                        body: String::new(),
                    });
                }
            }
        } else if let Some(block) = current.as_mut() {
            block.body.push_str(line);
            block.body.push('\n');
        }
    }
    out
}

fn find<'a>(blocks: &'a [Block], key: &str, value: &str) -> &'a Block {
    blocks
        .iter()
        .find(|b| b.attrs.get(key).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("docs/DEPLOYMENT.md has no block {key}={value}"))
}

/// `text` as it reads on a host whose / for /etc and /var is `root`: every absolute path
/// starting with /etc/ or /var/ (at the start, or after a space, `=`, `:`, `,`, a quote or
/// `(`) is moved below `root`.
fn on_host(text: &str, root: &Path) -> String {
    let root = root.display().to_string();
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let boundary = prev.is_none_or(|c| " \t\n=:,'\"(".contains(c));
        if boundary && (rest.starts_with("/etc/") || rest.starts_with("/var/")) {
            out.push_str(&root);
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

/// `Environment=` and `ExecStart=` of a unit, `${VAR}` expanded.
#[derive(Default)]
struct Unit {
    env: Vec<(String, String)>,
    exec: Vec<String>,
}

impl Unit {
    fn read(text: &str) -> Unit {
        let mut unit = Unit::default();
        unit.add(text);
        unit
    }

    fn add(&mut self, text: &str) {
        for line in text.lines().map(str::trim) {
            if let Some(env) = line.strip_prefix("Environment=") {
                for pair in env.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("Environment=K=V");
                    self.env.push((k.to_string(), v.to_string()));
                }
            } else if let Some(exec) = line.strip_prefix("ExecStart=") {
                self.exec = exec.split_whitespace().map(str::to_string).collect();
            }
        }
    }

    /// The command line with `${VAR}` from the environment.
    fn argv(&self) -> Vec<String> {
        self.exec
            .iter()
            .map(|arg| {
                let mut arg = arg.clone();
                for (k, v) in &self.env {
                    arg = arg.replace(&format!("${{{k}}}"), v);
                }
                arg
            })
            .collect()
    }
}

/// The namespaces, the processes and the directory of one run; Drop removes them all.
struct Deployment {
    run: String,
    root: PathBuf,
    bin: PathBuf,
    children: Vec<Child>,
    outputs: Vec<(String, String)>,
}

impl Deployment {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.run)
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.run)
    }

    fn host_root(&self, host: &str) -> PathBuf {
        self.root.join("hosts").join(host)
    }

    fn create_network(&self) {
        let br = self.bridge();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (host, addr) in HOSTS {
            let ns = self.ns(host);
            let veth = format!("v-{host}");
            ip(&["netns", "add", &ns]);
            ip(&[
                "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &veth, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &veth, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
    }

    /// Start `argv` on `host` with `env`, output appended to `<host root>/<log>`.
    fn spawn(&mut self, host: &str, argv: &[String], env: &[(String, String)], log: &str) {
        let log = self.host_root(host).join(log);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?} on {host}: {e}"));
        self.children.push(child);
    }

    /// etcd on `host` as Debian's unit runs it: `/usr/bin/etcd` with /etc/default/etcd as
    /// its environment.
    fn start_etcd(&mut self, host: &str) {
        let root = self.host_root(host);
        let env: Vec<(String, String)> = fs::read_to_string(root.join("etc/default/etcd"))
            .expect("/etc/default/etcd")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').expect("KEY=VALUE");
                (k.to_string(), v.to_string())
            })
            .collect();
        self.spawn(host, &["/usr/bin/etcd".to_string()], &env, "etcd.log");
    }

    /// `pgbaton agent` as packaging/systemd/pgbaton.service runs it.
    fn start_agent(&mut self, host: &str) {
        let unit = Unit::read(&read(&format!("{REPO}/packaging/systemd/pgbaton.service")));
        self.start_unit(host, &unit, "agent.log");
    }

    fn start_unit(&mut self, host: &str, unit: &Unit, log: &str) {
        let root = self.host_root(host);
        let env: Vec<(String, String)> = unit
            .env
            .iter()
            .map(|(k, v)| (k.clone(), on_host(v, &root)))
            .chain([("PGBATON_LOG".to_string(), "info".to_string())])
            .collect();
        let mut argv: Vec<String> = unit.argv().iter().map(|a| on_host(a, &root)).collect();
        if argv[0] == "/usr/bin/pgbaton" {
            argv[0] = PGBATON.to_string();
        }
        self.spawn(host, &argv, &env, log);
    }

    /// A guide block run on `host` by bash (its paths moved as the host's files were; the
    /// binary under test is the `pgbaton` on PATH): exit status and output.
    fn run_on(&self, host: &str, block: &Block) -> (bool, String) {
        let script = on_host(&block.body, &self.host_root(host));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "bash", "-c", &script])
            .env(
                "PATH",
                format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap()),
            )
            .stdin(Stdio::null())
            .output()
            .expect("running bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Run `block` on `host` until `ok` accepts its output (at most `limit`); the output.
    fn wait_for(
        &mut self,
        host: &str,
        block: &Block,
        what: &str,
        limit: Duration,
        ok: impl Fn(bool, &str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (success, text) = self.run_on(host, block);
            if ok(success, &text) {
                eprintln!("== {what} (on {host}) ==\n{text}");
                self.outputs.push((what.to_string(), text.clone()));
                return text;
            }
            if Instant::now() > deadline {
                panic!("{what}: not reached in {limit:?}; last output:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// SIGKILL every process of `host` (the host crashes).
    fn crash(&mut self, host: &str) {
        kill_all_in(&self.ns(host));
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (host, _) in HOSTS {
            for log in [
                "etcd.log",
                "agent.log",
                "var/log/postgresql/postgresql.log",
                "router.log",
                "grpc-proxy.log",
            ] {
                let path = self.host_root(host).join(log);
                if let Ok(text) = fs::read_to_string(&path) {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                    out.push_str(&format!("--- {host}/{log}\n{tail}\n"));
                }
            }
        }
        out
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (host, _) in HOSTS {
            kill_all_in(&self.ns(host));
        }
        for (host, _) in HOSTS {
            pgbaton_testkit::release_shared_memory_under(
                &self.host_root(host).join("var/lib/postgresql/15"),
            );
        }
        for (host, _) in HOSTS {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge()])
            .status();
        if std::thread::panicking() && std::env::var_os("PGBATON_KEEP_DEPLOYMENT").is_some() {
            eprintln!("kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGKILL every process in namespace `ns` until none is left (at most 5 s).
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = Command::new("ip").args(["netns", "pids", ns]).output();
        let pids: Vec<i32> = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// `install -m MODE [-o/-g] SRC DEST` with the text `content`.
fn install(dest: &Path, content: &[u8], mode: u32, owner: Option<(u32, u32)>) {
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(dest, content).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).unwrap();
    if let Some((uid, gid)) = owner {
        chown(dest, Some(uid), Some(gid)).unwrap();
    }
}

fn postgres_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .expect("reading the user database")
        .expect("the postgres user (Debian's postgresql-15 package creates it)");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// The member table rows of `ctl list`: member → (role, state, timeline).
fn members(list: &str) -> BTreeMap<String, (String, String, String)> {
    list.lines()
        .filter(|l| l.starts_with("| db"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | Member | Host | Role | State | TL | Lag in MB |
            Some((
                cells.get(1)?.to_string(),
                (
                    cells.get(3)?.to_string(),
                    cells.get(4)?.to_string(),
                    cells.get(5)?.to_string(),
                ),
            ))
        })
        .collect()
}

/// One leader `leader` and every other member of `expect` streaming on its timeline.
fn settled(list: &str, leader: &str, expect: &[&str]) -> bool {
    let m = members(list);
    let Some((role, state, tl)) = m.get(leader) else {
        return false;
    };
    role == "Leader"
        && state == "running"
        && m.len() == expect.len()
        && expect.iter().filter(|n| **n != leader).all(|n| {
            m.get(*n)
                .is_some_and(|(r, s, t)| r == "Replica" && s == "streaming" && t == tl)
        })
}

#[test]
fn the_deployment_guide_builds_a_tls_cluster_that_switches_over_and_survives_a_host_loss() {
    require_binaries();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test creates network namespaces: run it as root"
    );
    for tool in ["openssl", "curl", "psql", "etcdctl"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing (scripts/install-deps.sh installs it)"
        );
    }
    let started = Instant::now();
    let guide = read(&format!("{REPO}/docs/DEPLOYMENT.md"));
    let blocks = blocks(&guide);
    let run = format!("pgbd{}", std::process::id() % 100_000);
    let root = PathBuf::from(format!("/tmp/pgbaton-deployment-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    mkdir(&root, 0o755, None);
    let bin = root.join("bin");
    mkdir(&bin, 0o755, None);
    std::os::unix::fs::symlink(PGBATON, bin.join("pgbaton")).unwrap();
    let mut d = Deployment {
        run,
        root: root.clone(),
        bin,
        children: Vec::new(),
        outputs: Vec::new(),
    };

    // 1. The admin machine: certificates, the files, db2's and db3's.
    let admin = root.join("admin");
    mkdir(&admin, 0o755, None);
    for step in ["certs", "derive"] {
        if step == "derive" {
            for b in blocks.iter().filter(|b| b.attrs.contains_key("file")) {
                let path = admin.join(&b.attrs["file"]);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &b.body).unwrap();
            }
        }
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &find(&blocks, "run", step).body])
            .current_dir(&admin)
            .output()
            .expect("bash");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "run={step}: {text}");
        eprintln!("== run={step} ==\n{text}");
        d.outputs.push((format!("run={step}"), text));
    }
    let files = admin.join("pg-cluster");

    // 2. The hosts, their files installed as the guide installs them (Debian's directories
    // for PostgreSQL as its package makes them).
    d.create_network();
    let pg = postgres_ids();
    let tls = files.join("tls");
    let bytes = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for (host, _) in HOSTS {
        let h = d.host_root(host);
        mkdir(&h, 0o755, None);
        let etc_tls = h.join("etc/etcd/tls");
        mkdir(&etc_tls, 0o700, None);
        install(
            &etc_tls.join("ca.crt"),
            &bytes(tls.join("ca.crt")),
            0o600,
            None,
        );
        install(
            &etc_tls.join("host.crt"),
            &bytes(tls.join(format!("{host}.crt"))),
            0o600,
            None,
        );
        install(
            &etc_tls.join("host.key"),
            &bytes(tls.join(format!("{host}.key"))),
            0o600,
            None,
        );
        let pg_tls = h.join("etc/pgbaton/tls");
        if host == "app1" {
            mkdir(&pg_tls, 0o755, None);
            install(
                &pg_tls.join("ca.crt"),
                &bytes(tls.join("ca.crt")),
                0o644,
                None,
            );
            let unit = fs::read_to_string(files.join("app1/etcd-grpc-proxy.service")).unwrap();
            install(
                &h.join("etc/systemd/system/etcd-grpc-proxy.service"),
                unit.as_bytes(),
                0o644,
                None,
            );
            let router = fs::read_to_string(files.join("app1/router.yml")).unwrap();
            install(
                &h.join("etc/pgbaton/router.yml"),
                on_host(&router, &h).as_bytes(),
                0o640,
                None,
            );
            continue;
        }
        mkdir(&pg_tls, 0o750, Some((0, pg.1)));
        install(
            &pg_tls.join("ca.crt"),
            &bytes(tls.join("ca.crt")),
            0o644,
            None,
        );
        install(
            &pg_tls.join("host.crt"),
            &bytes(tls.join(format!("{host}.crt"))),
            0o644,
            None,
        );
        install(
            &pg_tls.join("host.key"),
            &bytes(tls.join(format!("{host}.key"))),
            0o640,
            Some((0, pg.1)),
        );
        let text = |f: &str| on_host(&fs::read_to_string(files.join(host).join(f)).unwrap(), &h);
        install(
            &h.join("etc/default/etcd"),
            text("etcd").as_bytes(),
            0o644,
            None,
        );
        install(
            &h.join("etc/pgbaton/pgbaton.yml"),
            text("pgbaton.yml").as_bytes(),
            0o600,
            None,
        );
        mkdir(&h.join("var/lib/etcd"), 0o700, None);
        mkdir(&h.join("var/lib/postgresql/15"), 0o755, Some((pg.0, pg.1)));
        mkdir(&h.join("var/run/postgresql"), 0o2775, Some((pg.0, pg.1)));
        mkdir(&h.join("var/log/postgresql"), 0o1775, Some((0, pg.1)));
        // The guide's `pgbaton check-config` step.
        let out = Command::new(PGBATON)
            .args(["check-config", "--config"])
            .arg(h.join("etc/pgbaton/pgbaton.yml"))
            .output()
            .expect("check-config");
        assert!(
            out.status.success(),
            "check-config on {host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The proxy's unit passes systemd-analyze verify (the package's units are verified in
    // package.rs).
    let unit_copy = root.join("etcd-grpc-proxy.service");
    fs::copy(files.join("app1/etcd-grpc-proxy.service"), &unit_copy).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_copy)
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify etcd-grpc-proxy.service: {said}"
    );

    // 3. etcd on the three database hosts, healthy over TLS with client certificates.
    for host in DB_HOSTS {
        d.start_etcd(host);
    }
    let etcd = find(&blocks, "check", "etcd");
    let health = d.wait_for(
        "db1",
        etcd,
        "etcd health",
        Duration::from_secs(40),
        |ok, t| ok && t.matches("is healthy").count() == 3,
    );
    assert!(health.contains("https://192.0.2.13:2379 is healthy"));
    // Without a client certificate etcd refuses.
    let bare = Block {
        attrs: BTreeMap::new(),
        body: "ETCDCTL_API=3 etcdctl --endpoints=https://192.0.2.11:2379 \
               --cacert=/etc/etcd/tls/ca.crt --command-timeout=2s get x 2>&1"
            .to_string(),
    };
    let (ok, text) = d.run_on("db1", &bare);
    assert!(!ok, "etcd answered a client without a certificate: {text}");

    // 4. The agents: db1 first (it bootstraps), then db2 and db3 (they clone over TLS).
    let list = find(&blocks, "check", "list");
    d.start_agent("db1");
    d.wait_for(
        "db1",
        list,
        "db1 leads",
        Duration::from_secs(60),
        |ok, t| ok && settled(t, "db1", &["db1"]),
    );
    d.start_agent("db2");
    d.start_agent("db3");
    let all = ["db1", "db2", "db3"];
    d.wait_for("db1", list, "ctl list", Duration::from_secs(90), |ok, t| {
        ok && settled(t, "db1", &all)
    });
    d.wait_for(
        "db2",
        find(&blocks, "check", "rest"),
        "REST over https",
        Duration::from_secs(10),
        |ok, t| ok && t.trim() == "200",
    );
    let replication = d.wait_for(
        "db1",
        find(&blocks, "check", "replication"),
        "replication over TLS",
        Duration::from_secs(30),
        |ok, t| ok && t.contains("db2") && t.contains("db3"),
    );
    for member in ["db2", "db3"] {
        let row = replication
            .lines()
            .find(|l| l.trim_start().starts_with(member))
            .unwrap_or_else(|| panic!("{member} in:\n{replication}"));
        assert!(
            row.contains("| t ") && row.contains("streaming"),
            "{member} streams over TLS: {row}"
        );
    }
    // The replicas check the leader's certificate (authentication.replication.sslmode).
    d.wait_for(
        "db2",
        find(&blocks, "check", "conninfo"),
        "primary_conninfo with verify-full",
        Duration::from_secs(10),
        |ok, t| {
            ok && t.contains("sslmode='verify-full'")
                && t.contains("passfile=")
                && !t.contains("password=")
        },
    );

    // 5. app1: the etcd proxy and the router as their units run them; a write through the
    // router, TLS from psql to PostgreSQL checked with verify-full.
    let proxy = Unit::read(&read(
        files.join("app1/etcd-grpc-proxy.service").to_str().unwrap(),
    ));
    d.start_unit("app1", &proxy, "grpc-proxy.log");
    let router = Unit::read(&read(&format!(
        "{REPO}/packaging/systemd/pgbaton-router.service"
    )));
    d.start_unit("app1", &router, "router.log");
    let write = find(&blocks, "check", "write");
    let server_is = |addr: &'static str| {
        move |ok: bool, t: &str| ok && t.contains(&format!(" {addr} ")) && t.contains("| t ")
    };
    let text = d.wait_for(
        "app1",
        write,
        "write through the router",
        Duration::from_secs(30),
        server_is("192.0.2.11"),
    );
    assert!(
        text.contains("INSERT 0 1") && text.contains("TLSv1.3"),
        "{text}"
    );
    d.wait_for(
        "app1",
        find(&blocks, "check", "plain"),
        "plain text refused",
        Duration::from_secs(5),
        |_, t| t.contains("no pg_hba.conf entry") && t.contains("no encryption"),
    );

    // The router's status page data, read from etcd through the proxy.
    d.wait_for(
        "app1",
        find(&blocks, "check", "page"),
        "status page data",
        Duration::from_secs(10),
        |ok, t| {
            ok && t.contains("\"leader\":\"db1\"")
                && t.matches("\"state\":\"streaming\"").count() == 2
        },
    );

    // 6. Switchover db1 → db2 through the REST API over https.
    d.wait_for(
        "db1",
        find(&blocks, "check", "switchover"),
        "switchover",
        Duration::from_secs(5),
        |ok, _| ok,
    );
    d.wait_for(
        "db1",
        list,
        "ctl list after the switchover",
        Duration::from_secs(60),
        |ok, t| ok && settled(t, "db2", &all),
    );
    d.wait_for(
        "app1",
        write,
        "write after the switchover",
        Duration::from_secs(20),
        server_is("192.0.2.12"),
    );

    // 7. The leader's host crashes: etcd, the agent and PostgreSQL of db2 are killed.
    let lost = Instant::now();
    d.crash("db2");
    let after_loss = d.wait_for(
        "db1",
        list,
        "ctl list after db2 is lost",
        Duration::from_secs(60),
        |ok, t| ok && (settled(t, "db1", &["db1", "db3"]) || settled(t, "db3", &["db1", "db3"])),
    );
    let new_leader = if settled(&after_loss, "db1", &["db1", "db3"]) {
        "192.0.2.11"
    } else {
        "192.0.2.13"
    };
    d.wait_for(
        "app1",
        write,
        "write after the loss",
        Duration::from_secs(20),
        server_is(new_leader),
    );
    eprintln!(
        "a write reached the new leader {:.1} s after db2 was lost",
        lost.elapsed().as_secs_f64()
    );

    // 8. db2 comes back (its units start again): a replica of the new leader.
    d.start_etcd("db2");
    d.start_agent("db2");
    let leader_name = if new_leader == "192.0.2.11" {
        "db1"
    } else {
        "db3"
    };
    d.wait_for(
        "db1",
        list,
        "ctl list after db2 is back",
        Duration::from_secs(90),
        |ok, t| ok && settled(t, leader_name, &all),
    );
    let db2_log = fs::read_to_string(d.host_root("db2").join("agent.log")).unwrap();
    assert!(
        db2_log.contains("pg_rewind done"),
        "db2 came back through pg_rewind:\n{db2_log}"
    );
    // The agent checks the rewind source's timeline (and checkpoints a freshly promoted
    // source) through libpq, which the hostssl-only pg_hba.conf accepts.
    assert!(
        !db2_log.contains("could not check the rewind source"),
        "the rewind source was not checked:\n{db2_log}"
    );
    d.wait_for(
        "db1",
        etcd,
        "etcd health at the end",
        Duration::from_secs(20),
        |ok, t| ok && t.matches("is healthy").count() == 3,
    );

    if let Ok(path) = std::env::var("PGBATON_DEPLOYMENT_OUTPUTS") {
        let text: String = d
            .outputs
            .iter()
            .map(|(what, out)| format!("== {what}\n{out}\n"))
            .collect();
        fs::write(&path, text).expect("writing the outputs");
    }
    eprintln!("deployment test: {:.0} s", started.elapsed().as_secs_f64());
    drop(d);
    let leftovers = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !leftovers.contains(&format!("pgbd{}-", std::process::id() % 100_000)),
        "namespaces left: {leftovers}"
    );
    assert!(!root.exists(), "{} left", root.display());
}
