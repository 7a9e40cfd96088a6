//! Reading the server log for what only the log says: that the upstream of a replica no longer
//! has the WAL it asks for. The WAL receiver logs
//!
//! ```text
//! FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000010000000000000003 has already been removed
//! ```
//!
//! each time it tries (every `wal_retrieve_retry_interval`), and
//! `started streaming WAL from primary at 0/3000000 on timeline 1` when streaming starts.
//! A replica whose data forked off the upstream's history (it holds WAL the upstream never
//! had: an old primary, or a member rewound against a leader that was lost before the
//! replica became consistent) is told
//!
//! ```text
//! FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/3000000 on timeline 1 is not in this server's history
//! ```
//!
//! or its startup process logs `new timeline 2 forked off current database system timeline
//! 1 before current recovery point 0/3000060`.
//! The scanner reads only what was appended since its last call, so it costs nothing while
//! the log is quiet. (Messages are matched in English: with a translated `lc_messages` the
//! agent relies on comparing positions instead.)

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Never read more than this much of a log in one call (the newest part counts).
const MAX_READ: u64 = 4 << 20;

/// Follows one log file from an offset.
#[derive(Debug, Clone)]
pub struct WalLogScanner {
    path: PathBuf,
    offset: u64,
    /// What the upstream or the startup process last said stops streaming, unless
    /// streaming started after that.
    missing: Option<StreamTrouble>,
}

/// Why a replica cannot stream from its upstream, as only its log says.
///
/// `Forked` also covers a replica on a newer timeline than its upstream's ("highest timeline
/// N of the primary is behind recovery timeline M": its history holds a promotion the
/// cluster abandoned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTrouble {
    /// The upstream removed this WAL segment, which the replica still needs.
    SegmentRemoved(String),
    /// The replica's data forked off the upstream's history before its recovery point: it
    /// must be rewound (the line that said so).
    Forked(String),
}

impl WalLogScanner {
    /// Scan `path` from its current end: what was logged before does not count (call this
    /// right before starting the server).
    pub fn from_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        WalLogScanner {
            path: path.to_path_buf(),
            offset,
            missing: None,
        }
    }

    /// Scan `path` from `offset`.
    pub fn from_offset(path: &Path, offset: u64) -> Self {
        WalLogScanner {
            path: path.to_path_buf(),
            offset,
            missing: None,
        }
    }

    /// Read what was appended since the last call; what last kept the replica from
    /// streaming, if streaming has not started since. A log that shrank (rotated, truncated)
    /// is read again from its start.
    pub fn poll(&mut self) -> Option<StreamTrouble> {
        let Ok(mut file) = File::open(&self.path) else {
            return self.missing.clone();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
        }
        let from = self.offset.max(len.saturating_sub(MAX_READ));
        if len <= from || file.seek(SeekFrom::Start(from)).is_err() {
            return self.missing.clone();
        }
        let mut bytes = Vec::with_capacity((len - from) as usize);
        if file.take(len - from).read_to_end(&mut bytes).is_err() {
            return self.missing.clone();
        }
        // Only whole lines: a line still being written is read at the next call.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return self.missing.clone();
        };
        self.offset = from + end as u64 + 1;
        let text = String::from_utf8_lossy(&bytes[..end]);
        for line in text.lines() {
            match parse_line(line) {
                Some(LogEvent::SegmentRemoved(segment)) => {
                    self.missing = Some(StreamTrouble::SegmentRemoved(segment))
                }
                Some(LogEvent::Forked) => {
                    self.missing = Some(StreamTrouble::Forked(line.trim().to_string()))
                }
                Some(LogEvent::StreamingStarted) => self.missing = None,
                None => {}
            }
        }
        self.missing.clone()
    }
}

/// What a log line says about streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// "requested WAL segment <name> has already been removed".
    SegmentRemoved(String),
    /// "started streaming WAL from primary at ...".
    StreamingStarted,
    /// "requested starting point ... is not in this server's history", "highest timeline N of
    /// the primary is behind recovery timeline M", or "new timeline N forked off current
    /// database system timeline M before current recovery point ...".
    Forked,
}

