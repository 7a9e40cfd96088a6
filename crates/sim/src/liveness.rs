//! Promise 4 (SAFETY.md): the cluster does not stay leaderless when a healthy candidate
//! exists — no window longer than `ttl + loop_wait + 2 s`, at any moment of the run
//! (including seconds after a switchover or failover, before any restartpoint), not only
//! once the faults are over. Checked after every event.
//!
//! *Leader*: a member that holds the leader key and runs a writable primary (or, in failsafe
//! mode, runs a primary under a failsafe right its members granted). The window opens when
//! the cluster loses its leader and closes when it has one again; it is measured only after
//! the first leader (bootstrap is not a window).
//!
//! *Healthy candidate*: a member whose agent runs (alive, not stopped), whose PostgreSQL runs
//! as a replica or can start as one (a data directory, no clone, rewind or initdb under
//! way), that reaches etcd in time (etcd up, no partition, no message-delay fault), is not
//! tagged nofailover, and whose data is on the cluster's history: it did not diverge from the
//! data directory of the last leader as it was when the window opened (a prefix of it, or
//! merely behind). Excluded by design, because the core must make such a member wait:
//! - synchronous mode: a member the `sync` key does not name (unless it wrote the key as
//!   leader), and in quorum mode a named member while fewer than `n - q + 1` of the named
//!   members (itself included) answer it;
//! - failsafe mode: a member bound by its promise to a failsafe leader, or outside the
//!   `failsafe` key's topology;
//! - while a switchover holds the election (a `failover` key not scheduled for later, less
//!   than 2 × ttl since the member's agent first read the key free): its former leader, and
//!   with a named candidate every other member (they stand aside for it).
//!
//! *Clock*: the time during which the cluster has no leader and a healthy candidate exists,
//! without interruption, and without the leader key changing hands (a member that takes the
//! key — or a restarted agent that adopts the lease it held — and then fails again before
//! it runs a primary costs another ttl: a second failure, each bounded on its own). Bound `ttl + loop_wait + 2 s` when a healthy candidate within
//! `maximum_lag_on_failover` of the last leader's position exists (the core races at once;
//! the time is the lease expiry, a loop and a promotion); `+ ttl` more when every healthy
//! candidate lags (the documented rule 6 of `election.rs` makes it wait a ttl of
//! leaderlessness first). In synchronous mode a named member counts as within the bound
//! (rule 5: lag does not disqualify it).

use std::fmt::Write;

use pgbaton_core::{JobKind, Millis};

use crate::net::NORMAL_DELAY_MS;
use crate::postgres::{DataDir, Process};
use crate::report::{LeaderlessWindow, ViolationKind};
use crate::world::World;

/// What the check remembers between two events.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// The member that led last.
    last_leader: Option<usize>,
    /// The window being measured.
    window: Option<Window>,
    /// Since when the leader key has been free (for the switchover's terms).
    key_free_since: Option<Millis>,
    /// `World::leader_changes + leader_adoptions` at the previous check.
    takings_seen: u32,
}

#[derive(Debug)]
struct Window {
    start: Millis,
    /// The last leader's data directory when the window opened: the cluster's history.
    reference: Option<DataDir>,
    last_leader: String,
    /// Since when a healthy candidate within the lag bound has existed.
    fresh_since: Option<Millis>,
    /// Since when a healthy candidate has existed.
    any_since: Option<Millis>,
    candidate_ms: Millis,
    lagging_candidate_ms: Millis,
    reported: bool,
}

/// Whether a member is a healthy candidate now.
enum Health {
    /// Within `maximum_lag_on_failover` of the last leader (or named in synchronous mode).
    Fresh,
    /// Healthy, but lagging: the core waits a ttl of leaderlessness first.
    Lagging(u64),
    Not(String),
}

impl World {
    /// ttl + loop_wait + 2 s.
    pub(crate) fn leaderless_bound_ms(&self) -> Millis {
        let cfg = &self.members[0].cfg;
        cfg.ttl_ms + cfg.loop_wait_ms + 2_000
    }

    /// The member that leads now, if one does.
    fn leading_member(&self) -> Option<usize> {
        let now = self.now;
        let holder = self
            .dcs
            .leader
            .as_ref()
            .and_then(|k| self.index_of(&k.name))
            .filter(|l| self.members[*l].pg.is_running_primary());
        holder.or_else(|| {
            self.members.iter().position(|x| {
                x.pg.is_running_primary() && x.agent.failsafe_valid_until.is_some_and(|u| u > now)
            })
        })
    }

