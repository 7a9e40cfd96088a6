//! A server connection to the leader, through a switchover or failover: the leader the DCS
//! names is tried again until it accepts, within the leader wait (retry.rs). Used for a
//! pool's connections and for replication connections, which are no pool's.

use std::fmt::Display;
use std::future::Future;

use crate::pool::server::{LoginError, ServerConn};
use crate::pooled::{login_fatal, Fatal};
use crate::reply::CANNOT_CONNECT_NOW;
use crate::retry::{Failure, Next, Retry};
use crate::route::{leader_wait, no_leader_reason, pause_or_leader_change, wait_for_leader_until};
use crate::shared::Shared;
use crate::topology::Backend;

/// Log in to the leader with `login`; `writable`: a server that is not (yet) writable, or
/// stopped being the leader meanwhile, is tried again. `what` names the connection in logs.
pub(crate) async fn login_on_leader<F, Fut>(
    shared: &Shared,
    what: &(dyn Display + Sync),
    writable: bool,
    login: F,
) -> Result<(Backend, ServerConn), Fatal>
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = (Backend, Result<ServerConn, LoginError>)>,
{
    let bound = leader_wait(shared);
    let mut retry = Retry::new(tokio::time::Instant::now(), bound);
    let mut why = String::new();
    loop {
        let Some(leader) = wait_for_leader_until(shared, None, retry.deadline()).await else {
            break;
        };
        let (leader, opened) = login(leader).await;
        let failure = match opened {
            Ok(conn) => {
                let read_only = ["in_hot_standby", "default_transaction_read_only"]
                    .iter()
                    .any(|p| conn.params.get(*p).is_some_and(|v| v == "on"));
                if writable && read_only {
                    why = format!("{} is not writable yet", leader.name);
                    Failure::NotWritable
                } else if writable && shared.leader.borrow().as_ref() != Some(&leader) {
                    why = format!("{} stopped being the leader during the login", leader.name);
                    Failure::Broken
                } else {
                    if retry.failures > 0 {
                        tracing::info!(pool = %what, member = %leader.name, attempts = retry.failures + 1, "the leader accepts connections again");
                    }
                    return Ok((leader, conn));
                }
            }
            Err(LoginError::Refused { raw, message }) => {
                let code = crate::retry::error_code(&raw);
                match Failure::of_sqlstate(&code) {
                    Failure::Final => {
                        return Err(login_fatal(LoginError::Refused { raw, message }))
                    }
                    failure => {
                        why = format!("{}: {message} ({code})", leader.name);
                        failure
                    }
                }
            }
            Err(e @ LoginError::Auth(_)) => {
                tracing::warn!(pool = %what, member = %leader.name, error = %e, "cannot log in to the server");
                return Err(login_fatal(e));
            }
            Err(e @ LoginError::Connect(_)) => {
                why = e.to_string();
                Failure::Unreachable
            }
            Err(e @ LoginError::Io(_)) => {
                why = format!("{}: {e}", leader.name);
                Failure::Broken
            }
        };
        if retry.failures == 0 {
            tracing::info!(pool = %what, member = %leader.name, reason = %why, "the leader does not accept connections yet; trying again within the leader wait");
        }
        match retry.failed(failure, tokio::time::Instant::now()) {
            Next::Wait(pause) => pause_or_leader_change(shared, pause).await,
            Next::GiveUp => break,
        }
    }
    let reason = if why.is_empty() {
        no_leader_reason(shared, bound)
    } else {
        format!("no writable leader within {bound:?} (last attempt: {why})")
    };
    tracing::warn!(pool = %what, %reason, "no server connection to the leader");
    Err(Fatal {
        code: CANNOT_CONNECT_NOW,
        message: format!(
            "pgbaton router: cannot connect now: {reason}; a failover or switchover may be in progress (handover_wait)"
        ),
        raw: None,
    })
}
