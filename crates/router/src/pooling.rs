//! What pooling shares across clients: the pools, the authentication rules (replaced by a
//! reload), the pooled clients logged in now (for `/clients`, `max_client_conn`), the router
//! keys handed to them (for CancelRequests), and what a switchover needs about the sessions
//! the kernel forwards (`takeout`). The state only: the clients' sessions are `pooled`'s.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::auth::Auth;
use crate::pool::server::{ServerConn, ServerView};
use crate::pool::{PoolKey, PoolMode, Pools};
use crate::protocol::CancelKey;
use crate::topology::Backend;

/// Where a CancelRequest carrying a client's router key goes: the server connection the
/// pooled client holds now, as the server's key and the connection's view (its member's
/// address), shared with the connection so that holding one costs no copy.
pub(crate) type CancelTarget = Arc<Mutex<Option<(CancelKey, Arc<ServerView>)>>>;

/// Everything pooling shares across clients.
pub(crate) struct Pooling {
    /// Replaced by a reload (SIGHUP): logins after it use the new rules and users.
    auth: RwLock<Arc<Auth>>,
    pub pools: Arc<Pools>,
    /// Pooled clients connected now (for max_client_conn).
    pub clients: AtomicUsize,
    /// The router keys handed to pooled clients.
    pub cancels: Mutex<HashMap<CancelKey, CancelTarget>>,
    /// Logged-in clients by id, for `/clients` and `/servers`.
    pub registry: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    pub next_client: AtomicU64,
    /// Session-mode write sessions the kernel forwards now (`takeout`): each counts as busy
    /// for a switchover's drain until it has been taken out.
    pub kernel_writes: Arc<AtomicUsize>,
    /// The connections that ask the old leader about such sessions during a switchover.
    pub probers: Probers,
    /// One copy of each set of client parameters in use.
    pub shared_params: SharedParams,
    /// What clients were told at login lately, by what they sent.
    pub greetings: Greetings,
}

/// A logged-in pooled client, for `/clients` (PgBouncer's SHOW CLIENTS).
pub(crate) struct ClientEntry {
    pub id: u64,
    pub key: PoolKey,
    pub addr: SocketAddr,
    pub local: SocketAddr,
    pub connect_time: chrono::DateTime<chrono::Utc>,
    pub application_name: Option<String>,
    pub tls: bool,
    pub mode: PoolMode,
    pub now: Mutex<ClientNow>,
}

/// What a client is doing now.
pub(crate) struct ClientNow {
    /// `active` (holds a server connection), `waiting` (for one) or `idle`.
    pub state: &'static str,
    /// When it last asked for a server connection (`request_time` gives the wall clock).
    pub requested: Instant,
    pub wait_since: Option<Instant>,
    /// The server connection it holds.
    pub server: Option<Arc<ServerView>>,
}

impl ClientNow {
    /// When it last asked for a server connection (wall clock, computed when shown: the
    /// request itself reads one clock).
    pub(crate) fn request_time(&self) -> chrono::DateTime<chrono::Utc> {
        crate::pool::server::wall(self.requested)
    }
}

impl ClientEntry {
    pub(crate) fn now(&self) -> std::sync::MutexGuard<'_, ClientNow> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pooling {
    pub(crate) fn new(auth: Auth, pools: Arc<Pools>) -> Pooling {
        Pooling {
            auth: RwLock::new(Arc::new(auth)),
            pools,
            clients: AtomicUsize::new(0),
            cancels: Mutex::new(Default::default()),
            registry: Mutex::new(Default::default()),
            next_client: AtomicU64::new(1),
            kernel_writes: Arc::new(AtomicUsize::new(0)),
            probers: Default::default(),
            shared_params: Default::default(),
            greetings: Default::default(),
        }
    }

