//! Liveness: windows without a leader, and which part of them the cluster is to blame for.
//!
//! A **leaderless window** is a stretch of the run during which no member both holds the
//! leader key (the DCS watcher's samples) and answers `pg_is_in_recovery() = false` (the
//! monitor's answers). When etcd could not be read from the client host, any writable
//! member counts as a leader (the benefit of the doubt).
//!
//! A window is **charged** only while a *healthy candidate* exists: a member
//! - on which no fault acts (killed, paused, partitioned, cut from etcd, on an impaired path —
//!   the fault timeline says which members each fault touches, from injection to heal),
//! - whose member key says `state: running` with a replica role and no `nofailover` (or
//!   `failover_priority: 0`) — so an agent that is down, restarting, rewinding or not yet
//!   registered after a heal is not a candidate,
//! - in synchronous mode: named in the `sync` key as a synchronous standby, or the leader that
//!   wrote the key (only those may be promoted automatically, by design);
//!   in asynchronous mode: whose published WAL position is within `maximum_lag_on_failover`
//!   of the freshest position known (the leader's last published one, or any member's),
//!
//! and etcd has a quorum (no etcd fault leaves fewer than a majority reachable, and
//! `etcd_grace_s` has passed since one did). Each window is evaluated on a 50 ms grid; its
//! charge is the longest unbroken stretch inside it during which a healthy candidate
//! existed. The run's `leaderless_s` is the longest charge; above the bound
//! (`ttl + loop_wait + 2 s`) the run fails. Pure: no I/O.

use std::collections::BTreeSet;

use crate::cli::Mode;
use crate::dcs_watch::{DcsSample, DcsView};
use crate::fault_kind::FaultKind;
use crate::monitor::Answer;

/// Grid step of the evaluation.
pub const STEP_S: f64 = 0.05;
/// A DCS view older than this says nothing (the watcher reads every 0.2 s).
pub const DCS_STALE_S: f64 = 1.5;
/// A monitor answer older than this says nothing (it asks every 0.1 s, 0.4 s bound).
pub const ANSWER_STALE_S: f64 = 1.0;

/// The bound of promise 4: no charged window longer than this.
pub fn bound(ttl: f64, loop_wait: f64) -> f64 {
    ttl + loop_wait + 2.0
}

/// One fault (or one step of a composite fault) on the run clock.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpan {
    pub kind: FaultKind,
    pub what: String,
    pub start: f64,
    /// When it was healed (the end of the run when it never was).
    pub end: f64,
    /// Members that cannot be healthy candidates meanwhile.
    pub members: Vec<usize>,
    /// etcd members unavailable meanwhile (killed, or cut from the other etcd members).
    pub etcd_down: Vec<usize>,
}

impl FaultSpan {
    fn active(&self, t: f64) -> bool {
        self.start <= t && t < self.end
    }

    pub fn overlaps(&self, from: f64, to: f64) -> bool {
        self.start < to && self.end > from
    }
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub mode: Mode,
    pub etcd_members: usize,
    /// `maximum_lag_on_failover` (asynchronous mode).
    pub max_lag: u64,
    /// After etcd regains its quorum: time for it and the agents' clients to come back.
    pub etcd_grace_s: f64,
    pub bound_s: f64,
}

pub struct Inputs<'a> {
    /// Member names by index (as the DCS keys name them).
    pub names: &'a [String],
    pub dcs: &'a [DcsSample],
    pub answers: &'a [Answer],
    pub spans: &'a [FaultSpan],
    /// The part of the run to check (the workload).
    pub span: (f64, f64),
    pub rules: &'a Rules,
}

/// One leaderless window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    /// The longest unbroken stretch inside it during which a healthy candidate existed.
    pub charged: Option<(f64, f64)>,
    /// The healthy candidates when that stretch began.
    pub candidates: Vec<usize>,
}

impl Window {
    pub fn len(&self) -> f64 {
        self.end - self.start
    }

