//! The shared in-memory key-value store behind `MemoryDcs`: keys with etcd-like revisions,
//! leases that expire on tokio's clock (so tests can use `tokio::time::pause()`), one-compare
//! transactions, and a change counter for subscribers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One stored key, with the metadata etcd keeps.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// 0 when the key is not attached to a lease.
    pub lease: i64,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    kvs: BTreeMap<String, Entry>,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped (to the new revision) on every change, including lease expiry.
    events: Events,
}

/// Change notifications: a watch channel of its own for each subscriber, sent to in the
/// order they subscribed. (One channel shared by all would wake its receivers in a random
/// order; a simulation on one thread must wake them in a fixed one.)
#[derive(Debug)]
struct Events {
    senders: Mutex<Vec<watch::Sender<u64>>>,
    last: std::sync::atomic::AtomicU64,
}

impl Events {
    fn new(value: u64) -> Self {
        Events {
            senders: Mutex::new(Vec::new()),
            last: std::sync::atomic::AtomicU64::new(value),
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = watch::channel(self.last.load(std::sync::atomic::Ordering::SeqCst));
        senders.push(tx);
        rx
    }

    fn send_replace(&self, value: u64) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        self.last.store(value, std::sync::atomic::Ordering::SeqCst);
        senders.retain(|tx| !tx.is_closed());
        for tx in senders.iter() {
            tx.send_replace(value);
        }
    }
}

/// The condition of a one-compare transaction.
#[derive(Debug, Clone)]
pub(crate) enum Compare {
    Always,
    /// The key does not exist (etcd: create_revision == 0).
    Absent(String),
    /// The key's mod_revision equals this (0 = absent, as in etcd).
    ModRevision(String, i64),
    /// The key exists and holds exactly this value.
    Value(String, Vec<u8>),
}

/// What a transaction does when its compare holds.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete(String),
}

/// A put referred to a lease the store does not know (expired or never granted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseNotFound;

/// An in-memory DCS shared by many `MemoryDcs` handles (one per simulated member).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    revision: 1,
                    next_lease: 1000,
                    ..State::default()
                }),
                events: Events::new(1),
            }),
        }
    }
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.shared)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.events.subscribe()
    }

    /// Every entry whose key starts with `prefix`, and the store revision.
    pub(crate) fn range(&self, prefix: &str) -> (Vec<(String, Entry)>, i64) {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        let found = state
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (found, state.revision)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        state.kvs.get(key).cloned()
    }

    /// Grant a lease of `ttl` starting now; returns its id.
    pub(crate) fn grant(&self, ttl: Duration) -> i64 {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        state.next_lease += 1;
        let id = state.next_lease;
        let expires_at = Instant::now() + ttl;
        state.leases.insert(id, Lease { ttl, expires_at });
        drop(state);
        self.schedule_expiry(expires_at);
        id
    }

    /// Renew a lease to its full TTL; None when it expired or never existed.
    pub(crate) fn keepalive(&self, id: i64) -> Option<Duration> {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        let lease = state.leases.get_mut(&id)?;
        lease.expires_at = Instant::now() + lease.ttl;
        let (ttl, expires_at) = (lease.ttl, lease.expires_at);
        drop(state);
        self.schedule_expiry(expires_at);
        Some(ttl)
    }

    /// How long lease `id` still lives, in whole seconds as etcd reports it (rounded up).
    pub(crate) fn remaining(&self, id: i64) -> Option<Duration> {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        let left = state
            .leases
            .get(&id)?
            .expires_at
            .checked_duration_since(Instant::now())?;
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        (secs > 0).then(|| Duration::from_secs(secs))
    }

    /// Run `op` iff `compare` holds. Ok(true) iff the compare held.
    pub(crate) fn txn(&self, compare: Compare, op: Op) -> Result<bool, LeaseNotFound> {
        let mut state = self.lock();
        expire(&self.shared, &mut state);
        let holds = match &compare {
            Compare::Always => true,
            Compare::Absent(key) => !state.kvs.contains_key(key),
            Compare::ModRevision(key, rev) => {
                state.kvs.get(key).map_or(0, |e| e.mod_revision) == *rev
            }
            Compare::Value(key, value) => state.kvs.get(key).is_some_and(|e| &e.value == value),
        };
        if !holds {
            return Ok(false);
        }
        match op {
            Op::Put { key, value, lease } => {
                if lease != 0 && !state.leases.contains_key(&lease) {
                    return Err(LeaseNotFound);
                }
                state.revision += 1;
                let revision = state.revision;
                let create_revision = state.kvs.get(&key).map_or(revision, |e| e.create_revision);
                state.kvs.insert(
                    key,
                    Entry {
                        value,
                        create_revision,
                        mod_revision: revision,
                        lease,
                    },
                );
                self.shared.events.send_replace(revision as u64);
            }
            Op::Delete(key) => {
                if state.kvs.remove(&key).is_some() {
                    state.revision += 1;
                    self.shared.events.send_replace(state.revision as u64);
                }
            }
        }
        Ok(true)
    }

    /// Expire leases at `at` even when nobody touches the store then, so that subscribers
    /// see the keys vanish.
    fn schedule_expiry(&self, at: Instant) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = weak.upgrade() {
                    let mut state = lock_state(&shared);
                    expire(&shared, &mut state);
                }
            });
        }
    }
}

fn lock_state(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters to a test double; keep going with the data.
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drop every lease whose deadline passed, with its keys (one revision, like etcd's revoke).
fn expire(shared: &Shared, state: &mut State) {
    let now = Instant::now();
    let dead: Vec<i64> = state
        .leases
        .iter()
        .filter(|(_, l)| l.expires_at <= now)
        .map(|(id, _)| *id)
        .collect();
    if dead.is_empty() {
        return;
    }
    for id in &dead {
        state.leases.remove(id);
    }
    let before = state.kvs.len();
    state.kvs.retain(|_, e| !dead.contains(&e.lease));
    if state.kvs.len() != before {
        state.revision += 1;
        shared.events.send_replace(state.revision as u64);
    }
}
