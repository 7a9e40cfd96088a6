//! A replica away while the leader writes, in the real-runtime simulation with WAL retention
//! modelled (`real/pg.rs`: `wal_keep_size` 12 s of writes, `max_slot_wal_keep_size` 15 s):
//! a short absence streams on from the replica's slot; a longer one invalidates the slot, the
//! replica's position falls behind the oldest WAL the leader holds (published in `status`)
//! and it is re-cloned by itself; with automatic re-clones
//! off, the checker reports the replica that never follows again.

use pgbaton_sim::{
    run_real, FaultKind, RealConfig, RealReport, ScriptedFault, Target, ViolationKind,
};

fn away(ms: u64, auto_reclone: bool) -> RealReport {
    let faults = vec![ScriptedFault {
        at_ms: 15_000,
        target: Target::Member(2),
        kind: FaultKind::StopStreaming { ms },
    }];
    run_real(&RealConfig {
        scripted: Some(faults),
        duration_ms: 15_000 + ms,
        liveness_bound_ms: 60_000,
        auto_reclone,
        ..RealConfig::new(3)
    })
}

fn show(report: &RealReport) -> String {
    let mut out = String::new();
    for line in report.trace.iter().filter(|l| !l.contains("accepts")) {
        out.push_str(line);
        out.push('\n');
    }
    for v in &report.violations {
        out.push_str(&format!("{:?} at {} ms: {}\n", v.kind, v.at, v.description));
    }
    out
}

fn mentions(report: &RealReport, what: &str) -> bool {
    report.trace.iter().any(|l| l.contains(what))
}

/// The run broke no promise, settled, and its trace shows each of `evidence`.
fn assert_healed(report: &RealReport, evidence: &[&str]) {
    assert!(report.violations.is_empty(), "{}", show(report));
    assert!(report.converged_at.is_some(), "{}", show(report));
    for what in evidence {
        assert!(
            mentions(report, what),
            "no \"{what}\" in:\n{}",
            show(report)
        );
    }
}

#[test]
fn a_short_absence_streams_on_from_the_slot() {
    let report = away(8_000, true);
    assert!(report.violations.is_empty(), "{}", show(&report));
    assert!(report.converged_at.is_some(), "{}", show(&report));
    assert!(!mentions(&report, "invalidated"), "{}", show(&report));
    assert!(!mentions(&report, "wal-missing"), "{}", show(&report));
}

#[test]
fn a_long_absence_loses_the_slot_and_the_replica_is_recloned_by_itself() {
    let report = away(25_000, true);
    assert_healed(
        &report,
        &[
            "replication slot m3 invalidated (max_slot_wal_keep_size)",
            "data directory moved aside (wal-missing)",
            "m3  cloned from m1",
        ],
    );
}

#[test]
fn without_automatic_reclones_the_checker_reports_the_replica_that_never_follows() {
    let report = away(25_000, false);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::NotLive && v.description.contains("m3")),
        "{}",
        show(&report)
    );
    assert!(!mentions(&report, "wal-missing"), "{}", show(&report));
}

#[test]
fn a_replica_down_past_its_slot_starts_finds_its_wal_removed_and_is_recloned() {
    let faults = vec![ScriptedFault {
        at_ms: 15_000,
        target: Target::Member(2),
        kind: FaultKind::CrashMember { down_ms: 25_000 },
    }];
    let report = run_real(&RealConfig {
        scripted: Some(faults),
        duration_ms: 40_000,
        liveness_bound_ms: 60_000,
        ..RealConfig::new(3)
    });
    assert_healed(
        &report,
        &[
            "has already been removed",
            "data directory moved aside (wal-missing)",
            "m3  cloned from m1",
        ],
    );
}
