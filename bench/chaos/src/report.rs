//! What a run prints: a readable summary, the `reads:` line, in async mode the
//! `async loss:` line, then — the last line, always — the machine line
//! `chaos: faults=<n> acked=<n> lost=<n> dual_primary=<n> unrecovered=<n> max_gap_s=<x>
//! leaderless_s=<x>`; and the exit rule (both modes: dual_primary or unrecovered above zero,
//! a charged leaderless window above the bound, a switchover that went back to the old
//! leader, or (`--via router`) a read through the auto listener that missed the client's own
//! kept write fails; sync mode also: lost or non-monotonic leader reads above zero; in async
//! mode those are reported).

use crate::checker::Verdict;
use crate::cli::{Mode, Settings};
use crate::liveness::{Liveness, SwitchoverOutcome};
use crate::loss::AsyncLoss;
use crate::read_check::ReadVerdict;
use crate::runner::RunResult;

/// The machine-readable last line.
pub fn summary_line(faults: u32, v: &Verdict, unrecovered: usize, leaderless_s: f64) -> String {
    format!(
        "chaos: faults={faults} acked={} lost={} dual_primary={} unrecovered={unrecovered} max_gap_s={:.2} leaderless_s={leaderless_s:.2}",
        v.acked,
        v.lost.len(),
        v.dual_primary(),
        v.max_gap_s()
    )
}

/// What the exit status depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub lost: usize,
    pub dual_primary: usize,
    pub unrecovered: usize,
    pub nonmonotonic: usize,
    /// Charged leaderless windows longer than the bound.
    pub leaderless_over_bound: usize,
    /// Switchovers after which the old leader led again (not excused by an etcd fault).
    pub switchover_back: usize,
    /// Reads through the auto listener that missed the client's own kept write.
    pub ryw_violations: usize,
}

/// Whether the run failed its promises.
pub fn failed(mode: Mode, c: Counts) -> bool {
    c.dual_primary > 0
        || c.unrecovered > 0
        || c.leaderless_over_bound > 0
        || c.switchover_back > 0
        || c.ryw_violations > 0
        || (mode == Mode::Sync && (c.lost > 0 || c.nonmonotonic > 0))
}

/// Switchovers after which the old leader led again, not excused by an etcd fault.
pub fn switchover_back(r: &RunResult) -> usize {
    r.switchovers
        .iter()
        .filter(|(_, o, excused)| *o == SwitchoverOutcome::BackToOld && !excused)
        .count()
}

