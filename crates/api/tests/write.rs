//! The write endpoints through the Router (no socket) with a fake agent: authentication,
//! malformed requests, refusals that write nothing, and the success paths.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use pgbaton_api::{
    basic_header, router, BoxFuture, CommandOutcome, Commands, Credentials, LocalCommand,
    NodeStatus,
};
use pgbaton_dcs::{ClusterState, DcsError, FailoverDoc, Versioned};
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

/// An in-memory cluster state; records every write and local command.
struct FakeAgent {
    state: Mutex<ClusterState>,
    writes: Mutex<Vec<String>>,
    /// Move the leader key to the candidate as soon as the failover key is written.
    switch_at_once: bool,
    /// Make the next config compare-and-swap fail (someone else wrote first).
    lose_cas: bool,
}

impl FakeAgent {
    fn new(state: ClusterState) -> Arc<FakeAgent> {
        Arc::new(FakeAgent {
            state: Mutex::new(state),
            writes: Mutex::new(Vec::new()),
            switch_at_once: true,
            lose_cas: false,
        })
    }

    fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }

    fn record(&self, what: String) {
        self.writes.lock().unwrap().push(what);
    }
}

impl Commands for FakeAgent {
    fn load(&self) -> BoxFuture<'_, Result<ClusterState, DcsError>> {
        let state = self.state.lock().unwrap().clone();
        Box::pin(async move { Ok(state) })
    }

    fn set_failover(
        &self,
        doc: FailoverDoc,
        expected: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            if expected.is_none() && state.failover.is_some() {
                return Ok(false);
            }
            self.record(format!("failover {}", serde_json::to_string(&doc).unwrap()));
            if self.switch_at_once && doc.scheduled_at.is_none() {
                if let (Some(key), Some(to)) = (state.leader.as_mut(), doc.member.clone()) {
                    key.name = to;
                }
            } else {
                state.failover = Some(Versioned {
                    value: doc,
                    mod_revision: 20,
                });
            }
            Ok(true)
        })
    }

    fn delete_failover(&self) -> BoxFuture<'_, Result<(), DcsError>> {
        Box::pin(async move {
            self.record("delete failover".into());
            self.state.lock().unwrap().failover = None;
            Ok(())
        })
    }

    fn set_config(
        &self,
        value: Value,
        expected: Option<i64>,
    ) -> BoxFuture<'_, Result<bool, DcsError>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            let current = state.config.as_ref().map(|c| c.mod_revision);
            if self.lose_cas || current != expected {
                return Ok(false);
            }
            self.record(format!("config {value}"));
            state.config = Some(Versioned {
                value,
                mod_revision: current.unwrap_or(0) + 1,
            });
            Ok(true)
        })
    }

    fn local(&self, command: LocalCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async move {
            self.record(format!("local {command:?}"));
            CommandOutcome::ok(format!("{command:?} done"))
        })
    }
}

/// node1 leads; node2 streams level with it; node3 is tagged nofailover; config at rev 3.
fn healthy_state() -> ClusterState {
    let mut state = cluster();
    for name in ["node2", "node3"] {
        state.members.get_mut(name).unwrap().replication_state = Some("streaming".into());
    }
    state
        .members
        .get_mut("node3")
        .unwrap()
        .tags
        .insert("nofailover".into(), json!(true));
    state.config = Some(Versioned {
        value: json!({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}}),
        mod_revision: 3,
    });
    state
}

fn creds() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: Some("secret".into()),
    }
}

struct Call<'a> {
    status: NodeStatus,
    agent: Option<Arc<FakeAgent>>,
    auth: Option<Credentials>,
    method: Method,
    uri: &'a str,
    body: &'a str,
    authorization: Option<String>,
}

impl<'a> Call<'a> {
    fn new(agent: &Arc<FakeAgent>, method: Method, uri: &'a str, body: &'a str) -> Self {
        Call {
            status: leader(),
            agent: Some(agent.clone()),
            auth: None,
            method,
            uri,
            body,
            authorization: None,
        }
    }

    async fn send(self) -> (StatusCode, Option<String>, String) {
        let (_tx, rx) = watch::channel(self.status);
        let commands = self.agent.map(|a| a as Arc<dyn Commands>);
        let mut builder = Request::builder().method(self.method).uri(self.uri);
        if let Some(value) = self.authorization {
            builder = builder.header("authorization", value);
        }
        let response = router(rx, commands, self.auth)
            .oneshot(builder.body(Body::from(self.body.to_string())).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, challenge, String::from_utf8(body.to_vec()).unwrap())
    }
}

