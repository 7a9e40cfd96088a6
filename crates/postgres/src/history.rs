//! Timeline history files (`pg_wal/<TLI>.history`): where each earlier timeline ended.
//! PostgreSQL writes one when it promotes; each line is `<parent TLI>\t<switch LSN>\t<reason>`.

use std::path::Path;

use crate::error::PgError;
use crate::lsn::parse_lsn;

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
    fn garbage_lines_are_skipped() {
        assert!(parse_timeline_history("x\tnot-an-lsn\n3\n").is_empty());
    }
}
