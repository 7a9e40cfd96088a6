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
        let (primary, _) = get("/primary").await;
        let (replica, _) = get("/replica").await;
        let (health, _) = get("/health").await;
        assert_eq!(
            primary,
            if is_leader { 200 } else { 503 },
            "/primary on {m}"
        );
        assert_eq!(
            replica,
            if is_leader { 503 } else { 200 },
            "/replica on {m}"
        );
        assert_eq!(health, 200, "/health on {m}");

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
