//! The comparison table (pgbaton vs Patroni + HAProxy, per scenario and settings), the
//! agent memory table and the one-line summary `failover: ...` printed last.

use std::fmt::Write as _;

use crate::crash::Crash;
use crate::profile::Profile;
use crate::scenario::{AgentMemory, RunResult};
use crate::stats::summarize;
use crate::target::System;

/// The profile each tool's "defaults" line uses: pgbaton's defaults (file silent) and
/// Patroni's defaults, which are the seed's 30 / 10 / 10.
pub const DEFAULT_PROFILE: [(System, Profile); 2] = [
    (System::Pgbaton, Profile::Default),
    (System::Patroni, Profile::Seed),
];

fn runs_of(runs: &[RunResult], system: System, profile: Profile, crash: Crash) -> Vec<&RunResult> {
    runs.iter()
        .filter(|r| r.system == system && r.profile == profile && r.crash == crash)
        .collect()
}

/// Median write-unavailability window of a series, if any run had a write after the event.
pub fn median_gap(
    runs: &[RunResult],
    system: System,
    profile: Profile,
    crash: Crash,
) -> Option<f64> {
    let gaps: Vec<f64> = runs_of(runs, system, profile, crash)
        .iter()
        .filter_map(|r| r.gap_s)
        .collect();
    summarize(&gaps).map(|s| s.median)
}

/// The comparison as Markdown.
pub fn markdown(runs: &[RunResult], memory: &[AgentMemory]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Side by side: write-unavailability window (seconds)\n"
    );
    let _ = writeln!(
        out,
        "| scenario | system | ttl / loop_wait / retry_timeout | runs | gap median | gap max | all writes ok after (median) | failed statements (median, max) | failed writes (median) | acked lost | pg_rewind after switchover | per-run gaps |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for crash in [Crash::Node, Crash::Postmaster, Crash::Switchover] {
        for system in [System::Pgbaton, System::Patroni] {
            for profile in Profile::ALL {
                let rs = runs_of(runs, system, profile, crash);
                if rs.is_empty() {
                    continue;
                }
                let gaps: Vec<f64> = rs.iter().filter_map(|r| r.gap_s).collect();
                let clean: Vec<f64> = rs.iter().filter_map(|r| r.clean_s).collect();
                let failed: Vec<f64> = rs.iter().map(|r| r.failed_statements as f64).collect();
                let failed_writes: Vec<f64> = rs.iter().map(|r| r.failed_writes as f64).collect();
                let lost: usize = rs.iter().filter_map(|r| r.lost_acked).sum();
                let rewound = match crash {
                    Crash::Switchover => {
                        let n = rs.iter().filter(|r| r.rewound == Some(true)).count();
                        let streams = rs
                            .iter()
                            .filter(|r| r.old_leader_streams == Some(true))
                            .count();
                        format!("{n} of {} (old leader streams: {streams})", rs.len())
                    }
                    _ => "-".into(),
                };
                let g = summarize(&gaps);
                let f = summarize(&failed);
                let per_run: Vec<String> = rs
                    .iter()
                    .map(|r| r.gap_s.map_or("none".into(), |g| format!("{g:.2}")))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {}/{} | {} | {} | {} | {}, {} | {} | {} | {} | {} |",
                    crash.name(),
                    label(system, profile),
                    profile.describe(),
                    gaps.len(),
                    rs.len(),
                    fmt(g.map(|s| s.median)),
                    fmt(g.map(|s| s.max)),
                    fmt(summarize(&clean).map(|s| s.median)),
                    f.map_or("-".into(), |s| format!("{}", s.median)),
                    f.map_or("-".into(), |s| format!("{}", s.max)),
                    summarize(&failed_writes).map_or("-".into(), |s| format!("{}", s.median)),
                    lost,
                    rewound,
                    per_run.join(", ")
                );
            }
        }
    }
    if !memory.is_empty() {
        let _ = writeln!(out, "\n## Agent resident memory (VmRSS, MiB)\n");
        let _ = writeln!(out, "| system | settings | agents | median | min | max |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for system in [System::Pgbaton, System::Patroni] {
            for profile in Profile::ALL {
                let rss: Vec<f64> = memory
                    .iter()
                    .filter(|m| m.system == system && m.profile == profile)
                    .map(|m| m.rss_kb as f64 / 1024.0)
                    .collect();
                let Some(s) = summarize(&rss) else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                    label(system, profile),
                    profile.describe(),
                    s.n,
                    s.median,
                    s.min,
                    s.max
                );
            }
        }
    }
    out
}

