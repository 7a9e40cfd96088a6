//! Actions on a running server through SQL: promotion, checkpoints, physical replication
//! slots, and the roles a fresh cluster needs.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::Client;

use crate::client::{bounded, connect};
use crate::error::PgError;
use crate::spec::PgSpec;

/// `SELECT pg_promote(true, <timeout in s>)`; fails unless the server left recovery in time.
pub async fn promote(spec: &PgSpec, timeout: Duration) -> Result<(), PgError> {
    let wait_seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    // The SQL call waits up to `wait_seconds`; give the round trip a little more.
    let overall = timeout + Duration::from_secs(2);
    bounded("promote", overall, async {
        let client = connect(spec, timeout).await?;
        tracing::info!("promoting postgres");
        let row = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait_seconds])
            .await
            .map_err(|e| PgError::query("pg_promote()", e))?;
        let promoted: bool = row
            .try_get(0)
            .map_err(|e| PgError::query("pg_promote()", e))?;
        if promoted {
            Ok(())
        } else {
            Err(PgError::Timeout {
                what: "promotion (pg_promote returned false)".into(),
                after: timeout,
            })
        }
    })
    .await
}

/// `CHECKPOINT`.
pub async fn checkpoint(spec: &PgSpec, timeout: Duration) -> Result<(), PgError> {
    bounded("checkpoint", timeout, async {
        let client = connect(spec, timeout).await?;
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| PgError::query("CHECKPOINT", e))
    })
    .await
}

/// What [`sync_physical_slots`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotChanges {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Wanted slots PostgreSQL had invalidated (`wal_status = 'lost'`), dropped and created
    /// again (reserving WAL from now on).
    pub recreated: Vec<String>,
}

/// On the primary: create each wanted physical slot that is missing (reserving WAL at once);
/// drop and create again each wanted one PostgreSQL invalidated (`wal_status = 'lost'`: it
/// holds no WAL and a standby cannot use it); drop physical slots that are neither wanted nor
/// active nor in `keep`. Logical slots are never touched.
pub async fn sync_physical_slots(
    spec: &PgSpec,
    wanted: &BTreeSet<String>,
    keep: &BTreeSet<String>,
    timeout: Duration,
) -> Result<SlotChanges, PgError> {
    bounded("sync_physical_slots", timeout, async {
        let client = connect(spec, timeout).await?;
        let rows = client
            .query(
                "SELECT slot_name::text, slot_type, active, coalesce(wal_status = 'lost', false)
                 FROM pg_replication_slots",
                &[],
            )
            .await
            .map_err(|e| PgError::query("listing replication slots", e))?;
        let mut existing = BTreeSet::new();
        let mut droppable = Vec::new();
        let mut lost = Vec::new();
        for row in &rows {
            let name: String = row
                .try_get(0)
                .map_err(|e| PgError::query("listing replication slots", e))?;
            let kind: String = row
                .try_get(1)
                .map_err(|e| PgError::query("listing replication slots", e))?;
            let active: bool = row
                .try_get(2)
                .map_err(|e| PgError::query("listing replication slots", e))?;
            let is_lost: bool = row
                .try_get(3)
                .map_err(|e| PgError::query("listing replication slots", e))?;
            if kind == "physical" && !active && !wanted.contains(&name) && !keep.contains(&name) {
                droppable.push(name.clone());
            } else if kind == "physical" && !active && is_lost && wanted.contains(&name) {
                lost.push(name.clone());
                continue;
            }
            existing.insert(name);
        }
        let mut recreated = Vec::new();
        for name in lost {
            // Re-checked in the statement: a slot that became active meanwhile is left alone.
            let n = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active
                       AND wal_status = 'lost'",
                    &[&name],
                )
                .await
                .map_err(|e| {
                    PgError::query(format!("dropping lost replication slot {name:?}"), e)
                })?;
            if n > 0 {
                recreated.push(name);
            } else {
                existing.insert(name);
            }
        }
        let mut created = Vec::new();
        for name in wanted.difference(&existing) {
            client
                .execute(
                    "SELECT pg_create_physical_replication_slot($1, true)",
                    &[name],
                )
                .await
                .map_err(|e| PgError::query(format!("creating replication slot {name:?}"), e))?;
            if !recreated.contains(name) {
                tracing::info!(slot = %name, "created physical replication slot");
                created.push(name.clone());
            }
        }
        let mut dropped = Vec::new();
        for name in droppable {
            // Re-checked in the statement: a slot that became active meanwhile is left alone.
            let n = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active",
                    &[&name],
                )
                .await
                .map_err(|e| PgError::query(format!("dropping replication slot {name:?}"), e))?;
            if n > 0 {
                tracing::info!(slot = %name, "dropped physical replication slot");
                dropped.push(name);
            }
        }
        Ok(SlotChanges {
            created,
            dropped,
            recreated,
        })
    })
    .await
}