    /// Called after every event (once the safety checks passed).
    pub(crate) fn check_leaderless(&mut self) {
        let now = self.now;
        // A member took the leader key, or a restarted agent adopted the lease it held.
        let takings = self.leader_changes + self.leader_adoptions;
        let key_taken = takings != self.leaderless.takings_seen;
        self.leaderless.takings_seen = takings;
        if self.dcs.leader.is_some() {
            self.leaderless.key_free_since = None;
        } else {
            self.leaderless.key_free_since.get_or_insert(now);
        }
        if let Some(l) = self.leading_member() {
            self.leaderless.last_leader = Some(l);
            self.close_leaderless_window(true);
            return;
        }
        let Some(last) = self.leaderless.last_leader else {
            return;
        };
        if self.leaderless.window.is_none() {
            self.leaderless.window = Some(Window {
                start: now,
                reference: self.members[last].pg.data.clone(),
                last_leader: self.members[last].name.clone(),
                fresh_since: None,
                any_since: None,
                candidate_ms: 0,
                lagging_candidate_ms: 0,
                reported: false,
            });
        }
        let mut health: Vec<Health> = (0..self.members.len())
            .map(|i| self.candidate_health(i))
            .collect();
        self.hold_back(&mut health);
        let fresh = health.iter().any(|h| matches!(h, Health::Fresh));
        let any = fresh || health.iter().any(|h| matches!(h, Health::Lagging(_)));
        let bound = self.leaderless_bound_ms();
        let ttl = self.members[0].cfg.ttl_ms;
        let check = self.check_leaderless;
        let Some(w) = self.leaderless.window.as_mut() else {
            return;
        };
        let restart = |since: Option<Millis>, exists: bool| match since {
            _ if !exists => None,
            Some(s) if !key_taken => Some(s),
            _ => Some(now),
        };
        w.fresh_since = restart(w.fresh_since, fresh);
        w.any_since = restart(w.any_since, any);
        let fresh_ms = w.fresh_since.map_or(0, |s| now - s);
        let any_ms = w.any_since.map_or(0, |s| now - s);
        w.candidate_ms = w.candidate_ms.max(fresh_ms);
        w.lagging_candidate_ms = w.lagging_candidate_ms.max(any_ms);
        let too_long = fresh_ms > bound || any_ms > bound + ttl;
        if !too_long || w.reported || !check {
            return;
        }
        w.reported = true;
        let (start, last_leader) = (w.start, w.last_leader.clone());
        let description = format!(
            "no leader since {} ms (last leader {}), for {} ms; a healthy candidate {} for {} ms (bound {} ms{}); {}",
            start,
            last_leader,
            now - start,
            if fresh_ms > bound {
                "within maximum_lag_on_failover"
            } else {
                "(lagging)"
            },
            if fresh_ms > bound { fresh_ms } else { any_ms },
            if fresh_ms > bound { bound } else { bound + ttl },
            if fresh_ms > bound {
                ""
            } else {
                ", + ttl for lagging candidates"
            },
            self.describe_candidates(&health)
        );
        self.violate(ViolationKind::Leaderless, description);
    }

    /// The window (if any) ends: record it when a healthy candidate waited in it.
    pub(crate) fn close_leaderless_window(&mut self, ended: bool) {
        let Some(mut w) = self.leaderless.window.take() else {
            return;
        };
        let now = self.now;
        w.candidate_ms = w.candidate_ms.max(w.fresh_since.map_or(0, |s| now - s));
        w.lagging_candidate_ms = w
            .lagging_candidate_ms
            .max(w.any_since.map_or(0, |s| now - s));
        if w.lagging_candidate_ms == 0 {
            return;
        }
        self.leaderless_windows.push(LeaderlessWindow {
            start: w.start,
            length: now - w.start,
            candidate_ms: w.candidate_ms,
            lagging_candidate_ms: w.lagging_candidate_ms,
            ended,
        });
    }

