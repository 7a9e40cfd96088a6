//! The summary printed at the end: medians, min/max and per-run figures as Markdown tables,
//! plus an optional JSON file with every raw figure.

use std::fmt::Write as _;

use serde::Serialize;

use crate::crash::Crash;
use crate::profile::Profile;
use crate::scenario::{AgentMemory, RunResult};
use crate::stats::summarize;

/// Everything one bench invocation measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub environment: Vec<(String, String)>,
    pub runs: Vec<RunResult>,
    pub memory: Vec<AgentMemory>,
    /// Errors that cut a profile short (the figures before them are kept).
    pub errors: Vec<String>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Environment\n");
        for (k, v) in &self.environment {
            let _ = writeln!(out, "- {k}: {v}");
        }
        if self.runs.iter().any(|r| r.crash != Crash::Switchover) {
            self.gap_table(&mut out);
        }
        if self.runs.iter().any(|r| r.crash == Crash::Switchover) {
            self.switchover_table(&mut out);
        }
        if !self.memory.is_empty() {
            self.memory_table(&mut out);
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\n## Errors\n");
            for e in &self.errors {
                let _ = writeln!(out, "- {e}");
            }
        }
        out
    }

    fn gap_table(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Write-unavailability window (seconds)\n");
        let _ = writeln!(
            out,
            "| crash | profile | runs | gap median | gap min | gap max | crash→write median | acked writes lost (total) | per-run gaps |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for crash in [Crash::Node, Crash::Postmaster] {
            for profile in Profile::ALL {
                self.gap_row(out, crash, profile);
            }
        }
    }

    fn switchover_table(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Planned switchover (seconds)\n");
        let _ = writeln!(
            out,
            "| profile | runs | gap median | gap min | gap max | all writes ok after (median) | failed statements per run | failed writes per run | old leader streams again | pg_rewind ran | per-run gaps |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for profile in Profile::ALL {
            let runs: Vec<&RunResult> = self
                .runs
                .iter()
                .filter(|r| r.crash == Crash::Switchover && r.profile == profile)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let gaps: Vec<f64> = runs.iter().filter_map(|r| r.gap_s).collect();
            let clean: Vec<f64> = runs.iter().filter_map(|r| r.clean_s).collect();
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            let list = |f: &dyn Fn(&RunResult) -> String| {
                runs.iter().map(|r| f(r)).collect::<Vec<_>>().join(", ")
            };
            let count = |f: &dyn Fn(&RunResult) -> bool| runs.iter().filter(|r| f(r)).count();
            let g = summarize(&gaps);
            let _ = writeln!(
                out,
                "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} of {} | {} of {} | {} |",
                profile.describe(),
                gaps.len(),
                runs.len(),
                fmt(g.map(|s| s.median)),
                fmt(g.map(|s| s.min)),
                fmt(g.map(|s| s.max)),
                fmt(summarize(&clean).map(|s| s.median)),
                list(&|r| r.failed_statements.to_string()),
                list(&|r| r.failed_writes.to_string()),
                count(&|r| r.old_leader_streams == Some(true)),
                runs.len(),
                count(&|r| r.rewound == Some(true)),
                runs.len(),
                list(&|r| r.gap_s.map_or("none".to_string(), |g| format!("{g:.2}"))),
            );
        }
    }

    fn memory_table(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Agent resident memory (MiB, VmRSS)\n");
        let _ = writeln!(
            out,
            "| profile | agents | RSS median | RSS min | RSS max | peak (VmHWM) max | after (s) |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for profile in Profile::ALL {
            let m: Vec<&AgentMemory> = self
                .memory
                .iter()
                .filter(|m| m.profile == profile)
                .collect();
            let rss: Vec<f64> = m.iter().map(|m| m.rss_kb as f64 / 1024.0).collect();
            let Some(s) = summarize(&rss) else { continue };
            let peak = m.iter().map(|m| m.peak_kb).max().unwrap_or(0) as f64 / 1024.0;
            let after = m.iter().map(|m| m.after_s).fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
                profile.describe(),
                s.n,
                s.median,
                s.min,
                s.max,
                peak,
                after
            );
        }
    }

    fn gap_row(&self, out: &mut String, crash: Crash, profile: Profile) {
        let runs: Vec<&RunResult> = self
            .runs
            .iter()
            .filter(|r| r.crash == crash && r.profile == profile)
            .collect();
        if runs.is_empty() {
            return;
        }
        let gaps: Vec<f64> = runs.iter().filter_map(|r| r.gap_s).collect();
        let to_write: Vec<f64> = runs.iter().filter_map(|r| r.crash_to_write_s).collect();
        let lost: usize = runs.iter().filter_map(|r| r.lost_acked).sum();
        let per_run: Vec<String> = runs
            .iter()
            .map(|r| r.gap_s.map_or("none".to_string(), |g| format!("{g:.2}")))
            .collect();
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let g = summarize(&gaps);
        let _ = writeln!(
            out,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} |",
            crash.name(),
            profile.describe(),
            gaps.len(),
            runs.len(),
            fmt(g.map(|s| s.median)),
            fmt(g.map(|s| s.min)),
            fmt(g.map(|s| s.max)),
            fmt(summarize(&to_write).map(|s| s.median)),
            lost,
            per_run.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switchover_table_counts_failures_and_rewinds() {
        let report = Report {
            runs: vec![
                run(Profile::Default, Crash::Switchover, Some(0.3)),
                run(Profile::Default, Crash::Switchover, Some(0.5)),
            ],
            ..Report::default()
        };
        let md = report.markdown();
        assert!(
            md.contains("| ttl 4 / loop_wait 1 / retry_timeout 1.5 (file silent) | 2/2 | 0.40 | 0.30 | 0.50 | 0.40 | 2, 2 | 0, 0 | 2 of 2 | 0 of 2 | 0.30, 0.50 |"),
            "{md}"
        );
        assert!(
            !md.contains("crash→write median"),
            "no crash table without crashes: {md}"
        );
    }

    fn run(profile: Profile, crash: Crash, gap: Option<f64>) -> RunResult {
        RunResult {
            system: crate::target::System::Pgbaton,
            profile,
            crash,
            run: 1,
            leader_before: "node1".into(),
            candidate: None,
            member_after: gap.map(|_| "node2".into()),
            took_over: None,
            gap_s: gap,
            crash_to_write_s: gap.map(|g| g - 0.03),
            clean_s: gap,
            failed_statements: 2,
            failed_writes: 0,
            lost_acked: Some(1),
            rewound: (crash == Crash::Switchover).then_some(false),
            old_leader_streams: (crash == Crash::Switchover).then_some(true),
            limit_s: None,
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
    fn summary_row_has_median_min_max_and_every_run() {
        let report = Report {
            runs: vec![
                run(Profile::Fast, Crash::Node, Some(2.0)),
                run(Profile::Fast, Crash::Node, Some(3.0)),
                run(Profile::Fast, Crash::Node, None),
            ],
            ..Report::default()
        };
        let md = report.markdown();
        assert!(
            md.contains("| node | ttl 2 / loop_wait 0.5 / retry_timeout 0.5 | 2/3 | 2.50 | 2.00 | 3.00 | 2.47 | 3 | 2.00, 3.00, none |"),
            "{md}"
        );
        assert!(!md.contains("| postmaster |"), "no row without runs");
        assert!(
            !md.contains("Planned switchover"),
            "no switchover table without runs"
        );
        assert!(
            !md.contains("resident memory"),
            "no memory table without figures"
        );
    }
}