/// The leaderless windows in words: every window above the bound with when, the healthy
/// candidates and the faults active, then the longest others.
fn liveness_details(r: &RunResult, name: &dyn Fn(usize) -> String) -> Vec<String> {
    let l: &Liveness = &r.liveness;
    let mut out = vec![format!(
        "liveness: {} leaderless windows (no member both holding the leader key and writable), longest {:.2} s; \
         longest charged (a healthy candidate existed): {:.2} s; bound ttl + loop_wait + 2 s = {:.2} s; over the bound: {}",
        l.windows.len(),
        l.windows.iter().map(|w| w.len()).fold(0.0, f64::max),
        l.leaderless_s(),
        l.bound_s,
        l.violations().len()
    )];
    let mut shown: Vec<&crate::liveness::Window> =
        l.windows.iter().filter(|w| w.len() >= 1.0).collect();
    shown.sort_by(|a, b| {
        b.charged_s()
            .total_cmp(&a.charged_s())
            .then(b.len().total_cmp(&a.len()))
    });
    let over = shown.iter().filter(|w| w.charged_s() > l.bound_s).count();
    for w in shown.into_iter().take(over.max(8)) {
        let verdict = if w.charged_s() > l.bound_s {
            "OVER THE BOUND"
        } else {
            "within the bound"
        };
        let charged = match w.charged {
            Some((a, b)) => format!(
                "charged {:.2} s (t={a:.2}-{b:.2}, healthy candidates then: {})",
                b - a,
                w.candidates
                    .iter()
                    .map(|k| name(*k))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => "not charged (no healthy candidate at any time)".to_string(),
        };
        let active: Vec<String> = r
            .timeline
            .iter()
            .filter(|s| s.overlaps(w.start - 1.0, w.end))
            .map(|s| format!("{} [{}] t={:.2}-{:.2}", s.kind, s.what, s.start, s.end))
            .collect();
        out.push(format!(
            "  leaderless t={:.2}-{:.2}s ({:.2} s): {charged}: {verdict}",
            w.start,
            w.end,
            w.len()
        ));
        out.push(format!(
            "    faults active then: {}",
            if active.is_empty() {
                "none".to_string()
            } else {
                active.join("; ")
            }
        ));
    }
    out
}

/// The switchovers in words, then their line.
fn switchover_details(r: &RunResult, name: &dyn Fn(usize) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let (mut moved, mut refused, mut back, mut none) = (0, 0, 0, 0);
    for (rec, outcome, excused) in &r.switchovers {
        let what = match outcome {
            SwitchoverOutcome::Moved(k) => {
                moved += 1;
                format!("moved to {}", name(*k))
            }
            SwitchoverOutcome::Refused => {
                refused += 1;
                "refused".to_string()
            }
            SwitchoverOutcome::BackToOld if *excused => {
                "the old leader led again (excused: an etcd fault overlapped)".to_string()
            }
            SwitchoverOutcome::BackToOld => {
                back += 1;
                "THE OLD LEADER STEPPED DOWN AND LED AGAIN".to_string()
            }
            SwitchoverOutcome::NoAnswer => {
                none += 1;
                "no answer, the leader key did not move".to_string()
            }
        };
        out.push(format!(
            "  {} t={:.2}s {} -> {}: {what}; answer {} {:?}",
            rec.kind,
            rec.asked,
            name(rec.old),
            rec.candidate.map_or("any".to_string(), name),
            rec.status.map_or("-".to_string(), |s| s.to_string()),
            rec.body
        ));
    }
    out.insert(
        0,
        format!(
            "switchovers: requested={} moved={moved} refused={refused} back_to_old_leader={back} no_answer={none}",
            r.switchovers.len()
        ),
    );
    out
}

/// The reads summary line (printed just before the last line).
pub fn reads_line(r: &ReadVerdict, failed: usize) -> String {
    let (stale_s, _, _) = r.replica_max_stale_s.unwrap_or((0.0, 0, 0.0));
    format!(
        "reads: leader={} replica={} failed={failed} stale_primary={} stale_from_loss={} \
         nonmonotonic={} decrease_from_loss={} replica_max_stale_s={stale_s:.2} replica_max_stale_ids={}",
        r.leader_reads,
        r.replica_reads,
        r.stale_primary.len(),
        r.stale_from_loss,
        r.nonmonotonic.len(),
        r.decrease_from_acked_loss + r.decrease_from_unacked_loss,
        r.replica_max_stale_ids
    )
}

/// The reads in words: what was stale or went backwards, where and when.
fn read_details(r: &ReadVerdict, name: &dyn Fn(usize) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for st in r.stale_primary.iter().take(10) {
        out.push(format!(
            "  stale primary read: t={:.2}s on {} (not in recovery) missed {} acked writes, oldest acked {:.2} s before",
            st.invoke,
            name(st.member),
            st.missing,
            st.age_s
        ));
    }
    if r.stale_primary.len() > 10 {
        out.push(format!("  ... and {} more", r.stale_primary.len() - 10));
    }
    for g in r.nonmonotonic.iter().take(10) {
        out.push(format!(
            "  non-monotonic: reader {} t={:.2}s on {} saw client {}'s id {} after seeing {}",
            g.reader,
            g.invoke,
            name(g.member),
            g.client,
            g.now,
            g.earlier
        ));
    }
    if r.nonmonotonic.len() > 10 {
        out.push(format!("  ... and {} more", r.nonmonotonic.len() - 10));
    }
    if r.decrease_from_acked_loss + r.decrease_from_unacked_loss + r.stale_from_loss > 0 {
        out.push(format!(
            "  consequences of loss, not counted as violations: {} reads missed only lost writes; \
             {} leader reads went back after seeing an acked write later lost, {} after seeing a \
             write never acknowledged and later lost",
            r.stale_from_loss, r.decrease_from_acked_loss, r.decrease_from_unacked_loss
        ));
    }
    if let Some((s, k, at)) = r.replica_max_stale_s {
        out.push(format!(
            "  stalest replica read: {s:.2} s behind (t={at:.2}s on {}); most acked writes not yet visible in one read: {}",
            name(k),
            r.replica_max_stale_ids
        ));
    }
    out
}

/// The async loss in words, then its line.
fn loss_details(l: &AsyncLoss) -> Vec<String> {
    let mut out = Vec::new();
    for f in &l.failovers {
        out.push(format!(
            "  timeline {} ended at {}: last acked write at {}, {} acked writes lost, {} bytes past the switch point",
            f.timeline,
            lsn(f.switch_point),
            f.last_acked_lsn.map_or_else(|| "-".to_string(), lsn),
            f.lost,
            f.lost_bytes
        ));
    }
    for (tl, lost) in &l.abandoned {
        out.push(format!(
            "  timeline {tl} is not in the final history (abandoned whole): {lost} acked writes lost on it"
        ));
    }
    out.push(
        "  (the bound is checked by the candidate against the leader's last published WAL position, \
         written once per loop_wait and not while the leader cannot reach etcd, so a loss above it \
         is reported, not failed)"
            .to_string(),
    );
    out
}

fn lsn(at: u64) -> String {
    pgbaton_core::pg_text::format_lsn(at)
}

fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    if items.len() > 10 {
        format!("{:?} and {} more", &items[..10], items.len() - 10)
    } else {
        format!("{items:?}")
    }
}