/// The streaming event a line reports, if any.
pub fn parse_line(line: &str) -> Option<LogEvent> {
    const REMOVED: &str = "requested WAL segment ";
    if let Some(at) = line.find(REMOVED) {
        let rest = &line[at + REMOVED.len()..];
        let (segment, tail) = rest.split_once(' ')?;
        let is_segment = segment.len() == 24 && segment.bytes().all(|b| b.is_ascii_hexdigit());
        return (is_segment && tail.starts_with("has already been removed"))
            .then(|| LogEvent::SegmentRemoved(segment.to_string()));
    }
    if line.contains("is not in this server's history")
        || line.contains("of the primary is behind recovery timeline")
        || (line.contains("forked off current database system timeline")
            && line.contains("before current recovery point"))
    {
        return Some(LogEvent::Forked);
    }
    line.contains("started streaming WAL from primary")
        .then_some(LogEvent::StreamingStarted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const REMOVED: &str = "2026-11-26 14:50:25.970 UTC [4242] FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000010000000000000003 has already been removed";
    const STARTED: &str = "2026-11-26 14:50:26.100 UTC [4243] LOG:  started streaming WAL from primary at 0/3000000 on timeline 1";

    #[test]
    fn lines_are_recognised() {
        assert_eq!(
            parse_line(REMOVED),
            Some(LogEvent::SegmentRemoved("000000010000000000000003".into()))
        );
        assert_eq!(parse_line(STARTED), Some(LogEvent::StreamingStarted));
        assert_eq!(
            parse_line("2026-12-05 16:50:00.000 UTC [77] FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/3000000 on timeline 1 is not in this server's history"),
            Some(LogEvent::Forked)
        );
        assert_eq!(
            parse_line("2026-12-05 16:50:00.000 UTC [78] FATAL:  highest timeline 3 of the primary is behind recovery timeline 4"),
            Some(LogEvent::Forked)
        );
        assert_eq!(
            parse_line("2026-12-05 16:50:00.000 UTC [76] LOG:  new timeline 2 forked off current database system timeline 1 before current recovery point 0/3000060"),
            Some(LogEvent::Forked)
        );
        assert_eq!(parse_line("LOG:  database system is ready"), None);
        assert_eq!(
            parse_line("ERROR:  requested WAL segment pg_wal/x has already been removed"),
            None
        );
    }

    #[test]
    fn the_scanner_follows_the_file_and_forgets_a_removal_once_streaming_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("postgresql.log");
        let mut log = File::create(&path).expect("create log");
        writeln!(log, "{REMOVED}").expect("write");
        // Started after that line: it does not count.
        let mut scanner = WalLogScanner::from_end(&path);
        assert_eq!(scanner.poll(), None);
        writeln!(log, "LOG:  entering standby mode").expect("write");
        write!(log, "{REMOVED}").expect("write");
        assert_eq!(scanner.poll(), None, "a line being written is not read yet");
        writeln!(log).expect("write");
        assert_eq!(scanner.poll(), Some(removed()));
        assert_eq!(
            scanner.poll(),
            Some(removed()),
            "remembered while nothing new is logged"
        );
        writeln!(log, "{STARTED}").expect("write");
        assert_eq!(scanner.poll(), None);
        // A truncated log is read again from its start.
        drop(log);
        std::fs::write(&path, format!("{REMOVED}\n")).expect("truncate");
        assert_eq!(scanner.poll(), Some(removed()));
        let mut from_start = WalLogScanner::from_offset(&path, 0);
        assert!(from_start.poll().is_some());
        // A fork: the line itself is the evidence.
        let forked = "FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/3000000 on timeline 1 is not in this server's history";
        std::fs::write(&path, format!("{REMOVED}\n{forked}\n")).expect("write");
        let mut scanner = WalLogScanner::from_offset(&path, 0);
        assert_eq!(
            scanner.poll(),
            Some(StreamTrouble::Forked(forked.to_string()))
        );
    }

    fn removed() -> StreamTrouble {
        StreamTrouble::SegmentRemoved("000000010000000000000003".into())
    }
}
