//! `serve` over a real socket: answers from the latest published status and stops when the
//! shutdown future resolves.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

#[tokio::test]
async fn serves_the_latest_status_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(replica("node2", 0));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(pgbaton_api::serve(listener, rx, None, None, async {
        let _ = stopped.await;
    }));

    pgbaton_api::install_default_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/primary");
    assert_eq!(
        client.get(&url).send().await.unwrap().status().as_u16(),
        503
    );
    // The agent publishes a new status: the very next request sees it.
    tx.send(leader()).unwrap();
    let reply = client.get(&url).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["role"], "master");
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve did not stop within 10 s of shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        client.get(&url).send().await.is_err(),
        "the socket is still served after shutdown"
    );
}
