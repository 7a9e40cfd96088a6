//! The records the checker works from: every client operation (invoke / ok / fail / unknown
//! with timestamps, Jepsen-style), every successful read of the readers, every monitor round
//! in which two or more members said they were writable, all on one clock: seconds since the
//! run started.

use std::time::Instant;

/// The run's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// How a write ended, as the client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the commit returned.
    Ok,
    /// Definitely not committed (the server refused it, e.g. read-only).
    Fail,
    /// Maybe committed: timeout or connection lost after the statement was sent.
    Unknown,
}

/// One INSERT of a unique id.
#[derive(Debug, Clone)]
pub struct Op {
    pub id: i64,
    pub client: u16,
    /// Index of the member the write was sent to.
    pub member: usize,
    pub invoke: f64,
    pub complete: f64,
    pub outcome: Outcome,
    /// For Ok: the timeline the server wrote on and its WAL position (bytes) at the insert.
    pub timeline: Option<i32>,
    pub lsn: Option<u64>,
    /// For Fail and Unknown: why.
    pub error: Option<String>,
}

impl Op {
    /// One CSV line: id,client,member,invoke,complete,outcome,timeline,lsn,error.
    pub fn csv(&self, member_name: &str) -> String {
        let opt = |v: Option<String>| v.unwrap_or_default();
        format!(
            "{},{},{},{:.4},{:.4},{:?},{},{},\"{}\"",
            self.id,
            self.client,
            member_name,
            self.invoke,
            self.complete,
            self.outcome,
            opt(self.timeline.map(|t| t.to_string())),
            opt(self.lsn.map(pgbaton_core::pg_text::format_lsn)),
            opt(self.error.clone()).replace('"', "'")
        )
    }
}

pub const CSV_HEADER: &str = "id,client,member,invoke_s,complete_s,outcome,timeline,lsn,error";

/// Which way a reader picked the member it read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// The member accepting writes, found like the writers find it (libpq
    /// `target_session_attrs=read-write`), kept until a read fails.
    Leader,
    /// Any member, in turn (a hot-standby read; may be stale).
    Replica,
}

/// One successful read: the largest id of every writing client visible on the member.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub reader: u16,
    pub path: ReadPath,
    pub member: usize,
    pub invoke: f64,
    pub complete: f64,
    /// `pg_is_in_recovery()` in the statement that read the ids.
    pub in_recovery: bool,
    /// A primary's timeline; a replica's `received_tli` (None when it receives nothing).
    pub timeline: Option<i32>,
    /// Index = writing client; the largest id of that client visible (0: none yet).
    pub max_ids: Vec<i64>,
}

/// A monitor round in which two or more members answered `pg_is_in_recovery() = false`.
#[derive(Debug, Clone, PartialEq)]
pub struct DualRound {
    pub start: f64,
    pub end: f64,
    /// Indexes of the members that answered false.
    pub writable: Vec<usize>,
}

pub use pgbaton_core::pg_text::parse_lsn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_becomes_one_csv_line() {
        let op = Op {
            id: 5,
            client: 1,
            member: 0,
            invoke: 1.5,
            complete: 1.75,
            outcome: Outcome::Ok,
            timeline: Some(2),
            lsn: Some(0x3000060),
            error: None,
        };
        assert_eq!(op.csv("n1"), "5,1,n1,1.5000,1.7500,Ok,2,0/3000060,\"\"");
    }

    #[test]
    fn lsn_text_becomes_bytes() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