    pub(crate) fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn replace_auth(&self, auth: Auth) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(auth);
    }

    /// The logged-in clients now.
    pub(crate) fn clients_now(&self) -> Vec<Arc<ClientEntry>> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn cancel_target(&self, key: &CancelKey) -> Option<CancelTarget> {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

/// One connection per pool and member through which the sessions being taken out ask
/// about their backends (in turn).
pub(crate) struct Prober {
    pub backend: Backend,
    pub key: PoolKey,
    pub conn: tokio::sync::Mutex<Option<ServerConn>>,
}

/// The probers of a switchover, by pool and member; emptied when the switchover is over.
#[derive(Default)]
pub(crate) struct Probers(Mutex<HashMap<(PoolKey, String), Arc<Prober>>>);

impl Probers {
    pub(crate) fn get(&self, key: &PoolKey, backend: &Backend) -> Arc<Prober> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((key.clone(), backend.name.clone()))
            .or_insert_with(|| {
                Arc::new(Prober {
                    backend: backend.clone(),
                    key: key.clone(),
                    conn: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// Close them (the switchover is over).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// One copy of each set of client parameters in use (`pooled::txn::ClientParams::share`),
/// by fingerprint, held weakly: a set goes with its last client.
#[derive(Debug, Default)]
pub(crate) struct SharedParams(Mutex<HashMap<u128, std::sync::Weak<BTreeMap<String, String>>>>);

impl SharedParams {
    pub(crate) fn intern(
        &self,
        map: Arc<BTreeMap<String, String>>,
        print: u128,
    ) -> Arc<BTreeMap<String, String>> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = known.get(&print).and_then(std::sync::Weak::upgrade) {
            // Compared, not trusted to the print: equal sets only.
            return if *existing == *map { existing } else { map };
        }
        if known.len() >= 64 {
            known.retain(|_, set| set.strong_count() > 0);
        }
        known.insert(print, Arc::downgrade(&map));
        map
    }

    /// How many sets are remembered (live or not yet swept).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What a client of a transaction-mode pool is told at login (its ParameterStatus messages)
/// and keeps as its parameters from then on depends only on the parameters it sent and on
/// what the pool's servers report (`Pools::server_params`, shared): most clients of a pool
/// send the same few, so the last few outcomes are kept and found again instead of built
/// again (`pooled::start`).
#[derive(Default)]
pub(crate) struct Greetings(Mutex<std::collections::VecDeque<Greeting>>);

/// One login's outcome.
#[derive(Clone)]
pub(crate) struct Greeting {
    /// The pool's server parameters it was made from (weak: the allocation stays, so no
    /// other set can take its address).
    told: std::sync::Weak<BTreeMap<String, String>>,
    sent: BTreeMap<String, String>,
    /// The ParameterStatus messages.
    pub statuses: Arc<[u8]>,
    /// The client's parameters, shared, and their print.
    pub params: Arc<BTreeMap<String, String>>,
    pub print: u128,
}

impl Greetings {
    /// Outcomes kept.
    const KEPT: usize = 16;

    /// The outcome for a client that sent `sent`, told `told`.
    pub(crate) fn find(
        &self,
        told: &Arc<BTreeMap<String, String>>,
        sent: &BTreeMap<String, String>,
    ) -> Option<Greeting> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|g| std::ptr::eq(g.told.as_ptr(), Arc::as_ptr(told)) && g.sent == *sent)
            .cloned()
    }

    pub(crate) fn remember(
        &self,
        told: &Arc<BTreeMap<String, String>>,
        sent: BTreeMap<String, String>,
        statuses: Arc<[u8]>,
        params: Arc<BTreeMap<String, String>>,
        print: u128,
    ) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Outcomes for server parameters no pool reports any more go first.
        kept.retain(|g| g.told.strong_count() > 0);
        if kept.len() >= Self::KEPT {
            kept.pop_front();
        }
        kept.push_back(Greeting {
            told: Arc::downgrade(told),
            sent,
            statuses,
            params,
            print,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_login_outcome_is_found_for_the_same_sent_parameters_and_server_parameters_only() {
        let greetings = Greetings::default();
        let told = Arc::new(map(&[("TimeZone", "UTC"), ("server_version", "15.18")]));
        let sent = map(&[("application_name", "pgbench")]);
        let statuses: Arc<[u8]> = Arc::from(&b"S..."[..]);
        let params = Arc::new(map(&[("TimeZone", "UTC"), ("application_name", "pgbench")]));
        greetings.remember(&told, sent.clone(), statuses.clone(), params.clone(), 7);

        let found = greetings.find(&told, &sent).expect("found");
        assert!(Arc::ptr_eq(&found.statuses, &statuses));
        assert!(Arc::ptr_eq(&found.params, &params));
        assert_eq!(found.print, 7);
        // Other sent parameters; the same server parameters in another set (a new server
        // connection reported them): not found.
        assert!(greetings.find(&told, &map(&[])).is_none());
        let again = Arc::new((*told).clone());
        assert!(greetings.find(&again, &sent).is_none());
        // Server parameters no pool reports any more are forgotten at the next remember.
        drop(told);
        greetings.remember(&again, sent.clone(), statuses, params, 8);
        assert_eq!(greetings.0.lock().expect("lock").len(), 1);
        assert_eq!(greetings.find(&again, &sent).expect("found").print, 8);
    }

    #[test]
    fn only_the_latest_login_outcomes_are_kept() {
        let greetings = Greetings::default();
        let told = Arc::new(map(&[("TimeZone", "UTC")]));
        for i in 0..40 {
            let sent = map(&[("application_name", &format!("app {i}"))]);
            greetings.remember(&told, sent, Arc::from(&b""[..]), Arc::new(map(&[])), i);
        }
        assert_eq!(greetings.0.lock().expect("lock").len(), Greetings::KEPT);
        let latest = map(&[("application_name", "app 39")]);
        assert_eq!(greetings.find(&told, &latest).expect("kept").print, 39);
        assert!(greetings
            .find(&told, &map(&[("application_name", "app 0")]))
            .is_none());
    }
}
