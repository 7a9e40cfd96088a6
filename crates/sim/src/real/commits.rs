//! Client commits in the real-runtime simulation, and the promise of synchronous
//! replication: no acknowledged commit is lost (SAFETY.md).
//!
//! In synchronous mode, once the leader's `synchronous_standby_names` is in force, every
//! primary that accepts writes receives two client commits per tick, inside the WAL that tick
//! wrote. PostgreSQL acknowledges a commit when the standbys its `synchronous_standby_names`
//! makes it wait for have flushed it (`crate::syncrep::release_upto`, PostgreSQL's rules);
//! a server that stops or stops being a primary answers its waiting clients with an error.
//!
//! Every acknowledgement is promised: the agent's lease guard stops a primary whose agent
//! is stopped or dead before its lease can expire, so no acknowledged commit is excused
//! (not even one acknowledged by a primary whose agent was stopped). Checked:
//!
//! 6. A member that becomes a primary (promoted, or started as one) holds every acknowledged
//!    commit in its WAL history, and the leader's running primary holds them all the time.
//! 7. The `sync` key names only members that hold every acknowledged commit (with a quorum
//!    `q`: at least `q` of the named members hold each); a named member without a data
//!    directory cannot be promoted and breaks the promise only by counting against a quorum.
//! 8. Strict mode: no commit is acknowledged while `synchronous_standby_names` is empty.

use std::sync::Arc;

use pgbaton_core::{Lsn, Millis, SyncStandbyNames};

use super::pg::{Data, PgWorld};
use crate::report::ViolationKind;
use crate::syncrep::{release_upto, Conn};
use crate::Ack;

/// A commit a client sent: where its commit record ends, on which branch of which system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub id: u64,
    pub system_id: u64,
    /// The primary's timeline switches when it wrote the commit.
    pub history: Arc<[(u32, Lsn)]>,
    pub lsn: Lsn,
}

impl Commit {
    fn timeline(&self) -> u32 {
        self.history.len() as u32 + 1
    }

    /// `data` holds the WAL up to this commit on the commit's branch.
    pub fn held_by(&self, data: Option<&Data>) -> bool {
        let Some(d) = data else {
            return false;
        };
        if d.system_id != self.system_id
            || d.history.len() < self.history.len()
            || d.history[..self.history.len()] != self.history[..]
        {
            return false;
        }
        let end = d
            .history
            .get(self.history.len())
            .map_or(d.lsn, |&(_, switch)| switch);
        end >= self.lsn
    }
}

/// Synchronous mode as the members are configured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncTerms {
    pub enabled: bool,
    pub strict: bool,
}

/// Every acknowledgement, and what must survive.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub terms: SyncTerms,
    /// Clients write once the first leader's synchronous_standby_names is in force.
    pub clients_on: bool,
    next_id: u64,
    pub acks: Vec<Ack>,
    /// Per branch, the acknowledged commit furthest along it: data that holds these holds
    /// every acknowledged commit.
    frontiers: Vec<Commit>,
    /// Broken promises found while PostgreSQL acted (an acknowledgement, a promotion),
    /// for the driver to report.
    pub found: Vec<(ViolationKind, String)>,
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

    /// An acknowledged commit `data` does not hold.
    pub fn missing_on(&self, data: Option<&Data>) -> Option<&Commit> {
        self.frontiers.iter().find(|f| !f.held_by(data))
    }
}