#[tokio::test]
async fn write_requests_without_or_with_wrong_credentials_get_401_and_change_nothing() {
    let agent = FakeAgent::new(healthy_state());
    let body = r#"{"leader": "node1", "candidate": "node2"}"#;
    for authorization in [
        None,
        Some(basic_header("admin", "wrong")),
        Some(basic_header("someone", "secret")),
        Some("Bearer abc".to_string()),
    ] {
        for (method, uri) in [
            (Method::POST, "/switchover"),
            (Method::POST, "/restart"),
            (Method::PATCH, "/config"),
            (Method::DELETE, "/switchover"),
        ] {
            let mut call = Call::new(&agent, method.clone(), uri, body);
            call.auth = Some(creds());
            call.authorization = authorization.clone();
            let (code, challenge, text) = call.send().await;
            assert_eq!(code, 401, "{method} {uri} with {authorization:?}: {text}");
            assert_eq!(challenge.as_deref(), Some("Basic realm=\"pgbaton\""));
            let reason: Value = serde_json::from_str(&text).expect("a JSON reason");
            assert!(reason["error"].is_string(), "{text}");
        }
    }
    assert_eq!(agent.writes(), Vec::<String>::new());

    // The right credentials go through.
    let mut call = Call::new(&agent, Method::POST, "/switchover", body);
    call.auth = Some(creds());
    call.authorization = Some(basic_header("admin", "secret"));
    let (code, _, text) = call.send().await;
    assert_eq!(code, 200, "{text}");
    // Reads never need credentials.
    let mut call = Call::new(&agent, Method::GET, "/patroni", "");
    call.auth = Some(creds());
    assert_eq!(call.send().await.0, 200);
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem() {
    let agent = FakeAgent::new(healthy_state());
    for (method, uri, body) in [
        (Method::POST, "/switchover", "{\"candidate\": "),
        (Method::POST, "/switchover", ""),
        (Method::POST, "/failover", "[1, 2]"),
        (Method::PATCH, "/config", "{ttl: 5}"),
        (Method::PUT, "/config", "42"),
        (Method::POST, "/restart", "{\"restart_pending\": \"maybe\"}"),
    ] {
        let (code, _, text) = Call::new(&agent, method.clone(), uri, body).send().await;
        assert_eq!(code, 400, "{method} {uri} {body:?}: {text}");
        let reason: Value = serde_json::from_str(&text).expect("a JSON reason");
        let reason = reason["error"].as_str().unwrap().to_string();
        assert!(
            reason.contains("JSON") || reason.contains("empty"),
            "{reason}"
        );
    }
    assert_eq!(agent.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn refused_switchovers_are_412_or_503_and_write_nothing() {
    let agent = FakeAgent::new(healthy_state());
    for (body, code, words) in [
        (r#"{"candidate": "node3"}"#, 412, "nofailover"),
        (r#"{"candidate": "node9"}"#, 412, "not a member"),
        (
            r#"{"leader": "node2", "candidate": "node3"}"#,
            412,
            "node1 is the leader",
        ),
        (
            r#"{"leader": "node1", "candidate": "node1"}"#,
            412,
            "already the leader",
        ),
        (
            r#"{"candidate": "node2", "scheduled_at": "yesterday"}"#,
            400,
            "cannot parse",
        ),
    ] {
        let (got, _, text) = Call::new(&agent, Method::POST, "/switchover", body)
            .send()
            .await;
        assert_eq!(got, code, "{body}: {text}");
        assert!(text.contains(words), "{body}: {text}");
    }
    let mut leaderless = healthy_state();
    leaderless.leader = None;
    let agent2 = FakeAgent::new(leaderless);
    let (got, _, text) = Call::new(
        &agent2,
        Method::POST,
        "/switchover",
        r#"{"candidate":"node2"}"#,
    )
    .send()
    .await;
    assert_eq!(got, 503, "{text}");
    assert_eq!(agent.writes(), Vec::<String>::new());
    assert_eq!(agent2.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn switchover_waits_for_the_new_leader_and_scheduled_is_202() {
    let agent = FakeAgent::new(healthy_state());
    let (code, _, text) = Call::new(
        &agent,
        Method::POST,
        "/switchover",
        r#"{"leader": "node1", "candidate": "node2"}"#,
    )
    .send()
    .await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(text.trim(), "Successfully switched over to \"node2\"");
    assert_eq!(
        agent.writes(),
        vec![r#"failover {"leader":"node1","member":"node2"}"#.to_string()]
    );

    let agent = FakeAgent::new(healthy_state());
    let at = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let body = json!({"candidate": "node2", "scheduled_at": at}).to_string();
    let (code, _, text) = Call::new(&agent, Method::POST, "/switchover", &body)
        .send()
        .await;
    assert_eq!(code, 202, "{text}");
    assert!(text.starts_with("Switchover scheduled"), "{text}");
    // A second request while one is pending is refused.
    let (code, _, text) = Call::new(&agent, Method::POST, "/switchover", &body)
        .send()
        .await;
    assert_eq!(code, 412, "{text}");
    // DELETE cancels it; a second DELETE finds nothing.
    let (code, _, text) = Call::new(&agent, Method::DELETE, "/switchover", "")
        .send()
        .await;
    assert_eq!(code, 200, "{text}");
    let (code, _, text) = Call::new(&agent, Method::DELETE, "/switchover", "")
        .send()
        .await;
    assert_eq!(code, 404, "{text}");
    assert_eq!(agent.writes().len(), 2, "{:?}", agent.writes());
}

#[tokio::test]
async fn failover_to_a_candidate_is_done_through_the_failover_key() {
    let agent = FakeAgent::new(healthy_state());
    let (code, _, text) = Call::new(
        &agent,
        Method::POST,
        "/failover",
        r#"{"candidate": "node2"}"#,
    )
    .send()
    .await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(text.trim(), "Successfully failed over to \"node2\"");
}

#[tokio::test]
async fn patch_merges_validates_and_writes_with_compare_and_swap() {
    let agent = FakeAgent::new(healthy_state());
    let patch =
        r#"{"ttl": 20, "loop_wait": null, "postgresql": {"parameters": {"work_mem": "8MB"}}}"#;
    let (code, _, text) = Call::new(&agent, Method::PATCH, "/config", patch)
        .send()
        .await;
    assert_eq!(code, 200, "{text}");
    let new: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        new,
        json!({"ttl": 20, "postgresql": {"parameters": {"work_mem": "8MB"}}})
    );
    assert_eq!(agent.writes().len(), 1);

    // An invalid value is 400 naming the key, and nothing is written.
    let (code, _, text) = Call::new(&agent, Method::PATCH, "/config", r#"{"ttl": "abc"}"#)
        .send()
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("ttl"), "{text}");
    assert_eq!(agent.writes().len(), 1);

    // PUT replaces the whole document.
    let (code, _, text) = Call::new(&agent, Method::PUT, "/config", r#"{"ttl": 10}"#)
        .send()
        .await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        agent.state.lock().unwrap().config.as_ref().unwrap().value,
        json!({"ttl": 10})
    );
}

#[tokio::test]
async fn a_lost_compare_and_swap_is_409() {
    let agent = Arc::new(FakeAgent {
        state: Mutex::new(healthy_state()),
        writes: Mutex::new(Vec::new()),
        switch_at_once: true,
        lose_cas: true,
    });
    let (code, _, text) = Call::new(&agent, Method::PATCH, "/config", r#"{"ttl": 20}"#)
        .send()
        .await;
    assert_eq!(code, 409, "{text}");
    assert_eq!(agent.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn local_operations_check_their_conditions_before_asking_the_agent() {
    let agent = FakeAgent::new(healthy_state());
    // Nothing pending: a pending-only restart is refused.
    let (code, _, text) = Call::new(
        &agent,
        Method::POST,
        "/restart",
        r#"{"restart_pending": true}"#,
    )
    .send()
    .await;
    assert_eq!(code, 503, "{text}");
    // The leader is never reinitialized.
    let (code, _, text) = Call::new(&agent, Method::POST, "/reinitialize", r#"{"force": true}"#)
        .send()
        .await;
    assert_eq!(code, 503, "{text}");
    // A role that does not match is refused.
    let (code, _, text) = Call::new(&agent, Method::POST, "/restart", r#"{"role": "replica"}"#)
        .send()
        .await;
    assert_eq!(code, 503, "{text}");
    assert_eq!(agent.writes(), Vec::<String>::new());

    // A replica: reinit and reload reach the agent.
    let mut call = Call::new(&agent, Method::POST, "/reinitialize", "");
    call.status = replica("node2", 0);
    let (code, _, text) = call.send().await;
    assert_eq!(code, 200, "{text}");
    let (code, _, text) = Call::new(&agent, Method::POST, "/reload", "").send().await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        agent.writes(),
        vec![
            "local Reinitialize { force: false }".to_string(),
            "local Reload".to_string()
        ]
    );
}

#[tokio::test]
async fn without_commands_write_endpoints_answer_503() {
    let agent = FakeAgent::new(healthy_state());
    let mut call = Call::new(
        &agent,
        Method::POST,
        "/switchover",
        r#"{"candidate":"node2"}"#,
    );
    call.agent = None;
    let (code, _, text) = call.send().await;
    assert_eq!(code, 503, "{text}");
}

#[tokio::test]
async fn backup_is_started_by_the_leader_only_with_a_known_type() {
    let agent = FakeAgent::new(healthy_state());
    let (code, _, text) = Call::new(&agent, Method::POST, "/backup", r#"{"type": "full"}"#)
        .send()
        .await;
    assert_eq!(code, 200, "{text}");
    let (code, _, text) = Call::new(&agent, Method::POST, "/backup", "").send().await;
    assert_eq!(code, 200, "{text}");
    // An unknown type or source: 400 naming it, nothing asked of the agent.
    let (code, _, text) = Call::new(&agent, Method::POST, "/backup", r#"{"type": "weekly"}"#)
        .send()
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("weekly"), "{text}");
    let (code, _, text) = Call::new(&agent, Method::POST, "/backup", r#"{"from": "node2"}"#)
        .send()
        .await;
    assert_eq!(code, 400, "{text}");
    // A replica refuses and names the leader.
    let mut call = Call::new(&agent, Method::POST, "/backup", r#"{"from": "standby"}"#);
    call.status = replica("node2", 0);
    call.status.cluster = Some(healthy_state());
    let (code, _, text) = call.send().await;
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains("not the leader") && text.contains("node1"),
        "{text}"
    );
    assert_eq!(
        agent.writes(),
        vec![
            "local Backup { kind: Full, from: None }".to_string(),
            "local Backup { kind: Incr, from: None }".to_string()
        ]
    );
}
