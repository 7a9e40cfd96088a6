//! Clients that misbehave, and the protocol's side doors, on real PostgreSQL 15 and etcd:
//! garbage, truncated and silent clients are dropped without disturbing an open session;
//! SSLRequest is answered `N`; a CancelRequest through the router cancels a running query.

mod support;

use std::time::{Duration, Instant};

use support::{connect, eventually, Cluster, RunningRouter, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the router sends until it closes the connection (bounded by `within`).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the router closes the connection in time")
        .expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_clients_do_not_disturb_an_open_session() {
    let cluster = Cluster::start(false).await;
    let router = RunningRouter::start(cluster.router_config()).await;
    let session = connect(router.write, None).await;
    session
        .batch_execute("BEGIN; INSERT INTO t (note) VALUES ('open transaction')")
        .await
        .expect("begin");

    // Not PostgreSQL at all: an ErrorResponse (protocol violation), then closed.
    let mut http = TcpStream::connect(router.write).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let answer = read_until_closed(&mut http, T).await;
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));

    // An oversized length word.
    let mut huge = TcpStream::connect(router.read).await.expect("connect");
    huge.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .expect("send");
    let answer = read_until_closed(&mut huge, T).await;
    assert_eq!(answer.first(), Some(&b'E'));

    // SSLRequest is refused with 'N'; then a truncated startup and a hang-up.
    let mut truncated = TcpStream::connect(router.write).await.expect("connect");
    truncated
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("send");
    let mut n = [0u8; 1];
    truncated.read_exact(&mut n).await.expect("answer");
    assert_eq!(&n, b"N");
    truncated
        .write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u'])
        .await
        .expect("send");
    truncated.shutdown().await.expect("half-close");

    // A client that sends nothing is dropped after startup_timeout (2 s here).
    let started = Instant::now();
    let mut silent = TcpStream::connect(router.write).await.expect("connect");
    let answer = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(answer.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // The open session went on undisturbed.
    session.batch_execute("COMMIT").await.expect("commit");
    let row = session
        .query_one(
            "SELECT count(*) FROM t WHERE note = 'open transaction'",
            &[],
        )
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1);
    let metrics = router.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"pgbaton_router_client_errors_total{reason="timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_through_the_router_cancels_the_query() {
    let cluster = Cluster::start(false).await;
    let router = RunningRouter::start(cluster.router_config()).await;
    let client = connect(router.write, None).await;
    let cancel = client.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(10)").await });

    let admin = pgbaton_postgres::connect(&cluster.primary.spec, T)
        .await
        .expect("connect");
    eventually("pg_sleep to run", T, || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'",
                &[],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    // The token holds the router's address: the CancelRequest goes through the router.
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let result = tokio::time::timeout(T, sleeping)
        .await
        .expect("query ends")
        .expect("join");
    let err = result.expect_err("the query was cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(9));
}