    fn candidate_health(&self, i: usize) -> Health {
        let now = self.now;
        let x = &self.members[i];
        let cfg = &x.cfg;
        let not = |why: &str| Health::Not(why.to_string());
        if !x.agent.running() {
            return not("agent not running");
        }
        if cfg.nofailover {
            return not("tagged nofailover");
        }
        if !self.dcs.up() {
            return not("etcd down");
        }
        if !self.net.reaches_dcs(i) {
            return not("partitioned from etcd");
        }
        if self.net.max_delay(i) > NORMAL_DELAY_MS {
            return not("its DCS messages are delayed");
        }
        let Some(data) = &x.pg.data else {
            return not("no data directory");
        };
        if x.pg.process == (Process::Running { primary: true }) {
            return not("runs a primary without the leader key");
        }
        if let Some(job) = x.job.as_ref().filter(|j| {
            matches!(
                j.kind,
                JobKind::Clone | JobKind::Rewind | JobKind::Bootstrap
            )
        }) {
            return Health::Not(format!("busy with {:?}", job.kind));
        }
        let reference = self
            .leaderless
            .window
            .as_ref()
            .and_then(|w| w.reference.as_ref());
        if let Some(r) = reference {
            if data.system_id != r.system_id || data.diverged_from(r) {
                return not("diverged from the last leader's history");
            }
        }
        if x.agent.failsafe_promised_until.is_some_and(|u| u > now) {
            return not("promised a failsafe leader not to race");
        }
        if cfg.failsafe_mode
            && self
                .dcs
                .failsafe
                .as_ref()
                .is_some_and(|k| !k.contains(&x.name))
        {
            return not("outside the failsafe topology");
        }
        let sync = cfg.synchronous.enabled();
        if sync {
            if let Err(why) = self.may_promote_synchronous(i) {
                return Health::Not(why);
            }
        }
        if let Some(req) = &self.dcs.failover {
            let later = req
                .scheduled_at_unix_ms
                .is_some_and(|at| at > self.unix_now_ms());
            if !later && self.under_switchover_terms(i) {
                if req.leader.as_deref() == Some(x.name.as_str())
                    && req.candidate.as_deref() != Some(x.name.as_str())
                {
                    return not("the former leader of a switchover stands aside");
                }
                if let Some(c) = req.candidate.as_deref().filter(|c| *c != x.name) {
                    return Health::Not(format!("stands aside for the switchover candidate {c}"));
                }
            }
        }
        let lag = reference.map_or(0, |r| r.lsn.saturating_sub(data.lsn));
        if sync || lag <= cfg.maximum_lag_on_failover {
            Health::Fresh
        } else {
            Health::Lagging(lag)
        }
    }

    /// Synchronous mode: only the members the `sync` key names hold every acknowledged
    /// commit (and the leader that wrote it); in quorum mode a named member also needs enough
    /// of the named members to answer (itself included, `n - q + 1`) to be sure it is not
    /// behind an acknowledged commit. By design, else: the cluster waits.
    fn may_promote_synchronous(&self, i: usize) -> Result<(), String> {
        let x = &self.members[i];
        let Some(key) = &self.dcs.sync else {
            return Err("synchronous mode and no sync key".into());
        };
        if key.leader.as_deref() == Some(x.name.as_str()) {
            return Ok(());
        }
        if !key.members.contains(&x.name) {
            return Err("not named by the sync key".into());
        }
        let Some(q) = key.quorum else {
            return Ok(());
        };
        let needed = key.members.len().saturating_sub(q as usize) + 1;
        let answering = 1 + key
            .members
            .iter()
            .filter_map(|n| self.index_of(n))
            .filter(|p| *p != i && self.answers_peer(i, *p) && self.members[*p].pg.is_running())
            .count();
        if answering < needed {
            return Err(format!(
                "quorum: {answering} of the {} named members answer, {needed} needed",
                key.members.len()
            ));
        }
        Ok(())
    }

    /// Member `p`'s REST API answers member `c`'s agent: `p`'s agent runs, they are linked,
    /// and `c` finds `p` in the DCS (its member document).
    fn answers_peer(&self, c: usize, p: usize) -> bool {
        let x = &self.members[p];
        x.agent.running() && self.net.linked(c, p) && self.dcs.members.contains_key(&x.name)
    }

