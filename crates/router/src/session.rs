//! One client connection from accept to hand-over: open it (`open`: first packet, cancel,
//! TLS passthrough or termination), pick the role (the listener's, unless the startup asks
//! otherwise with `pgbaton.target` / `target_session_attrs`, or connects to an alias
//! database of `databases:`), choose a server, relay the startup, and start forwarding.
//! Every refusal is a PostgreSQL ErrorResponse naming the situation; a broken client is
//! dropped with a log line and nothing else is affected.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::aliases;
use crate::client::Client;
use crate::config::ReadFallback;
use crate::handshake::{start, AuthLog, StartFailure};
use crate::metrics::Metrics;
use crate::open::{open, Opened};
use crate::protocol::Target;
use crate::reply::{
    refuse, send_and_close, CANNOT_CONNECT_NOW, CONNECTION_FAILURE, INVALID_PARAMETER,
};
use crate::retry::{Failure, Next, Retry};
use crate::route::{
    connect, decision, leader_wait, no_leader_reason, pause_or_leader_change, read_candidates,
    wait_for_leader, wait_for_leader_until,
};
use crate::shared::Shared;

/// Serve one client of a listener; `auto`: the auto (read-your-writes) listener, whose
/// role is otherwise the write listener's.
pub(crate) async fn serve_client(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Target,
    auto: bool,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    // The startup's futures are boxed, so that a client's task, which lives as long as the
    // client, is only as large as the state it keeps for the session (what an idle client
    // costs), not as large as the largest step of its startup.
    let opened = Box::pin(open(tcp, peer, listener, &shared)).await;
    let Opened::Startup(mut client, mut startup) = opened else {
        return;
    };
    let requested = match startup.take_target() {
        Ok(requested) => requested,
        Err(e) => {
            let message = e.to_string();
            refuse(
                &shared,
                &mut client,
                INVALID_PARAMETER,
                "bad_target",
                &message,
            )
            .await;
            return;
        }
    };
    // An explicit role request wins over an alias database's target.
    let alias = aliases::apply(&mut startup, &shared.cfg.databases);
    if let Some((name, entry)) = alias {
        tracing::debug!(%peer, alias = name, dbname = %entry.dbname, "alias database");
        Metrics::count(&shared.metrics.aliases, &[("alias", name)]);
    }
    let chosen = requested.or(alias.and_then(|(_, entry)| entry.target));
    let target = chosen.unwrap_or(listener);
    let min_lsn = match startup
        .take_min_lsn()
        .map(|raw| crate::pooled::ryw::parse_token(&raw))
    {
        None => None,
        Some(Ok(lsn)) => Some(lsn),
        Some(Err(message)) => {
            refuse(
                &shared,
                &mut client,
                INVALID_PARAMETER,
                "bad_min_lsn",
                &message,
            )
            .await;
            return;
        }
    };
    if let Some(pooling) = shared.pooling.clone() {
        let alias = alias.map(|(_, entry)| entry.clone());
        // The auto listener routes each transaction unless the client chose a role.
        let auto = auto && chosen.is_none();
        let ryw = (auto || (min_lsn.is_some() && target != Target::Write)).then(|| {
            crate::pooled::ryw::ReadYourWrites {
                auto,
                last_commit: 0,
                min_lsn: min_lsn.unwrap_or(0),
                wait: shared.cfg.read_your_writes_wait,
                deferred_begin: false,
                local_show: Default::default(),
                maybe_async_commit: false,
            }
        });
        crate::pooled::serve(
            shared, pooling, client, startup, listener, target, alias, peer, ryw,
        )
        .await;
        return;
    }
    if min_lsn.is_some() {
        let message = "pgbaton.min_lsn needs a pooling router (an auth: section in router.yml): without one the router cannot check a replica's replay position; connect without it, or to a router with auth:";
        refuse(
            &shared,
            &mut client,
            INVALID_PARAMETER,
            "min_lsn_without_pooling",
            message,
        )
        .await;
        return;
    }
    tracing::debug!(%peer, user = %startup.user(), target = target.label(), tls = client.is_tls(), "new client");
    let startup = startup.encode();
    match target {
        Target::Write => Box::pin(write_session(shared, client, &startup)).await,
        Target::Read | Target::Any => {
            Box::pin(read_session(shared, client, &startup, target)).await
        }
    }
}