    pub fn charged_s(&self) -> f64 {
        self.charged.map_or(0.0, |(a, b)| b - a)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Liveness {
    pub bound_s: f64,
    pub windows: Vec<Window>,
}

impl Liveness {
    /// The longest charged stretch (the last line's `leaderless_s`).
    pub fn leaderless_s(&self) -> f64 {
        self.windows
            .iter()
            .map(Window::charged_s)
            .fold(0.0, f64::max)
    }

    /// Windows whose charge exceeds the bound.
    pub fn violations(&self) -> Vec<&Window> {
        self.windows
            .iter()
            .filter(|w| w.charged_s() > self.bound_s)
            .collect()
    }
}

/// The samples arranged for lookups by time.
pub struct Timeline<'a> {
    names: &'a [String],
    dcs: Vec<(f64, &'a DcsView)>,
    /// Per member: (answered at, in_recovery).
    answers: Vec<Vec<(f64, Option<bool>)>>,
    spans: &'a [FaultSpan],
    rules: &'a Rules,
}

impl<'a> Timeline<'a> {
    pub fn new(i: &Inputs<'a>) -> Timeline<'a> {
        let mut dcs: Vec<(f64, &DcsView)> = i
            .dcs
            .iter()
            .filter_map(|s| s.view.as_ref().map(|v| (s.at, v)))
            .collect();
        dcs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut answers = vec![Vec::new(); i.names.len()];
        for a in i.answers {
            if let Some(v) = answers.get_mut(a.member) {
                v.push((a.answered, a.in_recovery));
            }
        }
        for v in &mut answers {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Timeline {
            names: i.names,
            dcs,
            answers,
            spans: i.spans,
            rules: i.rules,
        }
    }

    /// The latest successful DCS view at `t`, when it is fresh.
    pub fn view(&self, t: f64) -> Option<&'a DcsView> {
        let n = self.dcs.partition_point(|(at, _)| *at <= t);
        let (at, v) = *self.dcs.get(n.checked_sub(1)?)?;
        (t - at <= DCS_STALE_S).then_some(v)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The member's latest answer at `t`, when it is fresh.
    fn in_recovery(&self, m: usize, t: f64) -> Option<bool> {
        let v = self.answers.get(m)?;
        let n = v.partition_point(|(at, _)| *at <= t);
        let (at, answer) = *v.get(n.checked_sub(1)?)?;
        if t - at <= ANSWER_STALE_S {
            answer
        } else {
            None
        }
    }

    fn writable(&self, m: usize, t: f64) -> bool {
        self.in_recovery(m, t) == Some(false)
    }

    /// Some member holds the leader key and is writable (etcd unreadable: some member is
    /// writable).
    pub fn has_leader(&self, t: f64) -> bool {
        match self.view(t) {
            Some(v) => v
                .leader
                .as_deref()
                .and_then(|l| self.index(l))
                .is_some_and(|l| self.writable(l, t)),
            None => (0..self.names.len()).any(|m| self.writable(m, t)),
        }
    }

    /// The leader key's holder at `t` (None: no key, or etcd unreadable).
    pub fn key_holder(&self, t: f64) -> Option<usize> {
        self.view(t)?.leader.as_deref().and_then(|l| self.index(l))
    }

    /// etcd has a quorum at `t`, and has had one for `etcd_grace_s`.
    pub fn etcd_ok(&self, t: f64) -> bool {
        let down: BTreeSet<usize> = self
            .spans
            .iter()
            .filter(|s| s.start <= t && t < s.end + self.rules.etcd_grace_s)
            .flat_map(|s| s.etcd_down.iter().copied())
            .collect();
        let n = self.rules.etcd_members;
        n.saturating_sub(down.len()) * 2 > n
    }

    /// A fault acts on member `m` at `t`.
    fn faulted(&self, m: usize, t: f64) -> bool {
        self.spans
            .iter()
            .any(|s| s.active(t) && s.members.contains(&m))
    }

    /// The healthy candidates at `t` (see the module's rule).
    pub fn candidates(&self, t: f64) -> Vec<usize> {
        if !self.etcd_ok(t) {
            return Vec::new();
        }
        let Some(view) = self.view(t) else {
            return Vec::new();
        };
        // The freshest position known: the leader's published one or any member's.
        let freshest = view
            .members
            .iter()
            .filter_map(|m| m.xlog)
            .chain(view.optime)
            .max();
        (0..self.names.len())
            .filter(|m| !self.faulted(*m, t))
            .filter(|m| {
                let name = &self.names[*m];
                let Some(doc) = view.member(name) else {
                    return false;
                };
                if !doc.running_replica() || doc.never_promote {
                    return false;
                }
                match self.rules.mode {
                    Mode::Sync => view.sync_eligible(name),
                    Mode::Async => match (doc.xlog, freshest) {
                        (Some(x), Some(f)) => x.saturating_add(self.rules.max_lag) >= f,
                        _ => true,
                    },
                }
            })
            .collect()
    }
}

/// Every leaderless window of the checked span, with its charge.
pub fn check(i: &Inputs<'_>) -> Liveness {
    let tl = Timeline::new(i);
    let (from, to) = i.span;
    let steps = ((to - from) / STEP_S).floor().max(0.0) as usize;
    let mut windows: Vec<Window> = Vec::new();
    // The window and the charged stretch being built: start times.
    let mut open: Option<f64> = None;
    let mut stretch: Option<(f64, Vec<usize>)> = None;
    let mut best: Option<((f64, f64), Vec<usize>)> = None;
    for k in 0..=steps {
        let t = from + k as f64 * STEP_S;
        let last = k == steps;
        let leaderless = !tl.has_leader(t);
        if leaderless {
            open.get_or_insert(t);
            let cands = tl.candidates(t);
            if cands.is_empty() {
                close_stretch(&mut stretch, &mut best, t);
            } else if stretch.is_none() {
                stretch = Some((t, cands));
            }
        }
        if !leaderless || last {
            let end = if leaderless { t + STEP_S } else { t };
            close_stretch(&mut stretch, &mut best, end);
            if let Some(start) = open.take() {
                let (charged, candidates) = match best.take() {
                    Some((c, cands)) => (Some(c), cands),
                    None => (None, Vec::new()),
                };
                windows.push(Window {
                    start,
                    end: end.min(to.max(start)),
                    charged,
                    candidates,
                });
            }
        }
    }
    Liveness {
        bound_s: i.rules.bound_s,
        windows,
    }
}

fn close_stretch(
    stretch: &mut Option<(f64, Vec<usize>)>,
    best: &mut Option<((f64, f64), Vec<usize>)>,
    end: f64,
) {
    if let Some((start, cands)) = stretch.take() {
        let longer = best.as_ref().is_none_or(|((a, b), _)| end - start > b - a);
        if longer {
            *best = Some(((start, end), cands));
        }
    }
}

/// A switchover the harness requested through the old leader's REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchoverRecord {
    pub kind: FaultKind,
    pub old: usize,
    pub candidate: Option<usize>,
    pub asked: f64,
    /// When the API answered (None: no answer before the run moved on).
    pub answered: Option<f64>,
    pub status: Option<u16>,
    pub body: String,
}

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SwitchoverOutcome {
    /// The leader key moved to this member.
    Moved(usize),
    /// The API refused it, or the leader declined before stepping down (its answer).
    Refused,
    /// The old leader stepped down (the leader key left it, or it was seen read-only) and
    /// then led again: the switchover did not happen although it was accepted.
    BackToOld,
    /// No answer and no move.
    NoAnswer,
}

/// How long after the request a switchover without an answer is judged.
pub const SWITCHOVER_JUDGED_AFTER_S: f64 = 40.0;
/// A move of the leader key is looked for until this long after the answer.
const SETTLE_S: f64 = 2.0;

/// Classify a switchover (judged until its answer, or 40 s after the request, at most until
/// `until`, the end of the observations); the bool is true when an etcd fault overlapped it
/// (then a `BackToOld` is excused: the old leader may legitimately lead again).
pub fn classify_switchover(
    tl: &Timeline<'_>,
    r: &SwitchoverRecord,
    until: f64,
) -> (SwitchoverOutcome, bool) {
    let end = r
        .answered
        .unwrap_or(r.asked + SWITCHOVER_JUDGED_AFTER_S)
        .min(until);
    let mut left = false;
    let mut t = r.asked;
    let mut excused = false;
    while t <= end {
        if let Some(v) = tl.view(t) {
            if v.leader.as_deref() != tl.names.get(r.old).map(String::as_str) {
                left = true;
            }
        }
        if tl.in_recovery(r.old, t) == Some(true) {
            left = true;
        }
        if !tl.etcd_ok(t) {
            excused = true;
        }
        t += STEP_S;
    }
    // The API answers as soon as it sees the key move; the watcher may see it a little
    // later: a move is looked for until SETTLE_S after the answer.
    let mut moved = None;
    let mut t = r.asked;
    while t <= (end + SETTLE_S).min(until) && moved.is_none() {
        moved = tl.key_holder(t).filter(|h| *h != r.old);
        t += STEP_S;
    }
    let holder = tl.key_holder(end);
    let outcome = match (r.status, holder, moved) {
        (_, Some(h), _) if h == r.old && left => SwitchoverOutcome::BackToOld,
        (Some(200) | None, _, Some(m)) => SwitchoverOutcome::Moved(m),
        (Some(_), _, _) => SwitchoverOutcome::Refused,
        (None, _, None) => SwitchoverOutcome::NoAnswer,
    };
    (outcome, excused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs_watch::MemberState;

    fn names() -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }

    fn member(name: &str, role: &str) -> MemberState {
        MemberState {
            name: name.into(),
            role: role.into(),
            state: "running".into(),
            never_promote: false,
            xlog: Some(1000),
            streaming: role == "replica",
        }
    }

    /// A view with `leader` holding the key (None: no key) and the others running replicas;
    /// the `sync` key (when given) names its standbys and no leader.
    fn view(leader: Option<&str>, sync: Option<&[&str]>) -> DcsView {
        DcsView {
            leader: leader.map(str::to_string),
            sync: sync.map(|s| s.iter().map(|n| n.to_string()).collect()),
            sync_leader: None,
            members: ["n1", "n2", "n3"]
                .iter()
                .map(|n| {
                    member(
                        n,
                        if Some(*n) == leader {
                            "master"
                        } else {
                            "replica"
                        },
                    )
                })
                .collect(),
            optime: Some(1000),
        }
    }

    /// DCS samples every 0.2 s over [from, to) with `f(t)` as the view.
    fn samples(from: f64, to: f64, f: impl Fn(f64) -> Option<DcsView>) -> Vec<DcsSample> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            out.push(DcsSample { at: t, view: f(t) });
            t += 0.2;
        }
        out
    }

    /// Monitor answers every 0.1 s over [from, to): member `m` in recovery per `f(m, t)`.
    fn answers(from: f64, to: f64, f: impl Fn(usize, f64) -> Option<bool>) -> Vec<Answer> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            for m in 0..3 {
                out.push(Answer {
                    member: m,
                    asked: t,
                    answered: t + 0.01,
                    in_recovery: f(m, t),
                });
            }
            t += 0.1;
        }
        out
    }

    fn rules(mode: Mode) -> Rules {
        Rules {
            mode,
            etcd_members: 1,
            max_lag: 1 << 20,
            etcd_grace_s: 2.0,
            bound_s: bound(4.0, 1.0),
        }
    }

    fn span(kind: FaultKind, start: f64, end: f64, members: &[usize], etcd: &[usize]) -> FaultSpan {
        FaultSpan {
            kind,
            what: kind.to_string(),
            start,
            end,
            members: members.to_vec(),
            etcd_down: etcd.to_vec(),
        }
    }

    /// n1 leads until 10 s; nobody leads until `back`; then n2 leads.
    fn failover(back: f64) -> (Vec<DcsSample>, Vec<Answer>) {
        let dcs = samples(0.0, 60.0, |t| {
            Some(if t < 10.0 {
                view(Some("n1"), Some(&["n2"]))
            } else if t < back {
                view(None, Some(&["n2"]))
            } else {
                view(Some("n2"), Some(&["n3"]))
            })
        });
        let ans = answers(0.0, 60.0, |m, t| match m {
            0 if t < 10.0 => Some(false),
            0 => None,
            1 => Some(t < back),
            _ => Some(true),
        });
        (dcs, ans)
    }

    fn run(dcs: &[DcsSample], ans: &[Answer], spans: &[FaultSpan], r: &Rules) -> Liveness {
        let names = names();
        check(&Inputs {
            names: &names,
            dcs,
            answers: ans,
            spans,
            span: (1.0, 59.0),
            rules: r,
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.3
    }

    #[test]
    fn a_window_lasts_from_the_leader_s_loss_to_the_new_leader_writable() {
        let (dcs, ans) = failover(14.0);
        let kill = span(FaultKind::KillNode, 10.0, 20.0, &[0], &[]);
        let l = run(&dcs, &ans, &[kill], &rules(Mode::Sync));
        assert_eq!(l.windows.len(), 1, "{:?}", l.windows);
        let w = &l.windows[0];
        assert!(close(w.start, 10.0) && close(w.end, 14.0), "{w:?}");
        assert!(close(w.charged_s(), 4.0), "{w:?}");
        assert_eq!(w.candidates, vec![1]);
        assert!(l.violations().is_empty());
        assert!(close(l.leaderless_s(), 4.0));
    }

    #[test]
    fn a_long_window_with_a_healthy_sync_standby_is_a_violation() {
        let (dcs, ans) = failover(30.0);
        let kill = span(FaultKind::KillNode, 10.0, 40.0, &[0], &[]);
        let l = run(&dcs, &ans, &[kill], &rules(Mode::Sync));
        assert!(close(l.leaderless_s(), 20.0), "{:?}", l.windows);
        assert_eq!(l.violations().len(), 1);
    }

    #[test]
    fn the_key_holder_must_also_be_writable() {
        // n1 keeps the key all along but its PostgreSQL stops answering from 10 s to 30 s.
        let dcs = samples(0.0, 60.0, |_| Some(view(Some("n1"), None)));
        let ans = answers(0.0, 60.0, |m, t| match m {
            0 if (10.0..30.0).contains(&t) => None,
            0 => Some(false),
            _ => Some(true),
        });
        let l = run(&dcs, &ans, &[], &rules(Mode::Async));
        assert_eq!(l.windows.len(), 1);
        assert!(close(l.windows[0].len(), 20.0), "{:?}", l.windows);
        assert_eq!(l.violations().len(), 1);
    }

    #[test]
    fn in_sync_mode_only_members_the_sync_key_names_are_candidates() {
        // The sync key names nobody (n2 had not become a synchronous standby yet): by design
        // nobody may be promoted; in async mode the same window is charged.
        let dcs = samples(0.0, 60.0, |t| {
            Some(if t < 10.0 {
                view(Some("n1"), Some(&[]))
            } else {
                view(None, Some(&[]))
            })
        });
        let ans = answers(0.0, 60.0, |m, t| Some(!(m == 0 && t < 10.0)));
        let kill = span(FaultKind::KillNode, 10.0, 60.0, &[0], &[]);
        let l = run(&dcs, &ans, std::slice::from_ref(&kill), &rules(Mode::Sync));
        assert_eq!(l.windows.len(), 1);
        assert_eq!(l.leaderless_s(), 0.0);
        assert!(l.violations().is_empty());
        let l = run(&dcs, &ans, std::slice::from_ref(&kill), &rules(Mode::Async));
        assert!(close(l.leaderless_s(), 49.0), "{:?}", l.windows);
        assert_eq!(l.windows[0].candidates, vec![1, 2]);
        // The leader that wrote the sync key may be promoted again: once its host is back
        // as a running replica (no fault), the window is charged in sync mode too.
        let dcs: Vec<DcsSample> = dcs
            .into_iter()
            .map(|mut s| {
                if let Some(v) = s.view.as_mut() {
                    v.sync_leader = Some("n1".into());
                }
                s
            })
            .collect();
        let kill = span(FaultKind::KillNode, 10.0, 30.0, &[0], &[]);
        let l = run(&dcs, &ans, &[kill], &rules(Mode::Sync));
        assert!(close(l.leaderless_s(), 29.0), "{:?}", l.windows);
        assert_eq!(l.windows[0].candidates, vec![0]);
    }

    #[test]
    fn a_lagging_replica_is_no_candidate_in_async_mode() {
        let dcs = samples(0.0, 60.0, |t| {
            let mut v = view(if t < 10.0 { Some("n1") } else { None }, None);
            v.optime = Some(10 << 20);
            Some(v)
        });
        let ans = answers(0.0, 60.0, |m, t| Some(!(m == 0 && t < 10.0)));
        let l = run(&dcs, &ans, &[], &rules(Mode::Async));
        assert_eq!(l.leaderless_s(), 0.0);
        // Measured against the freshest position: here n3's, 10 MiB ahead of n2's; n3 is
        // faulted, so nobody healthy is close enough.
        let dcs = samples(0.0, 60.0, |t| {
            let mut v = view(if t < 10.0 { Some("n1") } else { None }, None);
            v.members[2].xlog = Some(10 << 20);
            Some(v)
        });
        let pause = span(FaultKind::Pause, 5.0, 60.0, &[2], &[]);
        let l = run(
            &dcs,
            &ans,
            std::slice::from_ref(&pause),
            &rules(Mode::Async),
        );
        assert_eq!(l.leaderless_s(), 0.0, "{:?}", l.windows);
        let l = run(&dcs, &ans, &[], &rules(Mode::Async));
        assert_eq!(l.windows[0].candidates, vec![2]);
    }

    #[test]
    fn the_charge_is_clipped_to_when_a_healthy_candidate_existed() {
        // Leaderless from 10 s to 40 s; n2 and n3 are both faulted until 30 s: 10 s charged.
        let (dcs, ans) = failover(40.0);
        let spans = [
            span(FaultKind::KillNode, 10.0, 45.0, &[0], &[]),
            span(FaultKind::Partition, 8.0, 30.0, &[1], &[]),
            span(FaultKind::Pause, 9.0, 30.0, &[2], &[]),
        ];
        let l = run(&dcs, &ans, &spans, &rules(Mode::Async));
        let w = &l.windows[0];
        assert!(close(w.start, 10.0) && close(w.end, 40.0), "{w:?}");
        let (a, b) = w.charged.unwrap();
        assert!(close(a, 30.0) && close(b, 40.0), "{w:?}");
        assert_eq!(w.candidates, vec![1, 2]);
        assert_eq!(l.violations().len(), 1);
        // With a fault on every non-leader the whole time, nothing is charged.
        let spans = [
            span(FaultKind::KillNode, 10.0, 45.0, &[0], &[]),
            span(FaultKind::Partition, 8.0, 45.0, &[1], &[]),
            span(FaultKind::Pause, 9.0, 45.0, &[2], &[]),
        ];
        let l = run(&dcs, &ans, &spans, &rules(Mode::Async));
        assert_eq!(l.windows[0].charged, None);
        assert_eq!(l.leaderless_s(), 0.0);
    }

    #[test]
    fn an_etcd_outage_is_not_charged_until_its_grace_has_passed() {
        let (dcs, ans) = failover(25.0);
        // etcd (one member) down 5-20 s: no DCS views then either.
        let dcs: Vec<DcsSample> = dcs
            .into_iter()
            .map(|s| DcsSample {
                view: s.view.filter(|_| !(5.0..20.0).contains(&s.at)),
                ..s
            })
            .collect();
        let spans = [span(FaultKind::EtcdKill, 5.0, 20.0, &[], &[0])];
        let l = run(&dcs, &ans, &spans, &rules(Mode::Async));
        let w = &l.windows[0];
        let (a, b) = w.charged.unwrap();
        assert!(close(a, 22.0) && close(b, 25.0), "{w:?}");
        // Three etcd members, one cut off: the quorum remains, so the window is charged.
        let mut r = rules(Mode::Async);
        r.etcd_members = 3;
        let (dcs, ans) = failover(25.0);
        let spans = [span(FaultKind::EtcdSplit, 5.0, 20.0, &[], &[1])];
        let l = run(&dcs, &ans, &spans, &r);
        assert!(close(l.leaderless_s(), 15.0), "{:?}", l.windows);
        let spans = [
            span(FaultKind::EtcdSplit, 5.0, 20.0, &[], &[1]),
            span(FaultKind::EtcdKill, 5.0, 18.0, &[], &[2]),
        ];
        // Two of three down until 18 s: the quorum is back 2 s (the grace) later.
        let l = run(&dcs, &ans, &spans, &r);
        assert!(close(l.leaderless_s(), 5.0), "{:?}", l.windows);
    }

    #[test]
    fn nofailover_and_members_not_running_are_no_candidates() {
        let dcs = samples(0.0, 60.0, |t| {
            let mut v = view(if t < 10.0 { Some("n1") } else { None }, None);
            v.members[1].never_promote = true;
            v.members[2].state = "starting".into();
            Some(v)
        });
        let ans = answers(0.0, 60.0, |m, t| Some(!(m == 0 && t < 10.0)));
        let l = run(&dcs, &ans, &[], &rules(Mode::Async));
        assert_eq!(l.windows.len(), 1);
        // n1 itself is a running replica once it lost the key: it is the candidate.
        assert_eq!(l.windows[0].candidates, vec![0]);
        let kill = span(FaultKind::KillNode, 10.0, 60.0, &[0], &[]);
        let l = run(&dcs, &ans, &[kill], &rules(Mode::Async));
        assert_eq!(l.leaderless_s(), 0.0);
    }

    #[test]
    fn without_etcd_answers_a_writable_member_counts_as_a_leader() {
        let dcs = samples(0.0, 60.0, |_| None);
        let ans = answers(0.0, 60.0, |m, _| Some(m != 1));
        let l = run(&dcs, &ans, &[], &rules(Mode::Async));
        assert!(l.windows.is_empty(), "{:?}", l.windows);
    }

    #[test]
    fn a_switchover_that_returns_to_the_old_leader_is_told_apart() {
        let names = names();
        let r = rules(Mode::Async);
        // n1 steps down at 10 s, nobody holds the key until 12 s, then n1 takes it back.
        let dcs = samples(0.0, 60.0, |t| {
            Some(if (10.0..12.0).contains(&t) {
                view(None, None)
            } else {
                view(Some("n1"), None)
            })
        });
        let ans = answers(0.0, 60.0, |m, t| Some(m != 0 || (10.0..13.0).contains(&t)));
        let inputs = Inputs {
            names: &names,
            dcs: &dcs,
            answers: &ans,
            spans: &[],
            span: (0.0, 60.0),
            rules: &r,
        };
        let tl = Timeline::new(&inputs);
        let rec = SwitchoverRecord {
            kind: FaultKind::Switchover,
            old: 0,
            candidate: None,
            asked: 9.5,
            answered: Some(39.5),
            status: Some(412),
            body: "declined".into(),
        };
        assert_eq!(
            classify_switchover(&tl, &rec, 60.0),
            (SwitchoverOutcome::BackToOld, false)
        );
        // Refused up front: the key never left n1.
        let refused = SwitchoverRecord {
            asked: 20.0,
            answered: Some(20.1),
            ..rec.clone()
        };
        assert_eq!(
            classify_switchover(&tl, &refused, 60.0).0,
            SwitchoverOutcome::Refused
        );
        // A move: the key names n2 at the answer.
        let dcs = samples(0.0, 60.0, |t| {
            Some(view(Some(if t < 10.0 { "n1" } else { "n2" }), None))
        });
        let inputs = Inputs {
            dcs: &dcs,
            ..inputs
        };
        let tl = Timeline::new(&inputs);
        let ok = SwitchoverRecord {
            status: Some(200),
            answered: Some(10.5),
            ..rec
        };
        assert_eq!(
            classify_switchover(&tl, &ok, 60.0).0,
            SwitchoverOutcome::Moved(1)
        );
    }
}
