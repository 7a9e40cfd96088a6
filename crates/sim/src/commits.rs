//! Client commits and the promise of synchronous replication: no acknowledged commit is lost.
//!
//! In synchronous mode, once the cluster is up, every writable primary receives two client
//! commits per tick (inside the WAL that tick wrote). A commit is acknowledged when
//! `syncrep::release_upto` lets it go under the `synchronous_standby_names` in force on that
//! primary, and every acknowledgement is recorded. The promises, checked after every event:
//!
//! 6. A member that becomes a primary holds every acknowledged commit in its WAL history, and
//!    the leader's running primary holds them all the time.
//! 7. The `sync` key names only members that hold every acknowledged commit (a quorum key
//!    with `q`: at least `q` of the named members hold each), when it is written and after.
//!    A named member without a data directory cannot be promoted: it breaks the promise
//!    only by counting against a quorum.
//! 8. Strict mode: no commit is acknowledged without a synchronous standby.
//!
//! Commits acknowledged by a primary whose agent is not in control (dead, stopped, or not
//! back in control since: the honest scope of invariant 2, closed only by a watchdog) are
//! recorded but not promised.

use std::rc::Rc;

use pgbaton_core::{Lsn, Millis};

use crate::postgres::DataDir;
use crate::report::ViolationKind;
use crate::syncrep::release_upto;
use crate::world::World;

/// A commit a client sent: where its commit record ends, on which branch of which cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub id: u64,
    pub system_id: u64,
    /// The primary's timeline switches when it wrote the commit.
    pub history: Rc<[(u32, Lsn)]>,
    pub lsn: Lsn,
}

impl Commit {
    fn held_by(&self, data: Option<&DataDir>) -> bool {
        data.is_some_and(|d| d.holds(self.system_id, &self.history, self.lsn))
    }

    fn timeline(&self) -> u32 {
        self.history.len() as u32 + 1
    }
}

/// An acknowledged commit, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: u64,
    pub at: Millis,
    /// The primary that acknowledged it.
    pub member: String,
    pub timeline: u32,
    pub lsn: Lsn,
    /// False when that primary's agent was not in control: recorded, not promised.
    pub promised: bool,
}

/// Every acknowledgement, and what must survive.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Clients write once the cluster is up (a leader with its replication settings in force).
    pub clients_on: bool,
    next_id: u64,
    pub acks: Vec<Ack>,
    /// Per branch, the promised commit furthest along it: a directory that holds these
    /// holds every promised commit.
    frontiers: Vec<Commit>,
}

impl Ledger {
    fn record(&mut self, c: &Commit) {
        let same_branch = self
            .frontiers
            .iter_mut()
            .find(|f| f.system_id == c.system_id && f.history == c.history);
        match same_branch {
            Some(f) if f.lsn >= c.lsn => {}
            Some(f) => *f = c.clone(),
            None => self.frontiers.push(c.clone()),
        }
    }

    /// A promised commit `data` does not hold.
    fn missing_on(&self, data: Option<&DataDir>) -> Option<&Commit> {
        self.frontiers.iter().find(|f| !f.held_by(data))
    }
}

impl World {
    fn sync_enabled(&self, m: usize) -> bool {
        self.members[m].cfg.synchronous.enabled()
    }

    /// Primary `m` wrote the WAL from `from` to `to` in this tick: two client commits in it.
    pub(crate) fn take_commits(&mut self, m: usize, from: Lsn, to: Lsn) {
        if !self.ledger.clients_on || !self.sync_enabled(m) || to <= from + 1 {
            return;
        }
        let Some(data) = self.members[m].pg.data.as_ref() else {
            return;
        };
        let (system_id, history) = (data.system_id, Rc::<[(u32, Lsn)]>::from(&data.history[..]));
        for lsn in [from + (to - from) / 2, to] {
            self.ledger.next_id += 1;
            let commit = Commit {
                id: self.ledger.next_id,
                system_id,
                history: history.clone(),
                lsn,
            };
            self.members[m].pending.push(commit);
        }
    }

    /// Acknowledge what each primary's synchronous standbys have flushed; a PostgreSQL that
    /// no longer runs as a primary answers its waiting clients with an error (never acked).
    pub(crate) fn release_commits(&mut self) {
        for p in 0..self.members.len() {
            if !self.members[p].pg.is_running_primary() {
                self.members[p].pending.clear();
                continue;
            }
            if self.members[p].pending.is_empty() {
                continue;
            }
            let conns = self.connections(p);
            let Some(upto) = release_upto(self.members[p].pg.ssn.as_ref(), &conns) else {
                continue;
            };
            // Pending commits are in WAL order: release a prefix.
            let pending = &mut self.members[p].pending;
            let n = pending.iter().take_while(|c| c.lsn <= upto).count();
            let done: Vec<Commit> = pending.drain(..n).collect();
            for commit in &done {
                self.acknowledge(p, commit);
                if !self.violations.is_empty() {
                    return;
                }
            }
            if let Some(why) = self.sync_key_problem() {
                let name = &self.members[p].name;
                let description = match done.last() {
                    Some(c) => format!(
                        "after {name} acknowledged commits up to {} at {} on timeline {}: {why}",
                        c.id,
                        c.lsn,
                        c.timeline()
                    ),
                    None => why,
                };
                if self.sync_key_wrong(description) {
                    return;
                }
            }
        }
    }