/// Role options accepted in `ensure_users` (Patroni's `users.<name>.options`).
const ROLE_OPTIONS: &[&str] = &[
    "superuser",
    "nosuperuser",
    "createrole",
    "nocreaterole",
    "createdb",
    "nocreatedb",
    "replication",
    "noreplication",
    "login",
    "nologin",
    "inherit",
    "noinherit",
    "bypassrls",
    "nobypassrls",
];

/// On a fresh primary: sets the superuser password, creates the replication user (LOGIN
/// REPLICATION PASSWORD), the rewind user (LOGIN, with the grants pg_rewind needs) and the
/// extra `users` (name, password, options; LOGIN added unless login/nologin is given, as
/// Patroni does) — idempotent (ALTER when the role exists).
pub async fn ensure_users(
    spec: &PgSpec,
    users: &[(String, Option<String>, Vec<String>)],
    timeout: Duration,
) -> Result<(), PgError> {
    let mut plan: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
    if spec.superuser.password.is_some() {
        plan.push((
            spec.superuser.username.clone(),
            spec.superuser.password.clone(),
            vec![],
        ));
    }
    if spec.replication.username != spec.superuser.username {
        let options = vec!["login".into(), "replication".into()];
        plan.push((
            spec.replication.username.clone(),
            spec.replication.password.clone(),
            options,
        ));
    }
    let rewind = spec
        .rewind
        .as_ref()
        .filter(|r| r.username != spec.superuser.username);
    if let Some(rewind) = rewind {
        plan.push((
            rewind.username.clone(),
            rewind.password.clone(),
            vec!["login".into()],
        ));
    }
    for (name, password, options) in users {
        let mut options = options.clone();
        let has_login = options
            .iter()
            .any(|o| o.eq_ignore_ascii_case("login") || o.eq_ignore_ascii_case("nologin"));
        if !has_login {
            // As Patroni: extra users can log in unless told otherwise.
            options.push("login".into());
        }
        plan.push((name.clone(), password.clone(), options));
    }
    let mut statements = Vec::new();
    for (_, _, options) in &plan {
        statements.push(role_options(options)?);
    }
    bounded("ensure_users", timeout, async {
        let client = connect(spec, timeout).await?;
        // Role changes must not wait for a synchronous standby that may not exist yet.
        client
            .batch_execute("SET synchronous_commit = local")
            .await
            .map_err(|e| PgError::query("SET synchronous_commit", e))?;
        for ((name, password, _), options) in plan.iter().zip(&statements) {
            ensure_role(&client, name, password.as_deref(), options).await?;
        }
        if let Some(rewind) = rewind {
            grant_rewind(&client, &rewind.username).await?;
        }
        Ok(())
    })
    .await
}

fn role_options(options: &[String]) -> Result<String, PgError> {
    let mut sql = String::new();
    for option in options {
        let lower = option.to_ascii_lowercase();
        if !ROLE_OPTIONS.contains(&lower.as_str()) {
            return Err(PgError::Invalid {
                what: "role option",
                value: option.clone(),
                reason: "expected one of superuser, createrole, createdb, replication, login, inherit, bypassrls (or their no- forms)",
            });
        }
        sql.push(' ');
        sql.push_str(&lower.to_ascii_uppercase());
    }
    Ok(sql)
}

/// CREATE or ALTER one role; quoting is done by the server's format(%I, %L).
async fn ensure_role(
    client: &Client,
    name: &str,
    password: Option<&str>,
    options: &str,
) -> Result<(), PgError> {
    let what = format!("creating or altering role {name:?}");
    let row = client
        .query_one(
            "SELECT format(
                 CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
                      THEN 'ALTER ROLE %I' ELSE 'CREATE ROLE %I' END
                 || CASE WHEN $3::text = '' AND $2::text IS NULL THEN '' ELSE ' WITH' END
                 || $3::text
                 || CASE WHEN $2::text IS NULL THEN '' ELSE ' PASSWORD %L' END,
                 $1::text, $2::text)",
            &[&name, &password, &options],
        )
        .await
        .map_err(|e| PgError::query(what.clone(), e))?;
    let statement: String = row
        .try_get(0)
        .map_err(|e| PgError::query(what.clone(), e))?;
    if statement.starts_with("ALTER") && password.is_none() && options.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| PgError::query(what, e))?;
    tracing::info!(role = %name, "role ensured");
    Ok(())
}

/// The functions a non-superuser pg_rewind source connection calls.
async fn grant_rewind(client: &Client, name: &str) -> Result<(), PgError> {
    let what = format!("granting pg_rewind functions to {name:?}");
    let row = client
        .query_one(
            "SELECT format('GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean),
                 pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_read_binary_file(text),
                 pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO %I;
                 GRANT pg_checkpoint TO %I', $1::text, $1::text)",
            &[&name],
        )
        .await
        .map_err(|e| PgError::query(what.clone(), e))?;
    let statement: String = row
        .try_get(0)
        .map_err(|e| PgError::query(what.clone(), e))?;
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| PgError::query(what, e))
}
