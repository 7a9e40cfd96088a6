//! A stand-in for an agent's REST API: serves `GET /patroni` for one member, in Patroni's
//! shape (`xlog.location` on a primary; `xlog.received_location`, `replayed_location`,
//! `replayed_timestamp`, `paused` on a replica), answered from real queries on that member's
//! PostgreSQL at each request. Stopped on drop.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use pgbaton_postgres::PgSpec;
use serde_json::{json, Value};

use super::T;

const QUERY: &str = "SELECT pg_is_in_recovery(),
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::bigint END,
    (pg_last_wal_receive_lsn() - '0/0')::bigint,
    (pg_last_wal_replay_lsn() - '0/0')::bigint,
    pg_last_xact_replay_timestamp()::text,
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END";

/// The `/patroni` document of the server `spec` describes.
pub async fn patroni_document(spec: &PgSpec) -> Result<Value, String> {
    let client = pgbaton_postgres::connect(spec, T)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(QUERY, &[])
        .await
        .map_err(|e| e.to_string())?;
    let in_recovery: bool = row.get(0);
    let body = if in_recovery {
        json!({"state": "running", "role": "replica", "xlog": {
            "received_location": row.get::<_, Option<i64>>(2),
            "replayed_location": row.get::<_, Option<i64>>(3),
            "replayed_timestamp": row.get::<_, Option<String>>(4),
            "paused": row.get::<_, bool>(5),
        }})
    } else {
        json!({"state": "running", "role": "master", "xlog": {
            "location": row.get::<_, Option<i64>>(1),
        }})
    };
    Ok(body)
}

async fn patroni(State(spec): State<PgSpec>) -> Result<Json<Value>, (StatusCode, String)> {
    patroni_document(&spec)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
}

/// One member's stub API on a free port.
pub struct RestStub {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RestStub {
    pub async fn start(spec: &PgSpec) -> RestStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the REST stub");
        let addr = listener.local_addr().expect("stub address");
        let app = axum::Router::new()
            .route("/patroni", get(patroni))
            .with_state(spec.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RestStub { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/patroni", self.addr)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RestStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