/// To the leader, never to a server in recovery: through a switchover or failover the
/// leader the DCS names is tried again until it accepts, within the leader wait (retry.rs).
async fn write_session(shared: Arc<Shared>, mut client: Client, startup: &[u8]) {
    let mut auth = AuthLog::default();
    let bound = leader_wait(&shared);
    let mut retry = Retry::new(tokio::time::Instant::now(), bound);
    let mut why = String::new();
    loop {
        let Some(leader) = wait_for_leader_until(&shared, None, retry.deadline()).await else {
            break;
        };
        let failure = match connect(&shared, &leader).await {
            Err(e) => {
                why = e;
                Failure::Unreachable
            }
            Ok(mut server) => {
                let relay = start(&mut client, &mut server, startup, &mut auth, true);
                match tokio::time::timeout(shared.cfg.startup_timeout, relay).await {
                    Ok(Ok(ready)) => {
                        if shared.leader.borrow().as_ref() == Some(&leader) {
                            decision(&shared, Target::Write, "leader");
                            crate::relay::forward_client(
                                client,
                                shared,
                                server,
                                ready,
                                leader,
                                Target::Write,
                                true,
                            )
                            .await;
                            return;
                        }
                        why = format!(
                            "{} stopped being the leader during the startup",
                            leader.name
                        );
                        Failure::Broken
                    }
                    Ok(Err(StartFailure::NotWritable(detail))) => {
                        why = format!("{} is not writable ({detail})", leader.name);
                        Failure::NotWritable
                    }
                    Ok(Err(StartFailure::Refused(bytes))) => {
                        let code = crate::retry::error_code(&bytes);
                        match Failure::of_sqlstate(&code) {
                            Failure::Final => {
                                send_and_close(&mut client, &bytes).await;
                                return;
                            }
                            failure => {
                                why = format!("{} answered {code}", leader.name);
                                failure
                            }
                        }
                    }
                    Ok(Err(e @ StartFailure::CannotRepeatAuth(_))) => {
                        why = if why.is_empty() {
                            format!("{e}: connect again")
                        } else {
                            format!("{why}; and {e}: connect again")
                        };
                        break;
                    }
                    Ok(Err(StartFailure::Client(e))) => {
                        tracing::debug!(error = %e, "client left during the startup");
                        return;
                    }
                    Ok(Err(StartFailure::Server(e))) => {
                        why = format!("{} failed during the startup: {e}", leader.name);
                        Failure::Broken
                    }
                    Err(_) => {
                        let message = format!(
                            "{} did not complete the startup within {:?}",
                            leader.name, shared.cfg.startup_timeout
                        );
                        refuse(
                            &shared,
                            &mut client,
                            CONNECTION_FAILURE,
                            "startup_timeout",
                            &message,
                        )
                        .await;
                        return;
                    }
                }
            }
        };
        if retry.failures == 0 {
            tracing::info!(leader = %leader.name, reason = %why, "the leader does not accept connections yet; trying again within the leader wait");
        }
        match retry.failed(failure, tokio::time::Instant::now()) {
            Next::Wait(pause) => pause_or_leader_change(&shared, pause).await,
            Next::GiveUp => break,
        }
    }
    decision(&shared, Target::Write, "refused");
    let reason = if why.is_empty() {
        no_leader_reason(&shared, bound)
    } else {
        format!("no writable leader within {bound:?} ({why})")
    };
    let message = format!(
        "pgbaton router: cannot connect now: {reason}; a failover or switchover may be in progress"
    );
    refuse(
        &shared,
        &mut client,
        CANNOT_CONNECT_NOW,
        "no_leader",
        &message,
    )
    .await;
}

/// To a readable replica, else (by configuration, or for `any`) to the leader.
async fn read_session(shared: Arc<Shared>, mut client: Client, startup: &[u8], target: Target) {
    let mut auth = AuthLog::default();
    let mut candidates = read_candidates(&shared).into_iter();
    let fallback = target == Target::Any || shared.cfg.read_fallback == ReadFallback::Leader;
    let mut on_leader = false;
    loop {
        let backend = match candidates.next() {
            Some(b) => b,
            None if fallback && !on_leader => match wait_for_leader(&shared, None).await {
                Some(leader) => {
                    on_leader = true;
                    leader
                }
                None => break,
            },
            None => break,
        };
        // Once the client answered an authentication request, another server is no option.
        if auth.client_involved {
            break;
        }
        let mut server = match connect(&shared, &backend).await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(member = %backend.name, error = %e, "cannot reach a server for reads; trying the next");
                continue;
            }
        };
        let relay = start(&mut client, &mut server, startup, &mut auth, false);
        match tokio::time::timeout(shared.cfg.startup_timeout, relay).await {
            Ok(Ok(ready)) => {
                decision(
                    &shared,
                    target,
                    if on_leader {
                        "leader_fallback"
                    } else {
                        "replica"
                    },
                );
                crate::relay::forward_client(client, shared, server, ready, backend, target, false)
                    .await;
                return;
            }
            Ok(Err(StartFailure::Refused(bytes))) => {
                send_and_close(&mut client, &bytes).await;
                return;
            }
            Ok(Err(StartFailure::Client(_))) => return,
            Ok(Err(e)) => {
                tracing::warn!(member = %backend.name, error = %e, "startup on a read server failed; trying the next");
            }
            Err(_) => {
                let message = format!(
                    "{} did not complete the startup within {:?}",
                    backend.name, shared.cfg.startup_timeout
                );
                refuse(
                    &shared,
                    &mut client,
                    CONNECTION_FAILURE,
                    "startup_timeout",
                    &message,
                )
                .await;
                return;
            }
        }
    }
    decision(&shared, target, "refused");
    let message = if fallback {
        format!("pgbaton router: cannot connect now: no replica within read.max_lag ({} bytes) and no leader within {:?}", shared.cfg.max_lag_bytes, leader_wait(&shared))
    } else {
        format!("pgbaton router: cannot connect now: no replica within read.max_lag ({} bytes) and read.fallback is refuse", shared.cfg.max_lag_bytes)
    };
    refuse(
        &shared,
        &mut client,
        CANNOT_CONNECT_NOW,
        "no_replica",
        &message,
    )
    .await;
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_clients_task_is_as_small_as_its_relay() {
        // A client's task lives as long as the client, at the size of its largest state:
        // the startup, login and connection steps are boxed so that an idle pooled client
        // costs its relay's state only (it was 5 kB in a debug build with them inline;
        // 10,000 idle clients are what bench/pool measures).
        let task = future_size(|(a, b, c, d, e)| super::serve_client(a, b, c, d, e));
        let relay = future_size(|(a, b, c)| crate::pooled::txn::relay(a, b, c));
        assert!(task < relay + 1024, "task {task} bytes, relay {relay}");
        // 2,032 bytes before read-your-writes added one await (the token after a commit);
        // 1,936 once messages were parsed in place.
        assert!(relay < 2048, "the relay's future takes {relay} bytes");
    }
}