impl PgWorld {
    /// The standbys connected to member `p`'s running primary, in member order: running
    /// replicas that stream from it this tick (`streaming`: they caught up once, PostgreSQL's
    /// `state = 'streaming'` rather than `catchup`).
    pub(crate) fn connections(&self, p: usize) -> Vec<Conn<'_>> {
        let name = self.members[p].name.as_str();
        self.members
            .iter()
            .enumerate()
            .filter(|&(r, _)| r != p)
            .filter_map(|(r, x)| {
                let run = x.run.as_ref()?;
                if run.primary || !run.streaming || run.upstream.as_deref() != Some(name) {
                    return None;
                }
                Some(Conn {
                    m: r,
                    name: x.name.as_str(),
                    streaming: run.caught_up,
                    flush: x.data.as_ref()?.lsn,
                })
            })
            .collect()
    }

    /// Primary `p` wrote the WAL from `from` to `to` in this tick: two client commits in it.
    pub(crate) fn take_commits(&mut self, p: usize, from: Lsn, to: Lsn) {
        if !self.ledger.clients_on || to <= from + 1 {
            return;
        }
        let Some(data) = self.members[p].data.as_ref() else {
            return;
        };
        let (system_id, history) = (data.system_id, Arc::<[(u32, Lsn)]>::from(&data.history[..]));
        for lsn in [from + (to - from) / 2, to] {
            self.ledger.next_id += 1;
            let commit = Commit {
                id: self.ledger.next_id,
                system_id,
                history: history.clone(),
                lsn,
            };
            self.members[p].pending.push(commit);
        }
    }

    /// Acknowledge what each primary's synchronous standbys have flushed.
    pub(crate) fn release_commits(&mut self, now: Millis) {
        for p in 0..self.members.len() {
            if !self.running_primary(p) {
                // Waiting clients get an error: never acknowledged.
                self.members[p].pending.clear();
                continue;
            }
            if self.members[p].pending.is_empty() {
                continue;
            }
            let ssn = self.members[p].run.as_ref().and_then(|r| r.ssn.clone());
            let upto = {
                let conns = self.connections(p);
                release_upto(ssn.as_ref(), &conns)
            };
            let Some(upto) = upto else {
                continue;
            };
            let n = self.members[p]
                .pending
                .iter()
                .take_while(|c| c.lsn <= upto)
                .count();
            let done: Vec<Commit> = self.members[p].pending.drain(..n).collect();
            for commit in &done {
                self.acknowledge(p, commit, ssn.as_ref(), now);
            }
        }
    }

    fn acknowledge(
        &mut self,
        p: usize,
        commit: &Commit,
        ssn: Option<&SyncStandbyNames>,
        now: Millis,
    ) {
        let name = self.members[p].name.clone();
        self.ledger.acks.push(Ack {
            id: commit.id,
            at: now,
            member: name.clone(),
            timeline: commit.timeline(),
            lsn: commit.lsn,
            promised: true,
        });
        if self.ledger.terms.strict && ssn.is_none() {
            let description = format!(
                "{name} acknowledged commit {} at {} on timeline {} with no synchronous standby (synchronous_standby_names is empty) in strict mode",
                commit.id,
                commit.lsn,
                commit.timeline(),
            );
            self.ledger
                .found
                .push((ViolationKind::StrictAckedAlone, description));
        }
        self.ledger.record(commit);
    }

    /// Invariant 6 when member `m` becomes a primary.
    pub(crate) fn check_new_primary(&mut self, m: usize, how: &str) {
        let data = self.members[m].data.as_ref();
        let Some(c) = self.ledger.missing_on(data) else {
            return;
        };
        let description = format!(
            "{} became a primary ({how}) without acknowledged commit {} at {} on timeline {} (its WAL: {:?})",
            self.members[m].name,
            c.id,
            c.lsn,
            c.timeline(),
            data.map(|d| (d.history.clone(), d.lsn)),
        );
        self.ledger
            .found
            .push((ViolationKind::AckedCommitLost, description));
    }

    /// Invariant 6 for the leader's running primary.
    pub(crate) fn leader_lacks(&self, leader: usize) -> Option<String> {
        if !self.running_primary(leader) {
            return None;
        }
        let data = self.members[leader].data.as_ref();
        let c = self.ledger.missing_on(data)?;
        Some(format!(
            "the leader {} runs a primary without acknowledged commit {} at {} on timeline {}",
            self.members[leader].name,
            c.id,
            c.lsn,
            c.timeline(),
        ))
    }

    /// Invariant 7: why a `sync` key naming `members` (quorum `quorum`) is wrong, if it is.
    pub(crate) fn sync_key_problem(
        &self,
        members: &[String],
        quorum: Option<u32>,
    ) -> Option<String> {
        if members.is_empty() {
            return None;
        }
        let need = quorum.map_or(members.len(), |q| q as usize);
        let data_of = |n: &String| self.index_of(n).and_then(|i| self.members[i].data.as_ref());
        for f in &self.ledger.frontiers {
            let lacking: Vec<&String> = members.iter().filter(|n| !f.held_by(data_of(n))).collect();
            let promotable = lacking.iter().any(|n| data_of(n).is_some());
            if promotable && members.len() - lacking.len() < need {
                let lacking: Vec<&str> = lacking.iter().map(|n| n.as_str()).collect();
                return Some(format!(
                    "the sync key (members {members:?}, quorum {quorum:?}) names {} which lack acknowledged commit {} at {} on timeline {} ({need} of the named must hold it)",
                    lacking.join(", "),
                    f.id,
                    f.lsn,
                    f.timeline(),
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbaton_postgres::DbState;

    fn data(history: &[(u32, Lsn)], lsn: Lsn) -> Data {
        Data {
            system_id: 1,
            timeline: history.len() as u32 + 1,
            lsn,
            history: history.to_vec(),
            history_files: Default::default(),
            state: DbState::InProduction,
            min_recovery: 0,
            oldest: 0,
            control_timeline: 1,
            restartpoint_at: 0,
        }
    }

    fn commit(history: &[(u32, Lsn)], lsn: Lsn) -> Commit {
        Commit {
            id: 1,
            system_id: 1,
            history: Arc::from(history),
            lsn,
        }
    }

    #[test]
    fn a_commit_is_held_on_its_branch_up_to_where_that_branch_ends() {
        let c = commit(&[], 100);
        assert!(c.held_by(Some(&data(&[], 100))));
        assert!(!c.held_by(Some(&data(&[], 99))));
        // Promoted after the commit: timeline 1 ended past it.
        assert!(c.held_by(Some(&data(&[(1, 150)], 120))));
        // Promoted before the commit reached it.
        assert!(!c.held_by(Some(&data(&[(1, 90)], 200))));
        assert!(!c.held_by(None));
        // A commit on timeline 2 is not on another timeline-2 branch.
        let c2 = commit(&[(1, 150)], 300);
        assert!(!c2.held_by(Some(&data(&[(1, 140)], 400))));
    }

    #[test]
    fn the_ledger_keeps_the_furthest_commit_per_branch() {
        let mut ledger = Ledger::default();
        ledger.record(&commit(&[], 100));
        ledger.record(&commit(&[], 50));
        ledger.record(&commit(&[(1, 150)], 200));
        assert_eq!(ledger.frontiers.len(), 2);
        assert!(ledger.missing_on(Some(&data(&[(1, 150)], 200))).is_none());
        assert_eq!(
            ledger.missing_on(Some(&data(&[], 120))).map(|c| c.lsn),
            Some(200)
        );
    }
}