/// The human part of the report, line by line.
pub fn details(r: &RunResult, s: &Settings) -> Vec<String> {
    let v = &r.verdict;
    let name = |k: usize| r.names.get(k).cloned().unwrap_or_else(|| format!("#{k}"));
    let names = |ks: &[usize]| ks.iter().map(|k| name(*k)).collect::<Vec<_>>().join(",");
    let mut out = vec![format!(
        "run {}: seed {} mode {:?}{} ttl {} members {} etcd {} clients {} readers {} via {:?} duration {} s",
        r.run,
        s.seed,
        s.mode,
        if s.strict { " strict" } else { "" },
        s.ttl,
        s.members,
        s.etcd,
        s.clients,
        s.readers,
        s.via,
        s.duration_s
    )];
    let kinds: Vec<String> = r.by_kind.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    out.push(format!("faults: {} ({})", r.faults, kinds.join(", ")));
    out.push(format!(
        "writes: acked {} failed {} unknown {} (unknown present on the final leader: {})",
        v.acked, v.failed, v.unknown, v.unknown_present
    ));
    out.push(format!(
        "lost (acked, absent on the final leader): {} {}",
        v.lost.len(),
        first(&v.lost)
    ));
    out.push(format!(
        "failed but present: {} {}",
        v.failed_present.len(),
        first(&v.failed_present)
    ));
    out.push(format!(
        "monitor: {} rounds; intervals with two writable members: {} (confirmed by acked writes on both: {})",
        r.monitor_rounds,
        v.dual_intervals.len(),
        v.dual_intervals.iter().filter(|d| d.confirmed()).count()
    ));
    for d in &v.dual_intervals {
        out.push(format!(
            "  t={:.2}-{:.2}s writable {} acked on {}",
            d.start,
            d.end,
            names(&d.members),
            names(&d.acked_on)
        ));
    }
    for (tl, ms) in &v.timeline_conflicts {
        out.push(format!(
            "timeline {tl}: writes acked by {} (two primaries on one timeline)",
            names(ms)
        ));
    }
    out.push(format!(
        "acked on a branch the final history abandoned: {} {}",
        v.dead_branch_acks.len(),
        first(&v.dead_branch_acks)
    ));
    match r.convergence.leader {
        Some(l) => out.push(format!(
            "converged in {:.1} s: leader {}, unrecovered [{}]",
            r.convergence.waited_s,
            name(l),
            names(&r.convergence.unrecovered)
        )),
        None => out.push(format!(
            "no leader {:.1} s after healing: unrecovered [{}]",
            r.convergence.waited_s,
            names(&r.convergence.unrecovered)
        )),
    }
    if let Some(l) = r.convergence.leader {
        if !r.convergence.writable.contains(&l) {
            out.push(format!(
                "etcd's leader key named {} but the members answering as writable primaries were [{}]",
                name(l),
                names(&r.convergence.writable)
            ));
        }
    }
    if !r.behind.is_empty() {
        out.push(format!(
            "did not replay the leader's WAL position within 15 s (counted as unrecovered): [{}]",
            names(&r.behind)
        ));
    }
    if let Some(why) = &r.catch_up_note {
        out.push(format!(
            "the leader's WAL position could not be read for that check: {why}"
        ));
    }
    if let Some(note) = &r.reference_note {
        out.push(note.clone());
    }
    for (k, n) in &v.member_missing {
        out.push(format!(
            "{} lacks {n} acked writes the final leader has",
            name(*k)
        ));
    }
    out.push(format!(
        "longest window without an acked write: {:.2} s (t={:.2}-{:.2})",
        v.max_gap_s(),
        v.max_gap.0,
        v.max_gap.1
    ));
    out.push(format!(
        "reads ({} readers; leader path = the member accepting writes, reached like the writers reach it ({}); replica path = every member in turn):",
        s.readers,
        match s.via {
            crate::cli::Via::Libpq => "libpq read-write",
            crate::cli::Via::Router => "the router's write address",
        }
    ));
    out.extend(read_details(&r.reads, &name));
    out.extend(switchover_details(r, &name));
    out.extend(liveness_details(r, &name));
    let loss_line = match (&r.async_loss, s.mode) {
        (Some(l), Mode::Async) => {
            out.push(format!(
                "async loss per failover (bound: maximum_lag_on_failover {} bytes):",
                l.bound
            ));
            out.extend(loss_details(l));
            Some(l.line())
        }
        (None, Mode::Async) => Some(
            "async loss: not computed (no readable final leader or no timeline history)"
                .to_string(),
        ),
        (_, Mode::Sync) => None,
    };
    // The two summary lines come last, just before the machine line.
    out.push(reads_line(&r.reads, r.reads_failed));
    if let Some(v) = &r.ryw {
        out.push(crate::ryw::line(v));
        for (id, at) in v.violations.iter().take(10) {
            out.push(format!(
                "  read-your-writes violation: t={at:.2}s a read-only transaction after the client's acknowledged insert of id {id} did not see it (the final leader has it)"
            ));
        }
    }
    out.extend(loss_line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_has_the_exact_shape() {
        let v = Verdict {
            acked: 1234,
            lost: vec![7, 8],
            max_gap: (10.0, 17.456),
            ..Default::default()
        };
        assert_eq!(
            summary_line(9, &v, 1, 3.456),
            "chaos: faults=9 acked=1234 lost=2 dual_primary=0 unrecovered=1 max_gap_s=7.46 leaderless_s=3.46"
        );
    }

    fn counts(lost: usize, dual_primary: usize, unrecovered: usize, nonmonotonic: usize) -> Counts {
        Counts {
            lost,
            dual_primary,
            unrecovered,
            nonmonotonic,
            ..Default::default()
        }
    }

    #[test]
    fn a_long_leaderless_window_or_a_switchover_back_fails_in_both_modes() {
        for mode in [Mode::Sync, Mode::Async] {
            let over = Counts {
                leaderless_over_bound: 1,
                ..Default::default()
            };
            assert!(failed(mode, over));
            let back = Counts {
                switchover_back: 1,
                ..Default::default()
            };
            assert!(failed(mode, back));
        }
    }

    #[test]
    fn sync_mode_fails_on_loss_and_backward_reads_async_mode_only_reports_them() {
        assert!(failed(Mode::Sync, counts(1, 0, 0, 0)));
        assert!(failed(Mode::Sync, counts(0, 0, 0, 1)));
        assert!(!failed(Mode::Async, counts(1, 0, 0, 0)));
        assert!(!failed(Mode::Async, counts(0, 0, 0, 1)));
        for mode in [Mode::Sync, Mode::Async] {
            assert!(failed(mode, counts(0, 1, 0, 0)));
            assert!(failed(mode, counts(0, 0, 1, 0)));
            assert!(!failed(mode, counts(0, 0, 0, 0)));
        }
    }

    #[test]
    fn the_reads_line_names_every_count() {
        let r = ReadVerdict {
            leader_reads: 10,
            replica_reads: 20,
            stale_from_loss: 2,
            decrease_from_acked_loss: 1,
            decrease_from_unacked_loss: 1,
            replica_max_stale_s: Some((1.234, 1, 5.0)),
            replica_max_stale_ids: 7,
            ..Default::default()
        };
        assert_eq!(
            reads_line(&r, 3),
            "reads: leader=10 replica=20 failed=3 stale_primary=0 stale_from_loss=2 nonmonotonic=0 \
             decrease_from_loss=2 replica_max_stale_s=1.23 replica_max_stale_ids=7"
        );
    }
}
