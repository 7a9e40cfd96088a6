//! What a run prints: a readable summary, then — the last line, always — the machine line
//! `chaos: faults=<n> acked=<n> lost=<n> dual_primary=<n> unrecovered=<n> max_gap_s=<x>`;
//! and the exit rule (sync mode: lost, dual_primary or unrecovered above zero fails; async
//! mode: dual_primary or unrecovered fails, lost is reported).

use crate::checker::Verdict;
use crate::cli::{Mode, Settings};
use crate::runner::RunResult;

/// The machine-readable last line.
pub fn summary_line(faults: u32, v: &Verdict, unrecovered: usize) -> String {
    format!(
        "chaos: faults={faults} acked={} lost={} dual_primary={} unrecovered={unrecovered} max_gap_s={:.2}",
        v.acked,
        v.lost.len(),
        v.dual_primary(),
        v.max_gap_s()
    )
}

/// Whether the run failed its promises.
pub fn failed(mode: Mode, lost: usize, dual_primary: usize, unrecovered: usize) -> bool {
    dual_primary > 0 || unrecovered > 0 || (mode == Mode::Sync && lost > 0)
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
        "run {}: seed {} mode {:?}{} ttl {} members {} etcd {} clients {} duration {} s",
        r.run,
        s.seed,
        s.mode,
        if s.strict { " strict" } else { "" },
        s.ttl,
        s.members,
        s.etcd,
        s.clients,
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
    if !r.behind.is_empty() {
        out.push(format!(
            "did not replay the leader's WAL position within 15 s (counted as unrecovered): [{}]",
            names(&r.behind)
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
            summary_line(9, &v, 1),
            "chaos: faults=9 acked=1234 lost=2 dual_primary=0 unrecovered=1 max_gap_s=7.46"
        );
    }

    #[test]
    fn sync_mode_fails_on_loss_async_mode_only_reports_it() {
        assert!(failed(Mode::Sync, 1, 0, 0));
        assert!(!failed(Mode::Async, 1, 0, 0));
        for mode in [Mode::Sync, Mode::Async] {
            assert!(failed(mode, 0, 1, 0));
            assert!(failed(mode, 0, 0, 1));
            assert!(!failed(mode, 0, 0, 0));
        }
    }
}
