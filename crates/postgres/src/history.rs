//! Timeline history files (`pg_wal/<TLI>.history`): where each earlier timeline ended.
//! PostgreSQL writes one when it promotes; each line is `<parent TLI>\t<switch LSN>\t<reason>`.

use std::path::Path;

use crate::error::PgError;
use crate::lsn::{format_lsn, parse_lsn};
use crate::run::{absolute, run_as, write_owned};
use crate::spec::PgSpec;

/// One line of a history file: `timeline` ended at `switch_lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEnd {
    pub timeline: u32,
    pub switch_lsn: u64,
    pub reason: String,
}

/// The history of `timeline` as its history file in `data_dir/pg_wal` tells it (empty for
/// timeline 1, which has none).
pub fn read_timeline_history(data_dir: &Path, timeline: u32) -> Result<Vec<TimelineEnd>, PgError> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let path = data_dir
        .join("pg_wal")
        .join(format!("{timeline:08X}.history"));
    let text = std::fs::read_to_string(&path).map_err(|e| PgError::io(&path, e))?;
    Ok(parse_timeline_history(&text))
}

/// Puts a history file for `timeline` into `pg_wal` unless one is there, with a line for
/// each earlier timeline in `ended` (timeline, where it ended). PostgreSQL picks the
/// timeline after the newest whose history file it finds when it promotes: this is how a
/// member promoted from an older timeline is kept from reusing the id of a branch whose
/// leader was lost (a branch other members' data may be on). Returns whether it wrote one.
pub fn install_timeline_history(
    spec: &PgSpec,
    timeline: u32,
    ended: &[(u32, u64)],
) -> Result<bool, PgError> {
    let path = absolute(&spec.data_dir)?
        .join("pg_wal")
        .join(format!("{timeline:08X}.history"));
    if path.exists() {
        return Ok(false);
    }
    write_owned(
        &path,
        &render_timeline_history(timeline, ended),
        run_as(spec)?.as_ref(),
    )?;
    Ok(true)
}

/// The text of `timeline`'s history file: one line per earlier timeline of `ended`, in
/// increasing order, as PostgreSQL writes them.
pub fn render_timeline_history(timeline: u32, ended: &[(u32, u64)]) -> String {
    let mut rows: Vec<(u32, u64)> = ended
        .iter()
        .copied()
        .filter(|&(t, _)| t < timeline)
        .collect();
    rows.sort_unstable();
    rows.dedup_by_key(|(t, _)| *t);
    rows.iter()
        .map(|&(t, lsn)| format!("{t}\t{}\tno recovery target specified\n", format_lsn(lsn)))
        .collect()
}

/// Parses a history file's text; comment, blank and malformed lines are skipped.
pub fn parse_timeline_history(text: &str) -> Vec<TimelineEnd> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.splitn(3, char::is_whitespace);
            let timeline = fields.next()?.parse().ok()?;
            let switch_lsn = parse_lsn(fields.next()?.trim())?;
            let reason = fields.next().unwrap_or("").trim().to_string();
            Some(TimelineEnd {
                timeline,
                switch_lsn,
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_file_parses_line_by_line() {
        let text = "1\t0/3000148\tno recovery target specified\n\n# comment\n2\t0/50000A0\tno recovery target specified\n";
        assert_eq!(
            parse_timeline_history(text),
            vec![
                TimelineEnd {
                    timeline: 1,
                    switch_lsn: 0x3000148,
                    reason: "no recovery target specified".into()
                },
                TimelineEnd {
                    timeline: 2,
                    switch_lsn: 0x50000A0,
                    reason: "no recovery target specified".into()
                },
            ]
        );
    }

    #[test]
    fn a_rendered_history_file_reads_back_with_only_earlier_timelines() {
        let text = render_timeline_history(3, &[(4, 0x90), (2, 0x50000A0), (1, 0x3000148)]);
        assert_eq!(
            text,
            "1\t0/3000148\tno recovery target specified\n2\t0/50000A0\tno recovery target specified\n"
        );
        let rows: Vec<(u32, u64)> = parse_timeline_history(&text)
            .into_iter()
            .map(|l| (l.timeline, l.switch_lsn))
            .collect();
        assert_eq!(rows, vec![(1, 0x3000148), (2, 0x50000A0)]);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_timeline_history("x\tnot-an-lsn\n3\n").is_empty());
    }
}
