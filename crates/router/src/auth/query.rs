//! `auth_query`: the password of a user not in `auth_file`, asked of the leader as
//! `auth_user` (PgBouncer's scheme). Run over a connection of its own, closed afterwards;
//! the caller caches the answer. The function to create so that `auth_user` needs no
//! superuser rights is in docs/CONFIGURATION.md.

use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::AuthConfig;
use crate::credentials::userlist::Credential;
use crate::pool::server::{login, ServerLogin};
use crate::topology::Backend;

/// Where `auth_query` runs: the leader (`find` resolves to it, or to None when there is none
/// to wait for; polled only when a user is looked up) and how long logging in may take.
pub(crate) struct QueryLeader<F> {
    pub find: F,
    pub connect_timeout: Duration,
    pub startup_timeout: Duration,
}

/// The user's stored password (None: no such login role, or no password).
pub(crate) async fn lookup<F: Future<Output = Option<Backend>>>(
    at: QueryLeader<F>,
    cfg: &AuthConfig,
    auth_user: &str,
    credential: &ServerLogin,
    database: &str,
    user: &str,
) -> Result<Option<Credential>, String> {
    let leader = at
        .find
        .await
        .ok_or_else(|| "auth_query: no leader to ask".to_string())?;
    let mut conn = login(
        &leader,
        auth_user,
        database,
        credential,
        at.connect_timeout,
        at.startup_timeout,
    )
    .await
    .map_err(|e| {
        format!(
            "auth_query: cannot log in to {} as auth_user \"{auth_user}\" (database \"{database}\"): {e}",
            leader.name
        )
    })?;
    let answer = tokio::time::timeout(
        at.startup_timeout,
        conn.query_params(&cfg.auth_query, &[user]),
    )
    .await
    .map_err(|_| {
        format!(
            "auth_query: no answer from {} within {:?}",
            leader.name, at.startup_timeout
        )
    })?
    .map_err(|e| format!("auth_query on {}: {e}", leader.name))?;
    let _ = conn.write.write_all(&[b'X', 0, 0, 0, 4]).await;
    if let Some((code, message)) = answer.error {
        return Err(format!(
            "auth_query on {} failed: {message} (SQLSTATE {code})",
            leader.name
        ));
    }
    let row = match answer.rows.as_slice() {
        [] => return Ok(None),
        [row] => row,
        _ => return Err("auth_query returned more than one row".into()),
    };
    match row.as_slice() {
        [_, Some(password)] if !password.is_empty() => Ok(Some(Credential::from_stored(password))),
        [_, _] => Ok(None),
        _ => Err(format!(
            "auth_query must return two columns (user name, password), it returned {}",
            row.len()
        )),
    }
}
