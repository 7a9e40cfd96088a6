//! `auth_query`: the password of a user not in `auth_file`, asked of the leader as
//! `auth_user` (PgBouncer's scheme). Run over a connection of its own, closed afterwards;
//! the caller caches the answer. The function to create so that `auth_user` needs no
//! superuser rights is in docs/CONFIGURATION.md.

use tokio::io::AsyncWriteExt;

use super::userlist::Credential;
use super::AuthConfig;
use crate::pool::server::{login, ServerLogin};
use crate::route::wait_for_leader;
use crate::shared::Shared;

/// The user's stored password (None: no such login role, or no password).
pub(crate) async fn lookup(
    shared: &Shared,
    cfg: &AuthConfig,
    auth_user: &str,
    credential: &ServerLogin,
    database: &str,
    user: &str,
) -> Result<Option<Credential>, String> {
    let leader = wait_for_leader(shared, None)
        .await
        .ok_or_else(|| "auth_query: no leader to ask".to_string())?;
    let mut conn = login(
        &leader,
        auth_user,
        database,
        credential,
        shared.cfg.connect_timeout,
        shared.cfg.startup_timeout,
    )
    .await
    .map_err(|e| {
        format!(
            "auth_query: cannot log in to {} as auth_user \"{auth_user}\" (database \"{database}\"): {e}",
            leader.name
        )
    })?;
    let answer = tokio::time::timeout(
        shared.cfg.startup_timeout,
        conn.query_params(&cfg.auth_query, &[user]),
    )
    .await
    .map_err(|_| {
        format!(
            "auth_query: no answer from {} within {:?}",
            leader.name, shared.cfg.startup_timeout
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
