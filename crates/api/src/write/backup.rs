//! `POST /backup` (a pgbaton extension): the leader's agent starts a pgBackRest backup in the
//! background and answers 202 at once; `GET /patroni` shows its progress under
//! `pgbackrest.backup` and the newest backup under `pgbackrest.last_backup`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::{authorize, parse_body, text, AppState, Refusal};
use crate::commands::{BackupFrom, BackupKind, LocalCommand};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupBody {
    /// `full`, `diff` or `incr` (pgBackRest's default: `incr`, which pgBackRest turns into
    /// a full backup when the repository has none).
    #[serde(default, rename = "type")]
    kind: Option<BackupKind>,
    /// `standby` or `leader`; absent: a standby when the repository's configuration lists
    /// standbys, else the leader.
    #[serde(default)]
    from: Option<BackupFrom>,
}

pub(crate) async fn post_backup(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let commands = authorize(&app, &headers)?;
    let req: BackupBody = parse_body(&body, true)?;
    let leader = {
        let status = app.status.borrow();
        if status.writable_leader {
            None
        } else {
            Some(
                status
                    .cluster
                    .as_ref()
                    .and_then(|c| c.leader.as_ref())
                    .map(|l| l.name.clone()),
            )
        }
    };
    if let Some(leader) = leader {
        let message = match leader {
            Some(name) => format!(
                "this member is not the leader: a backup is started by the leader's agent; send it to {name} (pgbaton ctl backup finds the leader)"
            ),
            None => "this member is not the leader and the cluster has none now: retry when a leader runs".to_string(),
        };
        return Ok(text(503, message));
    }
    let outcome = commands
        .local(LocalCommand::Backup {
            kind: req.kind.unwrap_or(BackupKind::Incr),
            from: req.from,
        })
        .await;
    Ok(text(outcome.status, outcome.message))
}
