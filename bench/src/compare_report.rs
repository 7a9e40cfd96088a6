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
    for crash in [
        Crash::Node,
        Crash::Postmaster,
        Crash::Switchover,
        Crash::SwitchoverNocandidate,
        Crash::SwitchoverThenNode,
        Crash::NodeTwice,
    ] {
        for system in [System::Pgbaton, System::PgbatonRouter, System::Patroni] {
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
                    Crash::Switchover | Crash::SwitchoverNocandidate => {
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
    succession_table(&mut out, runs);
    if !memory.is_empty() {
        let _ = writeln!(out, "\n## Agent resident memory (VmRSS, MiB)\n");
        let _ = writeln!(out, "| system | settings | agents | median | min | max |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for system in [System::Pgbaton, System::PgbatonRouter, System::Patroni] {
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

/// Median and maximum of windows where a run without a write within its limit counts as
/// longer than any other: "> 120 s" when the median or the maximum falls on such a run.
pub fn capped_stats(windows: &[Option<f64>], limit: Option<f64>) -> (String, String) {
    if windows.is_empty() {
        return ("-".into(), "-".into());
    }
    let capped = |_: ()| match limit {
        Some(l) => format!("> {l:.0} s"),
        None => "none".into(),
    };
    let mut sorted: Vec<f64> = windows.iter().map(|w| w.unwrap_or(f64::INFINITY)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let fmt = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            capped(())
        }
    };
    (fmt(median), fmt(sorted[n - 1]))
}

/// Who took the writes after the measured event, relative to what came before: for a
/// succession, the leader before the first event ("first leader") or the remaining member;
/// for a switchover without candidate, the old leader itself or a replica.
pub fn takeover_role(r: &RunResult) -> &'static str {
    let Some(m) = r.took_over.as_deref() else {
        return "nobody";
    };
    if let Some(p) = &r.prior {
        if m == p.leader {
            "first leader"
        } else if m == p.new_leader {
            "the crashed node"
        } else {
            "third member"
        }
    } else if m == r.leader_before {
        "old leader itself"
    } else {
        "a replica"
    }
}

/// "third member 4, first leader 1" (most frequent first).
fn roles(rs: &[&RunResult]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for r in rs {
        let role = takeover_role(r);
        match counts.iter_mut().find(|(k, _)| *k == role) {
            Some((_, n)) => *n += 1,
            None => counts.push((role, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scenarios of faults soon after a timeline switch, one row per tool and settings.
fn succession_table(out: &mut String, runs: &[RunResult]) {
    let kinds = [
        Crash::SwitchoverThenNode,
        Crash::NodeTwice,
        Crash::SwitchoverNocandidate,
    ];
    if !runs.iter().any(|r| kinds.contains(&r.crash)) {
        return;
    }
    let _ = writeln!(out, "\n## Faults soon after a timeline switch (seconds)\n");
    let _ = writeln!(
        out,
        "| scenario | system | settings | runs | window median | window max | all writes ok after (median) | failed writes (median) | took over | prior window (median) | crash after new leader's first write (median) | a replica's control file behind at the kill | acked lost | per-run windows |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for crash in kinds {
        for system in [System::Pgbaton, System::PgbatonRouter, System::Patroni] {
            for profile in Profile::ALL {
                let rs = runs_of(runs, system, profile, crash);
                if rs.is_empty() {
                    continue;
                }
                let limit = rs.iter().filter_map(|r| r.limit_s).reduce(f64::max);
                let windows: Vec<Option<f64>> = rs.iter().map(|r| r.gap_s).collect();
                let (median, max) = capped_stats(&windows, limit);
                let clean: Vec<Option<f64>> = rs.iter().map(|r| r.clean_s).collect();
                let (clean_median, _) = capped_stats(&clean, limit);
                let failed_writes: Vec<f64> = rs.iter().map(|r| r.failed_writes as f64).collect();
                let prior: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.prior.as_ref().and_then(|p| p.window_s))
                    .collect();
                let after: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.prior.as_ref().map(|p| p.crash_after_s))
                    .collect();
                let behind = if crash == Crash::SwitchoverNocandidate {
                    "-".to_string()
                } else {
                    let n = rs
                        .iter()
                        .filter(|r| crate::succession::control_file_behind(&r.timelines_at_event))
                        .count();
                    format!("{n} of {}", rs.len())
                };
                let lost: usize = rs.iter().filter_map(|r| r.lost_acked).sum();
                let per_run: Vec<String> = rs
                    .iter()
                    .map(|r| match (r.gap_s, r.leader_seen_s) {
                        (Some(g), _) => format!("{g:.2}"),
                        (None, Some(s)) => format!("none (leader after {s:.0} s)"),
                        (None, None) => "none".into(),
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {median} | {max} | {clean_median} | {} | {} | {} | {} | {behind} | {lost} | {} |",
                    crash.name(),
                    label(system, profile),
                    profile.describe(),
                    rs.len(),
                    summarize(&failed_writes).map_or("-".into(), |s| format!("{}", s.median)),
                    roles(&rs),
                    fmt(summarize(&prior).map(|s| s.median)),
                    fmt(summarize(&after).map(|s| s.median)),
                    per_run.join(", ")
                );
            }
        }
    }
}

/// "pgbaton" or "Patroni 3.0.2 + HAProxy (seed checks)".
fn label(system: System, profile: Profile) -> String {
    match system {
        System::Pgbaton => "pgbaton (direct to members)".into(),
        System::PgbatonRouter => "pgbaton (through its router)".into(),
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
            took_over: gap.map(|_| "node2".into()),
            gap_s: gap,
            crash_to_write_s: gap,
            clean_s: gap.map(|g| g + 1.0),
            failed_statements: 3,
            failed_writes: 1,
            lost_acked: Some(0),
            rewound: (crash == Crash::Switchover).then_some(false),
            old_leader_streams: (crash == Crash::Switchover).then_some(true),
            limit_s: Some(120.0),
            leader_seen_s: None,
            leader_after: None,
            leader_timeline_before: None,
            leader_timeline_after: None,
            prior: None,
            settled_at_start: None,
            timelines_at_event: Vec::new(),
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
        assert!(!md.contains("timeline switch"), "{md}");
    }

    #[test]
    fn runs_through_the_router_have_their_own_rows() {
        let runs = vec![
            run(System::Pgbaton, Profile::Default, Crash::Node, Some(3.5)),
            run(
                System::PgbatonRouter,
                Profile::Default,
                Crash::Node,
                Some(3.6),
            ),
        ];
        let md = markdown(&runs, &[]);
        assert!(
            md.contains("| node | pgbaton (direct to members) |"),
            "{md}"
        );
        assert!(
            md.contains("| node | pgbaton (through its router) |"),
            "{md}"
        );
        assert!(md.contains("| 3.60 |"), "{md}");
    }

    #[test]
    fn capped_runs_count_as_longest() {
        assert_eq!(
            capped_stats(&[Some(4.0), Some(3.0), Some(5.0)], Some(120.0)),
            ("4.00".into(), "5.00".into())
        );
        assert_eq!(
            capped_stats(&[Some(4.0), None, Some(5.0)], Some(120.0)),
            ("5.00".into(), "> 120 s".into())
        );
        assert_eq!(
            capped_stats(&[None, None, Some(5.0)], Some(120.0)),
            ("> 120 s".into(), "> 120 s".into())
        );
        assert_eq!(
            capped_stats(&[Some(1.0), Some(3.0)], None),
            ("2.00".into(), "3.00".into())
        );
        assert_eq!(capped_stats(&[], None), ("-".into(), "-".into()));
    }

    fn succession_run(took_over: Option<&str>, gap: Option<f64>) -> RunResult {
        let mut r = run(System::Pgbaton, Profile::Default, Crash::NodeTwice, gap);
        r.leader_before = "node2".into();
        r.took_over = took_over.map(Into::into);
        r.prior = Some(crate::succession::Prior {
            event: "node crash".into(),
            leader: "node1".into(),
            new_leader: "node2".into(),
            window_s: Some(3.9),
            first_write_s: 3.9,
            crash_after_s: 10.0,
        });
        r
    }

    #[test]
    fn takeover_roles() {
        assert_eq!(
            takeover_role(&succession_run(Some("node3"), Some(4.0))),
            "third member"
        );
        assert_eq!(
            takeover_role(&succession_run(Some("node1"), Some(4.0))),
            "first leader"
        );
        assert_eq!(takeover_role(&succession_run(None, None)), "nobody");
        let mut s = run(
            System::Pgbaton,
            Profile::Default,
            Crash::SwitchoverNocandidate,
            Some(0.3),
        );
        assert_eq!(takeover_role(&s), "a replica");
        s.took_over = Some("node1".into());
        assert_eq!(takeover_role(&s), "old leader itself");
    }

    #[test]
    fn succession_rows() {
        let runs = vec![
            succession_run(Some("node3"), Some(4.0)),
            succession_run(Some("node3"), Some(3.5)),
            succession_run(None, None),
        ];
        let md = markdown(&runs, &[]);
        assert!(
            md.contains("## Faults soon after a timeline switch"),
            "{md}"
        );
        assert!(
            md.contains("| node-twice | pgbaton (direct to members) | ttl 4 / loop_wait 1 / retry_timeout 1.5 (file silent) | 3 | 4.00 | > 120 s |"),
            "{md}"
        );
        assert!(
            md.contains("| third member 2, nobody 1 | 3.90 | 10.00 | 0 of 3 |"),
            "{md}"
        );
        assert!(md.contains("| 4.00, 3.50, none |"), "{md}");
    }
}
