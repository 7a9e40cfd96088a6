//! The REST API of a running cluster answers like Patroni's: health checks by role,
//! `/patroni` with role/xlog/timeline, and Prometheus metrics.

mod common;

use common::{Cluster, UP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_health_checks_status_and_metrics() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_until_all_streaming(UP).await;

    for m in cluster.members() {
        let is_leader = m == leader;
        let get = |path: &'static str| {
            let m = m.clone();
            let cluster = &cluster;
            async move {
                cluster
                    .api_get(&m, path)
                    .await
                    .unwrap_or_else(|e| panic!("GET {path} on {m}: {e:#}"))
            }
        };
        // The REST status follows the agent's last cycle: poll (with a deadline) until each
        // check answers what the member's role implies.
        let expect = |path: &'static str, want: u16| {
            let get = &get;
            async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                loop {
                    let (code, _) = get(path).await;
                    if code == want || std::time::Instant::now() > deadline {
                        return code;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        };
        let want_primary = if is_leader { 200 } else { 503 };
        let want_replica = if is_leader { 503 } else { 200 };
        assert_eq!(
            expect("/primary", want_primary).await,
            want_primary,
            "/primary on {m}"
        );
        assert_eq!(
            expect("/replica", want_replica).await,
            want_replica,
            "/replica on {m}"
        );
        assert_eq!(expect("/health", 200).await, 200, "/health on {m}");

        let (code, body) = get("/patroni").await;
        assert_eq!(code, 200, "/patroni on {m}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("/patroni is JSON");
        assert_eq!(doc["state"], "running", "{doc}");
        assert_eq!(doc["timeline"], 1, "{doc}");
        assert_eq!(doc["patroni"]["name"], m.as_str(), "{doc}");
        assert_eq!(doc["patroni"]["scope"], "it", "{doc}");
        if is_leader {
            assert_eq!(doc["role"], "master", "{doc}");
            assert!(doc["xlog"]["location"].as_u64().is_some(), "{doc}");
        } else {
            assert_eq!(doc["role"], "replica", "{doc}");
            assert!(doc["xlog"]["received_location"].as_u64().is_some(), "{doc}");
            assert!(doc["xlog"]["replayed_location"].as_u64().is_some(), "{doc}");
        }

        let (code, metrics) = get("/metrics").await;
        assert_eq!(code, 200, "/metrics on {m}");
        let line = format!(
            "patroni_primary{{scope=\"it\",name=\"{m}\"}} {}",
            if is_leader { 1 } else { 0 }
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics on {m} has {line:?}:\n{metrics}"
        );
    }
}
