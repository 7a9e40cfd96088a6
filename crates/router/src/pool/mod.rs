//! Pools of server connections, one per (database, user, target), with PgBouncer's limits:
//! the pool's size (`default_pool_size`, or an alias's `pool_size`; past
//! `reserve_pool_timeout` a waiting client may use `reserve_pool_size` more), connections
//! per database (`max_db_connections`) and per user (`max_user_connections`), and a FIFO
//! queue of clients waiting for a connection up to `query_wait_timeout`. A connection that
//! comes back goes straight to the first waiter. Every open connection, and every permission
//! to open one, is a `Slot`: dropping it (anywhere, on any path) frees the place and hands
//! it to a waiter, so the counts cannot drift.

pub(crate) mod server;

use std::collections::BTreeSet;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use server::{ServerConn, ServerLogin};

pub use crate::pool_config::{PoolMode, PoolSettings};

/// Which pool: the database and user the server sees, and the role it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PoolKey {
    pub database: String,
    pub user: String,
    pub target: &'static str,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ({})", self.database, self.user, self.target)
    }
}

/// A place in a pool: an open connection or the right to open one.
pub(crate) struct Slot {
    pools: Arc<Pools>,
    key: PoolKey,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.pools.release(&self.key);
        }
    }
}

enum Grant {
    Conn(ServerConn),
    Open(Slot),
}

struct Waiter {
    id: u64,
    since: Instant,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct PoolState {
    idle: VecDeque<ServerConn>,
    /// Open or being opened (idle included).
    open: usize,
    size: usize,
    waiters: VecDeque<Waiter>,
    /// How the router logs in as this pool's user (the latest client's proof).
    login: ServerLogin,
    /// The ParameterStatus of the pool's last new server connection: what a new client is
    /// told at login in transaction mode, without waiting for a server connection.
    /// Shared: each login in transaction mode reads it, none copies it.
    server_params: Option<std::sync::Arc<std::collections::BTreeMap<String, String>>>,
    /// The mode of its latest client (for /pools).
    mode: Option<PoolMode>,
    /// The size came from a database alias's `pool_size` (a reload of `pool:` keeps it).
    alias_size: bool,
    /// Clients of this pool now, and of those the ones holding a server connection.
    clients: usize,
    active_clients: usize,
    stats: PoolStats,
}

/// Counters for `/stats` (PgBouncer's SHOW STATS).
#[derive(Debug, Default, Clone)]
pub(crate) struct PoolStats {
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub wait_time_us: u64,
    pub max_wait_us: u64,
    pub server_logins: u64,
    /// Time from a transaction's first message to the ReadyForQuery that ended it.
    pub xact_time_us: u64,
    /// Time from each query's (or extended batch's) first message to its ReadyForQuery.
    pub query_time_us: u64,
}

#[derive(Default)]
struct State {
    /// Looked up twice per transaction (checkout, checkin): foldhash, not SipHash (1 % of
    /// the router's CPU in `pgbench -S`); seeded at random, and the keys are names clients
    /// have authenticated with.
    pools: HashMap<PoolKey, PoolState, foldhash::fast::RandomState>,
    per_db: HashMap<String, usize>,
    per_user: HashMap<String, usize>,
}

pub(crate) struct Pools {
    /// Replaced by a reload (SIGHUP); work already under way keeps the copy it took.
    settings: RwLock<Arc<PoolSettings>>,
    state: Mutex<State>,
    next_waiter: AtomicU64,
    /// Paused databases (`POST /pause`; `*` = all): their clients wait for a server
    /// connection until resumed, and connections that come back are closed.
    paused: watch::Sender<BTreeSet<String>>,
    /// Some database is paused: `paused` is read only then (each checkout and checkin asks).
    any_paused: std::sync::atomic::AtomicBool,
    /// When the pools were made (for the averages of /stats).
    pub started: Instant,
}

/// The paused set names `database` (or every database).
fn names(paused: &BTreeSet<String>, database: &str) -> bool {
    paused.contains("*") || paused.contains(database)
}

/// What `checkout` gives.
pub(crate) enum Checkout {
    /// An idle connection (check it with `server_check_query` if it idled long).
    Idle(ServerConn),
    /// Open a new connection and attach this slot to it.
    Open(Slot),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckoutError {
    #[error("no server connection in pool {pool} within query_wait_timeout ({timeout:?}): all {size} are busy")]
    Timeout {
        pool: String,
        timeout: Duration,
        size: usize,
    },
    #[error("database {database} is paused (POST /pause) and was not resumed within query_wait_timeout ({timeout:?}) for pool {pool}")]
    Paused {
        database: String,
        pool: String,
        timeout: Duration,
    },
}

impl State {
    fn room(&self, settings: &PoolSettings, key: &PoolKey, reserve: bool) -> bool {
        let Some(pool) = self.pools.get(key) else {
            return false;
        };
        let limit = pool.size
            + if reserve {
                settings.reserve_pool_size
            } else {
                0
            };
        let db = self.per_db.get(&key.database).copied().unwrap_or(0);
        let user = self.per_user.get(&key.user).copied().unwrap_or(0);
        pool.open < limit
            && (settings.max_db_connections == 0 || db < settings.max_db_connections)
            && (settings.max_user_connections == 0 || user < settings.max_user_connections)
    }