    /// Invariant 7 broke: a violation, or (with `check_sync_key` off) only the first breach
    /// noted while the run goes on to see whether a commit is really lost. True when the
    /// run stops.
    pub(crate) fn sync_key_wrong(&mut self, description: String) -> bool {
        if self.check_sync_key {
            self.violate(ViolationKind::SyncKeyWrong, description);
            return true;
        }
        if self.sync_key_breach.is_none() {
            self.log_global(format!("sync key wrong (run goes on): {description}"));
            self.sync_key_breach = Some(crate::Violation {
                kind: ViolationKind::SyncKeyWrong,
                at: self.now,
                seed: self.seed,
                description,
            });
        }
        false
    }

    fn acknowledge(&mut self, p: usize, commit: &Commit) {
        let member = &self.members[p];
        let promised = member.agent.running() && !member.tainted;
        let strict = member.cfg.synchronous.strict;
        let alone = member.pg.ssn.is_none();
        let name = member.name.clone();
        self.ledger.acks.push(Ack {
            id: commit.id,
            at: self.now,
            member: name.clone(),
            timeline: commit.timeline(),
            lsn: commit.lsn,
            promised,
        });
        if strict && alone {
            let description = format!(
                "{name} acknowledged commit {} at {} on timeline {} with no synchronous standby (synchronous_standby_names is empty) in strict mode; {}",
                commit.id,
                commit.lsn,
                commit.timeline(),
                self.describe_members()
            );
            self.violate(ViolationKind::StrictAckedAlone, description);
            return;
        }
        if promised {
            self.ledger.record(commit);
        }
    }

    /// Invariant 7: why the `sync` key names members that do not hold every commit.
    pub(crate) fn sync_key_problem(&self) -> Option<String> {
        let key = self.dcs.sync.as_ref()?;
        if key.members.is_empty() {
            return None;
        }
        let need = key.quorum.map_or(key.members.len(), |q| q as usize);
        let data_of = |n: &String| {
            self.index_of(n)
                .and_then(|i| self.members[i].pg.data.as_ref())
        };
        for f in &self.ledger.frontiers {
            let lacking: Vec<&String> = key
                .members
                .iter()
                .filter(|n| !f.held_by(data_of(n)))
                .collect();
            // A named member without a data directory cannot be promoted (it still answers,
            // so it counts against a quorum): the key is wrong when too few hold the commit
            // and a member that lacks it could be promoted.
            let promotable = lacking.iter().any(|n| data_of(n).is_some());
            if promotable && key.members.len() - lacking.len() < need {
                let lacking: Vec<&str> = lacking.iter().map(|n| n.as_str()).collect();
                return Some(format!(
                    "the sync key (leader {:?}, members {:?}, quorum {:?}) names {} which lack acknowledged commit {} at {} on timeline {} ({} of the named must hold it); {}",
                    key.leader,
                    key.members,
                    key.quorum,
                    lacking.join(", "),
                    f.id,
                    f.lsn,
                    f.timeline(),
                    need,
                    self.describe_members()
                ));
            }
        }
        None
    }

    /// Invariant 6 at a promotion: member `m` just became a primary.
    pub(crate) fn check_new_primary(&mut self, m: usize) {
        let data = self.members[m].pg.data.as_ref();
        let Some(c) = self.ledger.missing_on(data) else {
            return;
        };
        let description = format!(
            "{} became a primary without acknowledged commit {} at {} on timeline {} (its WAL: {:?}); {}",
            self.members[m].name,
            c.id,
            c.lsn,
            c.timeline(),
            data.map(|d| (d.history.clone(), d.lsn)),
            self.describe_members()
        );
        self.violate(ViolationKind::AckedCommitLost, description);
    }

    /// Invariants 6 (the leader's primary) and 7, after every event.
    pub(crate) fn check_commits(&mut self) {
        let leader = self
            .dcs
            .leader
            .as_ref()
            .and_then(|k| self.index_of(&k.name))
            .filter(|l| self.members[*l].pg.is_running_primary());
        if let Some(l) = leader {
            if let Some(c) = self.ledger.missing_on(self.members[l].pg.data.as_ref()) {
                let description = format!(
                    "the leader {} runs a primary without acknowledged commit {} at {} on timeline {}; {}",
                    self.members[l].name,
                    c.id,
                    c.lsn,
                    c.timeline(),
                    self.describe_members()
                );
                self.violate(ViolationKind::AckedCommitLost, description);
                return;
            }
        }
        if self.sync_key_breach.is_some() && !self.check_sync_key {
            return;
        }
        if let Some(why) = self.sync_key_problem() {
            self.sync_key_wrong(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(history: &[(u32, Lsn)], lsn: Lsn) -> Commit {
        Commit {
            id: lsn,
            system_id: 1,
            history: history.into(),
            lsn,
        }
    }

    fn dir(history: &[(u32, Lsn)], lsn: Lsn) -> DataDir {
        DataDir {
            system_id: 1,
            history: history.to_vec(),
            lsn,
            was_primary: false,
            checkpoint_timeline: history.len() as u32 + 1,
        }
    }

    #[test]
    fn the_ledger_keeps_the_furthest_commit_per_branch() {
        let mut ledger = Ledger::default();
        ledger.record(&commit(&[], 500));
        ledger.record(&commit(&[], 400));
        ledger.record(&commit(&[(1, 600)], 700));
        assert_eq!(ledger.frontiers.len(), 2);
        assert!(ledger.missing_on(Some(&dir(&[(1, 600)], 700))).is_none());
        assert_eq!(
            ledger
                .missing_on(Some(&dir(&[(1, 600)], 650)))
                .map(|c| c.lsn),
            Some(700)
        );
        // Timeline 1 left at 450: commit 500 on it is not in this history.
        assert_eq!(
            ledger
                .missing_on(Some(&dir(&[(1, 450)], 900)))
                .map(|c| c.lsn),
            Some(500)
        );
        assert!(ledger.missing_on(None).is_some());
    }
}
