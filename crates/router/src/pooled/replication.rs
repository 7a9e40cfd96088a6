//! A logical replication connection (`replication=database`: a subscription's apply or
//! table-sync worker, pg_recvlogical) on a pooled listener. It belongs to no pool: the
//! router checks the client's password as for any client, logs in to the leader with the
//! client's startup parameters and the credential the client proved, and forwards the
//! session as it is until either side ends or the server stops being the leader. The
//! subscriber then connects again and reaches the new leader, where pgbaton kept the
//! subscription's slot (a permanent slot): a subscription through the router follows the
//! publishing cluster's failovers and switchovers without a conninfo edit.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::Client;
use crate::handshake::Ready;
use crate::pool::server::login_with_within;
use crate::pooled::txn::ready_for_query;
use crate::pooled::{
    check_password, credential_timeout, leader::login_on_leader, parameter_status,
};
use crate::pooling::Pooling;
use crate::protocol::{StartupMessage, Target};
use crate::reply::{refuse, send_and_close};
use crate::shared::Shared;

/// SQLSTATE feature_not_supported.
const NOT_SUPPORTED: &str = "0A000";

/// Why this replication connection cannot go through a pooled listener, if it cannot.
pub(crate) fn refusal(mode: &str, target: Target) -> Option<String> {
    if mode != "database" {
        return Some(format!(
            "pgbaton router: physical replication connections (replication={mode}) are not supported on a pooled listener (one with an auth: section); connect standbys and pg_basebackup to the members directly, or through a router without auth:"
        ));
    }
    if target != Target::Write {
        return Some(format!(
            "pgbaton router: logical replication decodes on the leader only, and this connection asks for the {} role; connect to the router's write listener",
            target.label()
        ));
    }
    None
}

/// Serve a client whose startup asks for `replication` (checked by `refusal` first).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    pooling: Arc<Pooling>,
    mut client: Client,
    startup: StartupMessage,
    target: Target,
    peer: SocketAddr,
) {
    let mode = String::from_utf8_lossy(startup.param("replication").unwrap_or_default());
    if let Some(message) = refusal(&mode, target) {
        refuse(&shared, &mut client, NOT_SUPPORTED, "replication", &message).await;
        return;
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let user = text(startup.param("user").unwrap_or_default());
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .map(text)
        .unwrap_or_else(|| user.clone());
    let Some(credential) =
        check_password(&shared, &pooling, &mut client, &user, &database, peer).await
    else {
        return;
    };
    // The client's startup as it sent it (application_name names the subscription on the
    // publisher), with the database it logged in to.
    let mut params: Vec<(String, String)> = vec![
        ("user".into(), user.clone()),
        ("database".into(), database.clone()),
    ];
    for (name, value) in &startup.params {
        let name = text(name);
        if name != "user" && name != "database" {
            params.push((name, text(value)));
        }
    }
    let what = format!("{database}/{user} (replication)");
    let login = |backend| {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let credential = &credential;
        let shared = &shared;
        let pooling = &pooling;
        async move {
            let opened = login_with_within(
                credential_timeout(pooling),
                &backend,
                &pairs,
                credential,
                shared.cfg.connect_timeout,
                shared.cfg.startup_timeout,
            )
            .await;
            (backend, opened)
        }
    };
    let (leader, conn) = match login_on_leader(&shared, &what, true, login).await {
        Ok(opened) => opened,
        Err(fatal) => {
            tracing::info!(%peer, %user, %database, error = %fatal.message, "no replication connection to the leader");
            send_and_close(&mut client, &crate::pooled::logged_in_then(&fatal)).await;
            return;
        }
    };
    let mut held = crate::auth::authentication_ok();
    for (name, value) in &conn.params {
        held.extend_from_slice(&parameter_status(name, value));
    }
    if let Some(key) = conn.key {
        held.extend_from_slice(&crate::protocol::backend_key_message(key));
    }
    held.extend_from_slice(&ready_for_query(b'I'));
    let key = conn.key;
    let conn = conn.into_parts();
    let Ok(server) = conn.read.reunite(conn.write) else {
        return;
    };
    crate::route::decision(&shared, Target::Write, "replication");
    tracing::debug!(%peer, %user, %database, member = %leader.name, "replication connection to the leader");
    let ready = Ready {
        held,
        key,
        opaque: false,
    };
    crate::relay::forward_client(client, shared, server, ready, leader, Target::Write, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logical_replication_to_the_leader_goes_through_a_pool_listener() {
        assert_eq!(refusal("database", Target::Write), None);
        for physical in ["true", "on", "1", "yes"] {
            let refused = refusal(physical, Target::Write).expect("physical refused");
            assert!(
                refused.contains(&format!("replication={physical}")),
                "{refused}"
            );
            assert!(refused.contains("connect standbys"), "{refused}");
        }
        let refused = refusal("database", Target::Read).expect("read refused");
        assert!(refused.contains("write listener"), "{refused}");
    }
}
