//! Forwarding after the startup, on real PostgreSQL 15 and etcd, by the kernel
//! (`forwarding: kernel`, a BPF socket map: needs root, as the whole suite does) and by the
//! router's own relay (`forwarding: userspace`), with the same checks: bulk data both ways
//! arrives whole, a server that ends the session reaches the client with its error, a client
//! that leaves ends its server backend, and the metrics count the sessions and bytes.

mod support;

use std::time::Duration;

use pgbaton_router::Forwarding;
use support::{app_config, eventually, Cluster, RunningRouter, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

/// Whether the backend `pid` still runs on the primary, seen directly.
async fn backend_alive(admin: &tokio_postgres::Client, pid: i32) -> bool {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("look up the backend")
        .get::<_, i64>(0)
        == 1
}

async fn forward_everything(forwarding: Forwarding) {
    let cluster = Cluster::start(false).await;
    let mut cfg = cluster.router_config();
    cfg.forwarding = forwarding;
    let router = RunningRouter::start(cfg).await;
    let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("direct connection");
    let app = format!("forwarding-{}", forwarding.label());
    let mut config = app_config(router.write, None);
    config.application_name(&app);

    // Bulk both ways: a 16 MiB parameter up, 48 MiB of rows down, checked byte for byte.
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    let connection = tokio::spawn(connection);
    let up = "p".repeat(16 << 20);
    let row = client
        .query_one(
            "SELECT length($1::text), md5($1::text) = md5(repeat('p', 16 << 20))",
            &[&up],
        )
        .await
        .expect("16 MiB up");
    assert_eq!(row.get::<_, i32>(0), 16 << 20);
    assert!(
        row.get::<_, bool>(1),
        "the 16 MiB parameter arrived damaged"
    );
    let rows = client
        .query(
            "SELECT i, repeat(chr(65 + i % 26), 1024) FROM generate_series(0, 49151) i",
            &[],
        )
        .await
        .expect("48 MiB down");
    assert_eq!(rows.len(), 49152);
    for row in &rows {
        let i: i32 = row.get(0);
        let text: &str = row.get(1);
        let letter = char::from(b'A' + (i % 26) as u8);
        assert!(
            text.len() == 1024 && text.chars().all(|c| c == letter),
            "row {i} arrived damaged"
        );
    }
    drop(rows);

    // Many small round trips in one session: nothing stalls, nothing is reordered.
    for i in 0..2000i32 {
        let row = client
            .query_one("SELECT $1::int + 1", &[&i])
            .await
            .expect("round trip");
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }

    // The server ends the session: the client gets PostgreSQL's own FATAL, not just a
    // closed connection. (The backend terminates itself: a backend terminated from another
    // session while idle does not always get its FATAL out, even without the router.)
    let error = client
        .simple_query("SELECT pg_terminate_backend(pg_backend_pid())")
        .await
        .expect_err("the session ends with an error");
    let code = error.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(
        code.as_deref(),
        Some("57P01"),
        "the client should see admin_shutdown, got {error:?}"
    );
    tokio::time::timeout(T, connection)
        .await
        .expect("the connection ends")
        .expect("connection task")
        .expect_err("the connection ends with the error");

    // A client that leaves ends its backend.
    let (leaving, connection) = config.connect(NoTls).await.expect("connect");
    let connection = tokio::spawn(connection);
    let pid: i32 = leaving
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    assert!(backend_alive(&admin, pid).await, "the backend runs");
    drop(leaving);
    let _ = connection.await;
    eventually("the backend of a client that left to end", T, || async {
        (!backend_alive(&admin, pid).await).then_some(())
    })
    .await;

    // Bytes are counted when a session ends (with kernel forwarding, shortly after a side
    // closed: the kernel passes on what that side sent last first).
    let metrics = eventually("both sessions to be counted", T, || async {
        let metrics = router.http_get("/metrics").await;
        metrics
            .contains(r#"pgbaton_router_connections_active{role="write",backend="node1"} 0"#)
            .then_some(metrics)
    })
    .await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    let kernel = value("pgbaton_router_kernel_forwarded_sessions_total");
    match forwarding {
        Forwarding::Kernel => assert_eq!(kernel, 2.0, "{metrics}"),
        _ => assert_eq!(kernel, 0.0, "{metrics}"),
    }
    let down = value(r#"pgbaton_router_bytes_total{direction="to_client",backend="node1"}"#);
    let up_bytes = value(r#"pgbaton_router_bytes_total{direction="to_server",backend="node1"}"#);
    assert!(down > 48.0 * 1024.0 * 1024.0, "{metrics}");
    assert!(up_bytes > 16.0 * 1024.0 * 1024.0, "{metrics}");
    let status = router.status().await;
    assert_eq!(
        status["forwarding"],
        match forwarding {
            Forwarding::Kernel => "kernel",
            _ => "userspace",
        },
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_forwards_whole_sessions() {
    forward_everything(Forwarding::Kernel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_userspace_relay_forwards_whole_sessions() {
    forward_everything(Forwarding::Userspace).await;
}

/// A slow reader holds back a fast server without losing or reordering bytes: a raw
/// protocol client asks for 32 MiB of rows, reads nothing for a second (the server fills
/// every buffer on the way and must wait), then reads in small pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_through_the_kernel() {
    let cluster = Cluster::start(false).await;
    let mut cfg = cluster.router_config();
    cfg.forwarding = Forwarding::Kernel;
    let router = RunningRouter::start(cfg).await;
    let mut stream = TcpStream::connect(router.write).await.expect("connect");
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", "app"), ("database", "postgres")] {
        startup.extend_from_slice(k.as_bytes());
        startup.push(0);
        startup.extend_from_slice(v.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    stream.write_all(&packet).await.expect("startup");
    let rows = 32768u32;
    let query = format!(
        "SELECT repeat(chr(65 + i % 26), 1024) FROM generate_series(0, {}) i\0",
        rows - 1
    );
    let mut ready = 0;
    let mut seen = 0u32;
    let mut paused = false;
    let mut input = Vec::new();
    let mut piece = vec![0u8; 4096];
    loop {
        // Parse the whole messages received so far.
        while input.len() >= 5 {
            let len = u32::from_be_bytes(input[1..5].try_into().expect("4 bytes")) as usize;
            if input.len() < 1 + len {
                break;
            }
            let body = &input[5..1 + len];
            match input[0] {
                b'Z' => {
                    ready += 1;
                    if ready == 1 {
                        let mut q = vec![b'Q'];
                        q.extend_from_slice(&((query.len() + 4) as u32).to_be_bytes());
                        q.extend_from_slice(query.as_bytes());
                        stream.write_all(&q).await.expect("query");
                    }
                }
                b'D' => {
                    // One column: count (2), length (4), the text.
                    let text = &body[6..];
                    let letter = b'A' + (seen % 26) as u8;
                    assert!(
                        text.len() == 1024 && text.iter().all(|b| *b == letter),
                        "row {seen} arrived damaged or out of order"
                    );
                    seen += 1;
                }
                b'E' => panic!("error: {}", String::from_utf8_lossy(body)),
                _ => {}
            }
            input.drain(..1 + len);
        }
        if ready == 2 {
            break;
        }
        if ready == 1 && !paused {
            // The query is sent: read nothing for a while.
            tokio::time::sleep(Duration::from_secs(1)).await;
            paused = true;
        }
        let n = tokio::time::timeout(T, stream.read(&mut piece))
            .await
            .unwrap_or_else(|_| panic!("the rows stopped coming after {seen} rows (ready {ready})"))
            .expect("read");
        assert!(n > 0, "the router closed the session after {seen} rows");
        input.extend_from_slice(&piece[..n]);
        if seen.is_multiple_of(1024) && seen > 0 && seen < rows {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(seen, rows);
}
