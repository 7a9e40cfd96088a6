//! The router's web status page in a real browser: `pgbaton local up` (three members and its
//! router), a switchover so the failover history has a row, then Debian's chromium, headless,
//! loads `http://127.0.0.1:<status port>/`: the DOM after the page's JavaScript ran lists the
//! three members with the leader `ctl list` names, the history timeline shows the
//! switchover, and a screenshot PNG is produced whose pixels are not blank.
//! Chromium is required (scripts/install-deps.sh installs it): without it the test fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{require_binaries, temp_dir, PGBATON};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromium --headless` with the flags a root, display-less run needs, and `args`.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium")
}

/// `ctl list -f json` of the local cluster, as (member, role) pairs.
fn ctl_roles(config: &Path) -> Vec<(String, String)> {
    let out = Command::new(PGBATON)
        .arg("ctl")
        .arg("-c")
        .arg(config)
        .args(["list", "-f", "json"])
        .output()
        .expect("running ctl list");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                r["Member"].as_str().unwrap_or_default().to_string(),
                r["Role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every member running, one leader and two streaming replicas.
fn settled(roles: &[(String, String)]) -> Option<String> {
    let leaders: Vec<&String> = roles
        .iter()
        .filter(|(_, r)| r == "Leader")
        .map(|(m, _)| m)
        .collect();
    (roles.len() == 3 && leaders.len() == 1 && roles.iter().all(|(_, r)| !r.is_empty()))
        .then(|| leaders[0].clone())
}

#[test]
fn chromium_shows_the_members_the_leader_and_the_history_and_takes_a_screenshot() {
    require_binaries();
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it with `apt-get install -y chromium` (scripts/install-deps.sh does)"
    );
    let tmp = temp_dir("pgbaton-it-page-");
    let dir = tmp.path().join("cluster");
    let ports = common::ports::reserve();
    let (guard, text) = common::local_up::start(
        &["--members", "3", "--pool-mode", "session"],
        &dir,
        ports.base,
        Duration::from_secs(150),
    );
    let url = format!("http://127.0.0.1:{}/", ports.base + 4);
    assert!(
        text.contains(&format!("status page: {url}")),
        "local up prints the page's address:\n{text}"
    );

    // A switchover, so that the history key has a row and the page a timeline to draw.
    let config = dir.join("node1").join("pgbaton.yml");
    let wait_settled = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let roles = ctl_roles(&config);
            if let Some(leader) = settled(&roles) {
                return leader;
            }
            assert!(Instant::now() < deadline, "{what}: not settled: {roles:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let first = wait_settled("after local up");
    let candidate = ["node1", "node2", "node3"]
        .into_iter()
        .find(|n| *n != first)
        .unwrap();
    // Right after `local up` a replica's published position can still lag (the leader
    // refuses with 412 naming maximum_lag_on_failover): try again until it caught up.
    let switchover_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(PGBATON)
            .arg("ctl")
            .arg("-c")
            .arg(&config)
            .args([
                "switchover",
                "--leader",
                &first,
                "--candidate",
                candidate,
                "--force",
            ])
            .output()
            .expect("running ctl switchover");
        if out.status.success() {
            break;
        }
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("maximum_lag_on_failover") && Instant::now() < switchover_deadline,
            "switchover: {said}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let leader = loop {
        let roles = ctl_roles(&config);
        if let Some(l) = settled(&roles).filter(|l| l == candidate) {
            // Every replica streaming again (state column) before the page is read.
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the switchover to {candidate} did not settle: {roles:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // One session through the router's pool, so that the page has a pool to list.
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &(ports.base + 2).to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-Atc", "SELECT 1"])
        .env("PGPASSWORD", "postgres")
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql through the router: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The DOM once the page's script has polled: three member rows, the leader marked, and
    // both replicas streaming again after the switchover (the old leader rejoins a few
    // seconds later).
    let profile = tmp.path().join("chromium-profile");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dom = loop {
        let out = chromium(
            &profile,
            &["--virtual-time-budget=4000", "--dump-dom", url.as_str()],
        );
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        // What the script drew, without the script's own text.
        let dom = dom.split("<script>").next().unwrap_or_default().to_string();
        let rows = dom.matches("data-member=\"").count();
        let leader_row = format!("data-member=\"{leader}\" data-role=\"Leader\"");
        let streaming = dom.matches(">streaming<").count();
        if rows == 3
            && dom.contains(&leader_row)
            && dom.contains("data-timeline=\"2\"")
            && streaming == 2
        {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "chromium's DOM never showed 3 members with leader {leader}, timeline 2 and two replicas streaming \
             (status {}, stderr {}):\n{dom}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for name in ["node1", "node2", "node3"] {
        assert!(
            dom.contains(&format!("data-member=\"{name}\"")),
            "{name} missing:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("data-role=\"Leader\"").count(),
        1,
        "one leader:\n{dom}"
    );
    // The history timeline: timeline 1 ended by the switchover, timeline 2 now.
    assert!(
        dom.contains("data-timeline=\"1\"") && dom.contains("then: ".to_string().as_str()),
        "history row:\n{dom}"
    );
    assert!(dom.contains("writes go to"), "router section:\n{dom}");
    assert!(
        dom.contains("<tbody id=\"pools\"><tr><td>postgres</td><td>postgres</td>"),
        "the pool of the psql session:\n{dom}"
    );
    assert!(dom.contains(">streaming<"), "replicas streaming:\n{dom}");

    // The screenshot: a PNG of the window's size, with real content (many colours, not one
    // background).
    let shot = tmp.path().join("status-page.png");
    let out = chromium(
        &profile,
        &[
            "--virtual-time-budget=4000",
            "--window-size=1280,720",
            &format!("--screenshot={}", shot.display()),
            url.as_str(),
        ],
    );
    assert!(
        shot.exists(),
        "no screenshot ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&shot).expect("reading the screenshot");
    assert!(
        bytes.len() > 20_000,
        "a screenshot of {} bytes is too small",
        bytes.len()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG pixels");
    assert_eq!((info.width, info.height), (1280, 720), "window size");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| &p[..3])
        .collect();
    let mut colours: Vec<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    let dark = pixels
        .iter()
        .filter(|p| (p[0] as u32 + p[1] as u32 + p[2] as u32) < 200)
        .count();
    // The header bar alone is ~5 % dark pixels; text and the green leader badge add colours.
    assert!(
        colours.len() > 50,
        "only {} colours: a blank page?",
        colours.len()
    );
    assert!(
        dark * 100 > pixels.len() * 3,
        "{dark} dark pixels of {}: the page did not render",
        pixels.len()
    );
    let green = pixels
        .iter()
        .filter(|p| p[0] == 0x1f && p[1] == 0x7a && p[2] == 0x3a)
        .count();
    assert!(green > 200, "the leader's green badge: {green} pixels");
    if let Ok(keep) = std::env::var("PGBATON_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("copying the screenshot");
        eprintln!("screenshot kept in {keep}");
    }
    drop(guard);
}