    fn take(&mut self, key: &PoolKey) {
        if let Some(pool) = self.pools.get_mut(key) {
            pool.open += 1;
        }
        *self.per_db.entry(key.database.clone()).or_default() += 1;
        *self.per_user.entry(key.user.clone()).or_default() += 1;
    }

    fn give_back(&mut self, key: &PoolKey) {
        if let Some(pool) = self.pools.get_mut(key) {
            pool.open = pool.open.saturating_sub(1);
        }
        for (map, name) in [
            (&mut self.per_db, &key.database),
            (&mut self.per_user, &key.user),
        ] {
            if let Some(n) = map.get_mut(name) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// An idle connection of another pool sharing the database or user, to close so that
    /// `key` gets a place under max_db_connections / max_user_connections.
    fn evictable(&mut self, settings: &PoolSettings, key: &PoolKey) -> Option<ServerConn> {
        if settings.max_db_connections == 0 && settings.max_user_connections == 0 {
            return None;
        }
        let pool = self.pools.get(key)?;
        if pool.open >= pool.size {
            return None;
        }
        let victim = self
            .pools
            .iter()
            .filter(|(k, p)| {
                *k != key
                    && !p.idle.is_empty()
                    && (k.database == key.database || k.user == key.user)
            })
            .map(|(k, _)| k.clone())
            .next()?;
        self.pools.get_mut(&victim)?.idle.pop_front()
    }
}

impl Pools {
    pub(crate) fn new(settings: PoolSettings) -> Arc<Pools> {
        Arc::new(Pools {
            settings: RwLock::new(Arc::new(settings)),
            state: Mutex::new(State::default()),
            next_waiter: AtomicU64::new(1),
            paused: watch::Sender::new(BTreeSet::new()),
            any_paused: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// The pool settings now.
    pub(crate) fn settings(&self) -> Arc<PoolSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A reload: new settings for new work. Pools sized by `default_pool_size` take the new
    /// size (a bigger one lets waiters in at once; a smaller one closes connections as they
    /// come back, never under a client).
    pub(crate) fn replace_settings(self: &Arc<Self>, settings: PoolSettings) {
        let size = settings.default_pool_size;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        let mut surplus = Vec::new();
        {
            let mut state = self.lock();
            for pool in state.pools.values_mut() {
                if !pool.alias_size {
                    pool.size = size;
                }
                let mut closing = 0;
                while pool.open - closing > pool.size {
                    match pool.idle.pop_front() {
                        Some(conn) => {
                            closing += 1;
                            surplus.push(conn);
                        }
                        None => break,
                    }
                }
            }
            self.grant_waiting(&mut state);
        }
        // Dropped outside the lock: their slots free the places.
        drop(surplus);
    }

    /// Is `database` paused now?
    pub(crate) fn is_paused(&self, database: &str) -> bool {
        self.any_paused.load(Ordering::Acquire) && names(&self.paused.borrow(), database)
    }

    /// The paused databases (`*` = all).
    pub(crate) fn paused(&self) -> Vec<String> {
        self.paused.borrow().iter().cloned().collect()
    }

    /// PgBouncer's PAUSE: new work for `database` (None: every database) waits; idle
    /// server connections are closed now, busy ones when they come back (at the end of
    /// their transaction, or of their session in session mode). Resolves when no server
    /// connection of the database is open, or after `within` (Err: how many still are).
    pub(crate) async fn pause(
        &self,
        database: Option<&str>,
        within: Duration,
    ) -> Result<(), usize> {
        let name = database.unwrap_or("*").to_string();
        self.paused.send_modify(|set| {
            set.insert(name);
            self.any_paused.store(true, Ordering::Release);
        });
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut closing = Vec::new();
            let open = {
                let mut state = self.lock();
                for (key, pool) in state.pools.iter_mut() {
                    if database.is_none_or(|d| d == key.database) {
                        closing.extend(pool.idle.drain(..));
                    }
                }
                state
                    .pools
                    .iter()
                    .filter(|(k, _)| database.is_none_or(|d| d == k.database))
                    .map(|(_, p)| p.open)
                    .sum::<usize>()
                    .saturating_sub(closing.len())
            };
            drop(closing);
            if open == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(open);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Server connections of `target`'s pools that are busy (open, not idle): the
    /// transactions a switchover's pause lets finish. In session mode, once the write
    /// traffic is held, the idle sessions have given their connection up (moved) or been
    /// closed (state the router cannot carry), so the connections still held are those of
    /// sessions in a transaction (or forwarded by the kernel, not yet taken out).
    pub(crate) fn busy_transactions(&self, target: &str) -> usize {
        let state = self.lock();
        state
            .pools
            .iter()
            .filter(|(k, p)| k.target == target && p.mode.is_some())
            .map(|(_, p)| p.open.saturating_sub(p.idle.len()))
            .sum()
    }

    /// PgBouncer's RESUME (None: every database, and `*`).
    pub(crate) fn resume(&self, database: Option<&str>) {
        self.paused.send_modify(|set| {
            match database {
                Some(d) => {
                    set.remove(d);
                }
                None => set.clear(),
            }
            self.any_paused.store(!set.is_empty(), Ordering::Release);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(self: &Arc<Self>, key: &PoolKey) -> Slot {
        Slot {
            pools: self.clone(),
            key: key.clone(),
            armed: true,
        }
    }

    /// Give freed places to waiters (of any pool: a database or user limit may have been
    /// what held them). Called with the lock held; never drops a Slot under it.
    fn grant_waiting(self: &Arc<Self>, state: &mut State) {
        let settings = self.settings();
        let keys: Vec<PoolKey> = state
            .pools
            .iter()
            .filter(|(_, p)| !p.waiters.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            loop {
                let reserve = state
                    .pools
                    .get(&key)
                    .and_then(|p| p.waiters.front())
                    .is_some_and(|w| {
                        settings.reserve_pool_size > 0
                            && w.since.elapsed() >= settings.reserve_pool_timeout
                    });
                if !state.room(&settings, &key, reserve) {
                    break;
                }
                let Some(waiter) = state
                    .pools
                    .get_mut(&key)
                    .and_then(|p| p.waiters.pop_front())
                else {
                    break;
                };
                state.take(&key);
                if let Err(Grant::Open(mut slot)) = waiter.tx.send(Grant::Open(self.slot(&key))) {
                    // That client gave up: undo without dropping an armed slot under the lock.
                    slot.armed = false;
                    state.give_back(&key);
                }
            }
        }
    }

    fn release(self: &Arc<Self>, key: &PoolKey) {
        let mut state = self.lock();
        state.give_back(key);
        self.grant_waiting(&mut state);
    }

    /// Register a client of `key` (for /pools); the pool is created with `size`.
    pub(crate) fn client_joined(
        &self,
        key: &PoolKey,
        size: usize,
        alias_size: bool,
        mode: PoolMode,
    ) {
        let mut state = self.lock();
        let pool = state.pools.entry(key.clone()).or_default();
        pool.size = size;
        pool.alias_size = alias_size;
        pool.mode = Some(mode);
        pool.clients += 1;
    }

    pub(crate) fn client_left(&self, key: &PoolKey) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            pool.clients = pool.clients.saturating_sub(1);
        }
    }

    pub(crate) fn set_active(&self, key: &PoolKey, active: bool) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            if active {
                pool.active_clients += 1;
            } else {
                pool.active_clients = pool.active_clients.saturating_sub(1);
            }
        }
    }

    /// Remember how to log in as the pool's user (a later proof replaces an earlier one;
    /// "nothing" never replaces something).
    pub(crate) fn remember_login(&self, key: &PoolKey, login: ServerLogin) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            if login.strength() > 0 || pool.login.strength() == 0 {
                pool.login = login;
            }
        }
    }

    pub(crate) fn server_params(
        &self,
        key: &PoolKey,
    ) -> Option<std::sync::Arc<std::collections::BTreeMap<String, String>>> {
        self.lock()
            .pools
            .get(key)
            .and_then(|p| p.server_params.clone())
    }

    pub(crate) fn set_server_params(
        &self,
        key: &PoolKey,
        params: std::collections::BTreeMap<String, String>,
    ) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            if pool.server_params.as_deref() != Some(&params) {
                pool.server_params = Some(std::sync::Arc::new(params));
            }
        }
    }

    pub(crate) fn login(&self, key: &PoolKey) -> ServerLogin {
        self.lock()
            .pools
            .get(key)
            .map(|p| p.login.clone())
            .unwrap_or_default()
    }

    /// Is an idle connection still good to hand out (age, idle time, right member)?
    fn fresh(s: &PoolSettings, conn: &ServerConn, usable: &dyn Fn(&ServerConn) -> bool) -> bool {
        Self::fresh_at(s, conn, usable, Instant::now())
    }

    /// `fresh`, with the time already read.
    fn fresh_at(
        s: &PoolSettings,
        conn: &ServerConn,
        usable: &dyn Fn(&ServerConn) -> bool,
        now: Instant,
    ) -> bool {
        (s.server_lifetime.is_zero() || now.duration_since(conn.created) < s.server_lifetime)
            && (s.server_idle_timeout.is_zero()
                || now.duration_since(conn.idle_since) < s.server_idle_timeout)
            && usable(conn)
    }

    /// Without waiting: an idle, fresh connection of `key` that `wanted` accepts (the others
    /// stay idle), else a place to open one when the pool has room; None otherwise. For a
    /// second choice next to one the client holds already (read-your-writes' other replica).
    pub(crate) fn try_checkout(
        self: &Arc<Self>,
        key: &PoolKey,
        usable: &(dyn Fn(&ServerConn) -> bool + Sync),
        wanted: &(dyn Fn(&ServerConn) -> bool + Sync),
    ) -> Option<Checkout> {
        if let Some(conn) = self.take_idle(key, usable, wanted, false, Instant::now()) {
            return Some(Checkout::Idle(conn));
        }
        let settings = self.settings();
        if self.is_paused(&key.database) {
            return None;
        }
        let mut state = self.lock();
        if state.room(&settings, key, false) {
            state.take(key);
            drop(state);
            return Some(Checkout::Open(self.slot(key)));
        }
        None
    }

    /// Without waiting: an idle, fresh connection of `key` that `wanted` accepts (the others
    /// stay idle; one found at once has waited no time), None when the database is paused
    /// or there is none. `activate`: the client taking it becomes active (`set_active`),
    /// under the same lock. `now`: the caller's clock reading.
    pub(crate) fn take_idle(
        &self,
        key: &PoolKey,
        usable: &(dyn Fn(&ServerConn) -> bool + Sync),
        wanted: &(dyn Fn(&ServerConn) -> bool + Sync),
        activate: bool,
        now: Instant,
    ) -> Option<ServerConn> {
        if self.is_paused(&key.database) {
            return None;
        }
        let settings = self.settings();
        let mut state = self.lock();
        let pool = state.pools.get_mut(key)?;
        let at = pool
            .idle
            .iter()
            .position(|c| wanted(c) && Self::fresh_at(&settings, c, usable, now))?;
        let conn = pool.idle.remove(at)?;
        if activate {
            pool.active_clients += 1;
        }
        Some(conn)
    }

    /// A server connection for `key`: idle, or a place to open one, waiting in FIFO order
    /// up to `query_wait_timeout`. `usable` rejects idle connections to the wrong member.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        key: &PoolKey,
        usable: &(dyn Fn(&ServerConn) -> bool + Sync),
    ) -> Result<Checkout, CheckoutError> {
        let started = Instant::now();
        let settings = self.settings();
        let wait = settings.query_wait_timeout;
        let deadline = (!wait.is_zero()).then(|| tokio::time::Instant::from_std(started) + wait);
        let mut reserve = false;
        let mut front = false;
        // Subscribed only once the database is seen paused: a checkout of a database that
        // is not paused costs no subscription.
        let mut watching: Option<watch::Receiver<BTreeSet<String>>> = None;
        let mut first = true;
        loop {
            // The first look uses the time read at the start (one clock read per checkout).
            let now = if std::mem::take(&mut first) {
                started
            } else {
                Instant::now()
            };
            // A paused database: wait for RESUME (within query_wait_timeout).
            while self.is_paused(&key.database) {
                let paused = watching.get_or_insert_with(|| self.paused.subscribe());
                if !names(&paused.borrow_and_update(), &key.database) {
                    break;
                }
                let resumed = match deadline {
                    Some(d) => tokio::time::timeout_at(d, paused.changed()).await,
                    None => Ok(paused.changed().await),
                };
                match resumed {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => {
                        return Err(CheckoutError::Paused {
                            database: key.database.clone(),
                            pool: key.to_string(),
                            timeout: wait,
                        })
                    }
                }
            }
            let mut stale = Vec::new();
            let (rx, id) = {
                let mut state = self.lock();
                let mut got = None;
                if let Some(pool) = state.pools.get_mut(key) {
                    while let Some(conn) = pool.idle.pop_front() {
                        if Self::fresh_at(&settings, &conn, usable, now) {
                            got = Some(conn);
                            break;
                        }
                        stale.push(conn);
                    }
                    if got.is_some() {
                        // Found at once: it waited the time of this lookup.
                        Self::record_waited(pool, started.elapsed());
                    }
                }
                if let Some(conn) = got {
                    drop(state);
                    drop(stale);
                    return Ok(Checkout::Idle(conn));
                }
                if !stale.is_empty() {
                    // Their places free up when they are dropped (outside the lock); look again.
                    drop(state);
                    drop(stale);
                    continue;
                }
                if state.room(&settings, key, reserve) {
                    state.take(key);
                    self.record_wait(&mut state, key, started);
                    drop(state);
                    return Ok(Checkout::Open(self.slot(key)));
                }
                if let Some(victim) = state.evictable(&settings, key) {
                    drop(state);
                    tracing::debug!(pool = %key, victim = %victim.id, "closing an idle connection of another pool for max_db_connections/max_user_connections");
                    drop(victim);
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
                let waiter = Waiter {
                    id,
                    since: started,
                    tx,
                };
                let pool = state.pools.entry(key.clone()).or_default();
                if front {
                    pool.waiters.push_front(waiter);
                } else {
                    pool.waiters.push_back(waiter);
                }
                (rx, id)
            };
            // Wake at the reserve deadline once, to try the reserve pool.
            let reserve_at = (!reserve && settings.reserve_pool_size > 0)
                .then(|| tokio::time::Instant::from_std(started + settings.reserve_pool_timeout));
            let until = match (deadline, reserve_at) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            };
            let mut rx = rx;
            let outcome = match until {
                Some(until) => tokio::time::timeout_at(until, &mut rx).await.ok(),
                None => Some((&mut rx).await),
            };
            match outcome {
                Some(Ok(grant)) => {
                    let mut state = self.lock();
                    self.record_wait(&mut state, key, started);
                    drop(state);
                    return Ok(match grant {
                        Grant::Conn(conn) => Checkout::Idle(conn),
                        Grant::Open(slot) => Checkout::Open(slot),
                    });
                }
                // The sender was dropped without a grant: look again.
                Some(Err(_)) => continue,
                None => {
                    // Out of the queue, unless a grant raced in.
                    let removed = {
                        let mut state = self.lock();
                        let pool = state.pools.get_mut(key);
                        pool.map(|p| {
                            let before = p.waiters.len();
                            p.waiters.retain(|w| w.id != id);
                            before != p.waiters.len()
                        })
                        .unwrap_or(false)
                    };
                    if !removed {
                        if let Ok(grant) = rx.try_recv() {
                            return Ok(match grant {
                                Grant::Conn(conn) => Checkout::Idle(conn),
                                Grant::Open(slot) => Checkout::Open(slot),
                            });
                        }
                    }
                    let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                    if timed_out {
                        let size = self.lock().pools.get(key).map(|p| p.size).unwrap_or(0);
                        return Err(CheckoutError::Timeout {
                            pool: key.to_string(),
                            timeout: wait,
                            size,
                        });
                    }
                    // The reserve deadline: try again with the reserve, first in the queue.
                    reserve = true;
                    front = true;
                }
            }
        }
    }