    /// A healthy candidate that a more advanced member (or one as advanced with a higher
    /// `failover_priority`) holds back, while that member cannot race itself, waits by design
    /// (election rule 3: promoting it would lose the other's WAL): not a healthy candidate
    /// either. Counted only as the core counts a peer: its agent answers (running, linked,
    /// listed in the DCS), its PostgreSQL runs as a replica, it is not tagged nofailover nor
    /// set aside by the synchronous, failsafe or switchover rules; and its data is on the
    /// cluster's history.
    fn hold_back(&self, health: &mut [Health]) {
        let reference = self
            .leaderless
            .window
            .as_ref()
            .and_then(|w| w.reference.as_ref());
        let blocked: Vec<Option<String>> = (0..self.members.len())
            .map(|c| {
                if matches!(health[c], Health::Not(_)) {
                    return None;
                }
                let mine = self.members[c].pg.data.as_ref()?;
                let my_priority = self.members[c].cfg.failover_priority;
                (0..self.members.len()).find_map(|p| {
                    let Health::Not(why) = &health[p] else {
                        return None;
                    };
                    let x = &self.members[p];
                    let theirs = x.pg.data.as_ref()?;
                    let ahead = (theirs.timeline(), theirs.lsn) > (mine.timeline(), mine.lsn)
                        || ((theirs.timeline(), theirs.lsn) == (mine.timeline(), mine.lsn)
                            && x.cfg.failover_priority > my_priority);
                    let competes = p != c
                        && ahead
                        && self.answers_peer(c, p)
                        && x.pg.is_running_replica()
                        && reference.is_none_or(|r| !theirs.diverged_from(r))
                        && !self.set_aside(p);
                    competes.then(|| format!("held back by {}, which cannot race: {why}", x.name))
                })
            })
            .collect();
        for (h, b) in health.iter_mut().zip(blocked) {
            if let Some(why) = b {
                *h = Health::Not(why);
            }
        }
    }

    /// The core does not count this member as a competitor: tagged nofailover, outside the
    /// synchronous or failsafe rules, or the former leader under a switchover's terms.
    fn set_aside(&self, i: usize) -> bool {
        let x = &self.members[i];
        let cfg = &x.cfg;
        if cfg.nofailover {
            return true;
        }
        if cfg.synchronous.enabled()
            && !self
                .dcs
                .sync
                .as_ref()
                .is_some_and(|k| k.members.contains(&x.name))
        {
            // Only the named members compete.
            return true;
        }
        if cfg.failsafe_mode
            && self
                .dcs
                .failsafe
                .as_ref()
                .is_some_and(|k| !k.contains(&x.name))
        {
            return true;
        }
        self.dcs.failover.as_ref().is_some_and(|req| {
            req.leader.as_deref() == Some(x.name.as_str())
                && req.candidate.as_deref() != Some(x.name.as_str())
                && self.under_switchover_terms(i)
        })
    }

    /// A switchover holds the election to its terms for 2 × ttl, which each agent counts from
    /// when its own DCS reads first showed the key free (a restarted agent: from then on).
    fn under_switchover_terms(&self, i: usize) -> bool {
        let x = &self.members[i];
        let seen_for = x.agent.saw_leaderless_since.map_or(0, |s| self.now - s);
        seen_for < 2 * x.cfg.ttl_ms
    }

    /// Every member: what it reports, where its data is, whether it is a healthy candidate,
    /// and the reason of its agent's last decision.
    fn describe_candidates(&self, health: &[Health]) -> String {
        let mut out = format!(
            "leader key {:?}, history key {:?}, failover key {:?}",
            self.dcs.leader.as_ref().map(|k| &k.name),
            self.dcs.history,
            self.dcs.failover
        );
        for (x, h) in self.members.iter().zip(health) {
            let reported = match x.pg.observe(self.timeline_model) {
                pgbaton_core::LocalPg::Running(r) => {
                    format!("timeline {} lsn {}", r.timeline, r.lsn)
                }
                pgbaton_core::LocalPg::Stopped { timeline, lsn, .. } => {
                    format!("stopped, timeline {timeline} lsn {lsn}")
                }
                other => format!("{other:?}"),
            };
            let data = x.pg.data.as_ref().map(|d| {
                format!(
                    "data timeline {} (history {:?}, pg_control {}) lsn {}",
                    d.timeline(),
                    d.history,
                    d.checkpoint_timeline,
                    d.lsn
                )
            });
            let health = match h {
                Health::Fresh => "HEALTHY CANDIDATE".to_string(),
                Health::Lagging(lag) => format!("HEALTHY CANDIDATE lagging {lag} bytes"),
                Health::Not(why) => format!("not a candidate: {why}"),
            };
            let _ = write!(
                out,
                "; {}: {health}; reports {reported}; {}; pg {:?} streaming {}; last decision: {}",
                x.name,
                data.unwrap_or_else(|| "no data".into()),
                x.pg.process,
                x.pg.streaming,
                x.agent.last_reason.as_deref().unwrap_or("none"),
            );
        }
        out
    }
}
