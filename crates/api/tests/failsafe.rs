//! `POST /failsafe` through the Router with a fake agent: basic auth like every write
//! endpoint, the leader's name required, the agent's answer passed on (200 `Accepted`, or
//! its refusal).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pgbaton_api::{
    basic_header, router, BoxFuture, CommandOutcome, Commands, Credentials, LocalCommand,
    NodeStatus,
};
use pgbaton_dcs::{ClusterState, DcsError, FailoverDoc};
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

/// Accepts every leader but `refuse-me`; records who asked.
#[derive(Default)]
struct FakeAgent {
    asked: Mutex<Vec<String>>,
}

impl Commands for FakeAgent {
    fn load(&self) -> BoxFuture<'_, Result<ClusterState, DcsError>> {
        Box::pin(async { Ok(ClusterState::default()) })
    }
    fn set_failover(
        &self,
        _: FailoverDoc,
        _: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async { Ok(false) })
    }
    fn delete_failover(&self) -> BoxFuture<'_, Result<(), DcsError>> {
        Box::pin(async { Ok(()) })
    }
    fn set_config(&self, _: Value, _: Option<i64>) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async { Ok(false) })
    }
    fn local(&self, _: LocalCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async { CommandOutcome::refused(503, "not here") })
    }
    fn failsafe(&self, leader: &str) -> CommandOutcome {
        self.asked.lock().unwrap().push(leader.to_string());
        if leader == "refuse-me" {
            CommandOutcome::refused(409, "this member holds the leader key")
        } else {
            CommandOutcome::ok("accepted")
        }
    }
}

async fn post(
    agent: &Arc<FakeAgent>,
    body: &str,
    authorization: Option<String>,
) -> (StatusCode, String) {
    let (_tx, rx) = watch::channel(NodeStatus::starting("c", "node2", 4_000));
    let auth = Some(Credentials {
        username: "admin".into(),
        password: Some("secret".into()),
    });
    let mut req = Request::post("/failsafe");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let response = router(rx, Some(agent.clone() as Arc<dyn Commands>), auth)
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8(bytes.to_vec()).unwrap())
}

fn good_auth() -> Option<String> {
    Some(basic_header("admin", "secret"))
}

#[tokio::test]
async fn a_leader_is_accepted_with_patronis_answer() {
    let agent = Arc::new(FakeAgent::default());
    let body = r#"{"name": "node1", "conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni", "slots": {}}"#;
    let (code, text) = post(&agent, body, good_auth()).await;
    assert_eq!((code, text.as_str()), (StatusCode::OK, "Accepted"));
    assert_eq!(*agent.asked.lock().unwrap(), vec!["node1".to_string()]);
}

#[tokio::test]
async fn a_refusal_is_passed_on() {
    let agent = Arc::new(FakeAgent::default());
    let (code, text) = post(&agent, r#"{"name": "refuse-me"}"#, good_auth()).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(text.contains("leader key"), "{text}");
}

#[tokio::test]
async fn without_credentials_or_a_name_nothing_is_promised() {
    let agent = Arc::new(FakeAgent::default());
    let (code, _) = post(&agent, r#"{"name": "node1"}"#, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = post(
        &agent,
        r#"{"name": "node1"}"#,
        Some(basic_header("admin", "wrong")),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, text) = post(&agent, r#"{"conn_url": "x"}"#, good_auth()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(text.contains("name"), "{text}");
    let (code, _) = post(&agent, "", good_auth()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(agent.asked.lock().unwrap().is_empty());
}