    fn record_wait(&self, state: &mut State, key: &PoolKey, started: Instant) {
        if let Some(pool) = state.pools.get_mut(key) {
            Self::record_waited(pool, started.elapsed());
        }
    }

    fn record_waited(pool: &mut PoolState, waited: std::time::Duration) {
        let waited = waited.as_micros() as u64;
        pool.stats.wait_time_us += waited;
        pool.stats.max_wait_us = pool.stats.max_wait_us.max(waited);
    }

    /// A clean, idle connection goes back: to the first waiter, else to the idle list.
    pub(crate) fn checkin(self: &Arc<Self>, key: &PoolKey, conn: ServerConn) {
        self.checkin_reporting(key, conn, None);
    }

    /// `checkin`, with the client's report (its counters, and that it stops being active)
    /// applied under the same lock: one lock per transaction's end.
    pub(crate) fn checkin_reporting(
        self: &Arc<Self>,
        key: &PoolKey,
        mut conn: ServerConn,
        report: Option<Report>,
    ) {
        let s = self.settings();
        let mut keep = true;
        let now = Instant::now();
        if !s.server_lifetime.is_zero() && now.duration_since(conn.created) >= s.server_lifetime {
            tracing::debug!(pool = %key, conn = conn.id, "closing a server connection past server_lifetime");
            keep = false;
        } else if self.is_paused(&key.database) {
            tracing::debug!(pool = %key, conn = conn.id, "closing a server connection of a paused database");
            keep = false;
        }
        conn.idle_since = now;
        // A connection not kept is dropped after the lock is released (its slot takes it).
        let mut closing = None;
        {
            let mut state = self.lock();
            let Some(pool) = state.pools.get_mut(key) else {
                drop(state);
                return;
            };
            if let Some(report) = report {
                report.apply(pool);
            }
            if !keep {
                closing = Some(conn);
            } else if pool.open > pool.size + s.reserve_pool_size {
                // The pool shrank (a reload): this one is surplus.
                closing = Some(conn);
            } else {
                let mut conn = conn;
                loop {
                    let Some(waiter) = pool.waiters.pop_front() else {
                        pool.idle.push_back(conn);
                        break;
                    };
                    match waiter.tx.send(Grant::Conn(conn)) {
                        Ok(()) => break,
                        Err(Grant::Conn(back)) => conn = back,
                        Err(Grant::Open(_)) => break,
                    }
                }
            }
        }
        drop(closing);
    }

