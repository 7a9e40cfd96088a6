//! Real namespaces: two hosts joined by the bridge reach each other over TCP, an `isolate`
//! table in one host's namespace cuts it off until the table is deleted, and destroying the
//! topology leaves no namespace behind (also when the test fails: the guard destroys it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pgbaton_chaos::netns::{self, Topology};
use pgbaton_chaos::nft;
use pgbaton_chaos::shell::{nft_apply, nft_delete};

struct Guard(Topology);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests create network namespaces: run them as root"
    );
    assert!(
        pgbaton_chaos::shell::run("nft", &["--version"], None).is_ok(),
        "nft is missing: install it with `apt-get install -y nftables`"
    );
}

/// Try a TCP connection (and one echoed byte) from inside namespace `ns`.
fn reach_from(ns: &str, to: SocketAddr) -> bool {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the namespace");
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(700)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(700)));
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"x"
    })
    .join()
    .expect("the probing thread panicked")
}

/// An echo server on `addr` inside `ns`, for as long as the test runs.
fn echo_in(ns: &str, addr: SocketAddr) {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the namespace");
        let listener = TcpListener::bind(addr).expect("binding the echo server");
        let _ = tx.send(());
        for mut s in listener.incoming().flatten() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the echo server did not start");
}

fn ns_exists(prefix: &str) -> bool {
    pgbaton_chaos::shell::ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(prefix))
}

#[test]
fn hosts_talk_through_the_bridge_until_isolated_and_vanish_on_destroy() {
    require_root_and_tools();
    // A run id no chaos process uses: this test's pid, offset out of the pid range.
    let run = 9_000_000 + std::process::id() % 1_000_000;
    let topo = Topology::plan(run, 2, 1);
    let guard = Guard(topo.clone());
    topo.create().expect("creating the namespaces");

    let n1 = topo.members()[0].clone();
    let n2 = topo.members()[1].clone();
    let server = SocketAddr::from((n2.ip, 7000));
    echo_in(&n2.ns, server);
    assert!(
        reach_from(&n1.ns, server),
        "n1 cannot reach n2 through the bridge"
    );
    assert!(
        reach_from(&topo.client().ns, server),
        "the client cannot reach n2"
    );

    let table = nft::table_name(1);
    nft_apply(&n2.ns, &nft::isolate(&table)).expect("installing the isolate table");
    assert!(
        !reach_from(&n1.ns, server),
        "n1 still reaches the isolated n2"
    );
    assert!(
        !reach_from(&topo.client().ns, server),
        "the client still reaches the isolated n2"
    );

    nft_delete(&n2.ns, &table).expect("deleting the isolate table");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reach_from(&n1.ns, server) {
        assert!(Instant::now() < deadline, "n2 unreachable after healing");
    }

    let prefix = format!("{}{run}-", netns::PREFIX);
    assert!(ns_exists(&prefix));
    drop(guard);
    assert!(
        !ns_exists(&prefix),
        "namespaces of run {run} are left after destroy"
    );
}