/// "pgbaton" or "Patroni 3.0.2 + HAProxy (seed checks)".
fn label(system: System, profile: Profile) -> String {
    match system {
        System::Pgbaton => "pgbaton (direct to members)".into(),
        System::Patroni => {
            let c = crate::compare::checks_for(profile);
            format!(
                "Patroni + HAProxy (inter {}s fall {} rise {})",
                c.inter_s, c.fall, c.rise
            )
        }
    }
}

/// The last line: medians at each tool's default settings (pgbaton's defaults, Patroni's
/// = the seed's), `nan` where there is no figure.
pub fn summary_line(runs: &[RunResult]) -> String {
    let [(pb, pb_profile), (pa, pa_profile)] = DEFAULT_PROFILE;
    let f = |system, profile, crash| {
        median_gap(runs, system, profile, crash).map_or("nan".to_string(), |v| format!("{v:.2}"))
    };
    format!(
        "failover: pgbaton_node_s={} patroni_node_s={} pgbaton_switchover_s={} patroni_switchover_s={}",
        f(pb, pb_profile, Crash::Node),
        f(pa, pa_profile, Crash::Node),
        f(pb, pb_profile, Crash::Switchover),
        f(pa, pa_profile, Crash::Switchover),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: System, profile: Profile, crash: Crash, gap: Option<f64>) -> RunResult {
        RunResult {
            system,
            profile,
            crash,
            run: 1,
            leader_before: "node1".into(),
            candidate: None,
            member_after: gap.map(|_| "node2".into()),
            gap_s: gap,
            crash_to_write_s: gap,
            clean_s: gap.map(|g| g + 1.0),
            failed_statements: 3,
            failed_writes: 1,
            lost_acked: Some(0),
            rewound: (crash == Crash::Switchover).then_some(false),
            old_leader_streams: (crash == Crash::Switchover).then_some(true),
            note: None,
            acks_rel_s: Vec::new(),
        }
    }

    #[test]
    fn summary_line_takes_each_tools_default_settings() {
        let runs = vec![
            run(System::Pgbaton, Profile::Default, Crash::Node, Some(3.0)),
            run(System::Pgbaton, Profile::Default, Crash::Node, Some(4.0)),
            run(System::Pgbaton, Profile::Fast, Crash::Node, Some(1.0)),
            run(System::Patroni, Profile::Seed, Crash::Node, Some(33.0)),
            run(
                System::Pgbaton,
                Profile::Default,
                Crash::Switchover,
                Some(0.5),
            ),
            run(System::Patroni, Profile::Ttl5, Crash::Switchover, Some(2.0)),
        ];
        assert_eq!(
            summary_line(&runs),
            "failover: pgbaton_node_s=3.50 patroni_node_s=33.00 pgbaton_switchover_s=0.50 patroni_switchover_s=nan"
        );
    }

    #[test]
    fn table_rows_per_system_and_settings() {
        let runs = vec![
            run(
                System::Pgbaton,
                Profile::Default,
                Crash::Switchover,
                Some(0.4),
            ),
            run(System::Patroni, Profile::Seed, Crash::Switchover, Some(7.0)),
        ];
        let md = markdown(&runs, &[]);
        assert!(md.contains("| switchover | pgbaton (direct to members) | ttl 4 / loop_wait 1 / retry_timeout 1.5 (file silent) | 1/1 | 0.40 | 0.40 | 1.40 | 3, 3 | 1 | 0 | 0 of 1 (old leader streams: 1) | 0.40 |"), "{md}");
        assert!(
            md.contains("Patroni + HAProxy (inter 3s fall 3 rise 2)"),
            "{md}"
        );
        assert!(!md.contains("| node |"), "{md}");
    }
}