    /// Apply a client's report without giving a connection back.
    pub(crate) fn report(&self, key: &PoolKey, report: Report) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            report.apply(pool);
        }
    }

    /// Places to open for pools below `min_pool_size` (capped at their size), counted as
    /// opening at once so that the next call does not open them again. Only pools the
    /// router has logged in to before (it knows how) and whose database is not paused.
    pub(crate) fn below_minimum(self: &Arc<Self>) -> Vec<(PoolKey, Slot)> {
        let settings = self.settings();
        if settings.min_pool_size == 0 {
            return Vec::new();
        }
        let paused = self.paused.borrow().clone();
        let mut state = self.lock();
        let short: Vec<PoolKey> = state
            .pools
            .iter()
            .filter(|(key, pool)| {
                pool.server_params.is_some()
                    && !names(&paused, &key.database)
                    && pool.open < settings.min_pool_size.min(pool.size)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut places = Vec::new();
        for key in short {
            loop {
                let wanted = state
                    .pools
                    .get(&key)
                    .is_some_and(|p| p.open < settings.min_pool_size.min(p.size));
                if !wanted || !state.room(&settings, &key, false) {
                    break;
                }
                state.take(&key);
                places.push((key.clone(), self.slot(&key)));
            }
        }
        places
    }

    /// Count a finished transaction / query of a pool (for /stats).
    pub(crate) fn count(&self, key: &PoolKey, update: impl FnOnce(&mut PoolStats)) {
        if let Some(pool) = self.lock().pools.get_mut(key) {
            update(&mut pool.stats);
        }
    }

    /// Close idle connections past server_idle_timeout or server_lifetime (every second).
    pub(crate) fn sweep(&self) {
        let settings = self.settings();
        let mut closing = Vec::new();
        {
            let mut state = self.lock();
            for pool in state.pools.values_mut() {
                let idle = std::mem::take(&mut pool.idle);
                for conn in idle {
                    if Self::fresh(&settings, &conn, &|_| true) {
                        pool.idle.push_back(conn);
                    } else {
                        closing.push(conn);
                    }
                }
            }
        }
        if !closing.is_empty() {
            tracing::debug!(
                count = closing.len(),
                "closing idle server connections past server_idle_timeout/server_lifetime"
            );
        }
    }

    /// The idle server connections, for `/servers`.
    pub(crate) fn idle_servers(
        &self,
    ) -> Vec<(
        PoolKey,
        Arc<server::ServerView>,
        chrono::DateTime<chrono::Utc>,
    )> {
        let state = self.lock();
        let mut rows = Vec::new();
        for (key, pool) in &state.pools {
            for conn in &pool.idle {
                rows.push((key.clone(), conn.view(), conn.idle_since_wall()));
            }
        }
        rows
    }

    /// One row per pool for `/pools` (PgBouncer's SHOW POOLS columns).
    pub(crate) fn snapshot(&self) -> Vec<PoolRow> {
        let pool_mode = self.settings().pool_mode;
        let state = self.lock();
        let mut rows: Vec<PoolRow> = state
            .pools
            .iter()
            .map(|(key, p)| PoolRow {
                key: key.clone(),
                cl_active: p.active_clients,
                cl_waiting: p.waiters.len(),
                cl_idle: p.clients.saturating_sub(p.active_clients + p.waiters.len()),
                sv_active: p.open.saturating_sub(p.idle.len()),
                sv_idle: p.idle.len(),
                maxwait_us: p
                    .waiters
                    .iter()
                    .map(|w| w.since.elapsed().as_micros() as u64)
                    .max()
                    .unwrap_or(0),
                size: p.size,
                mode: p.mode.unwrap_or(pool_mode),
                stats: p.stats.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
    }
}

/// What a client tells its pool when it gives a connection back or leaves: its counters
/// since its last report, and whether it stops holding a server connection.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub stats: PoolStats,
    pub inactive: bool,
}

impl Report {
    fn apply(self, pool: &mut PoolState) {
        let (s, d) = (&mut pool.stats, self.stats);
        s.query_count += d.query_count;
        s.xact_count += d.xact_count;
        s.bytes_received += d.bytes_received;
        s.bytes_sent += d.bytes_sent;
        s.query_time_us += d.query_time_us;
        s.xact_time_us += d.xact_time_us;
        if self.inactive {
            pool.active_clients = pool.active_clients.saturating_sub(1);
        }
    }
}

/// A pool's state for the admin API.
#[derive(Debug, Clone)]
pub(crate) struct PoolRow {
    pub key: PoolKey,
    pub cl_active: usize,
    pub cl_waiting: usize,
    pub cl_idle: usize,
    pub sv_active: usize,
    pub sv_idle: usize,
    pub maxwait_us: u64,
    pub size: usize,
    pub mode: PoolMode,
    pub stats: PoolStats,
}
