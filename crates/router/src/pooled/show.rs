//! `SHOW pgbaton.last_commit_lsn` through the extended query protocol (JDBC, tokio-postgres,
//! any driver that prepares its statements): on the auto listener the router answers the
//! Parse, Bind, Describe, Execute, Close and Sync of that statement itself, as it answers the
//! simple query, so that the value is the client's token at the time of each Execute.
//!
//! Answered here only when nothing of the client's is at the server (its batch begins with
//! the SHOW, as drivers send a standalone query); a SHOW pipelined behind statements the
//! server has not answered goes to the server, which does not know the name (an ERROR). A
//! prepared statement that is the SHOW is the client's own name for it: the server never
//! sees it.

use std::collections::{HashMap, HashSet};

use crate::pooled::ryw::{format_lsn, is_show_token, TOKEN_NAME};
use crate::pooled::txn::frontend::{message, Frontend};

/// The SHOW statements and portals of one client.
#[derive(Debug, Default)]
pub(crate) struct LocalShow {
    /// The client's names of prepared statements that are the SHOW ("": the unnamed one).
    statements: HashSet<Vec<u8>>,
    /// Portals bound to one of them, and whether each returns its column in binary.
    portals: HashMap<Vec<u8>, bool>,
    /// Every message of the batch so far was answered here (so is its Sync).
    batch: bool,
}

/// What became of a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Answered into the client's output.
    Answered,
    /// Not the SHOW's: the relay handles it.
    Pass,
}

impl LocalShow {
    /// Would `msg` be answered here if the client were quiet (the relay then holds it until
    /// the server has answered what was sent before it)?
    pub(crate) fn wants(&self, msg: &Frontend<'_>) -> bool {
        match *msg {
            Frontend::Parse { definition, .. } => is_show_definition(definition),
            Frontend::Bind { statement, .. } => self.statements.contains(statement),
            Frontend::Describe { kind: b'S', name } | Frontend::Close { kind: b'S', name } => {
                self.statements.contains(name)
            }
            Frontend::Describe { name, .. } | Frontend::Close { name, .. } => {
                self.portals.contains_key(name)
            }
            Frontend::Execute { portal } => self.portals.contains_key(portal),
            _ => false,
        }
    }

    /// Handle `msg`. `quiet`: nothing the client sent is at the server or waits for its
    /// Sync there; `token`: the client's last commit; `status`: the transaction status for
    /// a ReadyForQuery.
    pub(crate) fn message(
        &mut self,
        msg: &Frontend<'_>,
        quiet: bool,
        token: u64,
        status: u8,
        out: &mut bytes::BytesMut,
    ) -> Step {
        let here = quiet || self.batch;
        let step = match *msg {
            Frontend::Parse { name, definition } => {
                self.statements.remove(name);
                if here && is_show_definition(definition) {
                    self.statements.insert(name.to_vec());
                    out.extend_from_slice(&message(b'1', &[]));
                    Step::Answered
                } else {
                    Step::Pass
                }
            }
            Frontend::Bind {
                portal,
                statement,
                rest,
            } => {
                self.portals.remove(portal);
                if here && self.statements.contains(statement) {
                    self.portals.insert(portal.to_vec(), binary_result(rest));
                    out.extend_from_slice(&message(b'2', &[]));
                    Step::Answered
                } else {
                    Step::Pass
                }
            }
            Frontend::Describe { kind: b'S', name } if here && self.statements.contains(name) => {
                out.extend_from_slice(&message(b't', &[&0u16.to_be_bytes()]));
                out.extend_from_slice(&row_description(false));
                Step::Answered
            }
            Frontend::Describe { kind: b'P', name } if here => match self.portals.get(name) {
                Some(&binary) => {
                    out.extend_from_slice(&row_description(binary));
                    Step::Answered
                }
                None => Step::Pass,
            },
            Frontend::Execute { portal } if here && self.portals.contains_key(portal) => {
                out.extend_from_slice(&data_row(token));
                out.extend_from_slice(&message(b'C', &[b"SHOW\0"]));
                Step::Answered
            }
            Frontend::Close { kind, name } => {
                let known = match kind {
                    b'S' => self.statements.remove(name),
                    _ => self.portals.remove(name).is_some(),
                };
                if known && here {
                    out.extend_from_slice(&message(b'3', &[]));
                    Step::Answered
                } else {
                    Step::Pass
                }
            }
            Frontend::Sync if self.batch => {
                out.extend_from_slice(&crate::pooled::txn::ready_for_query(status));
                self.batch = false;
                return Step::Answered;
            }
            Frontend::Flush if self.batch => Step::Answered,
            _ => Step::Pass,
        };
        self.batch = step == Step::Answered;
        step
    }
}

/// A Parse definition (query, NUL, parameter types) of the SHOW, with no parameters.
fn is_show_definition(definition: &[u8]) -> bool {
    let Some(nul) = definition.iter().position(|b| *b == 0) else {
        return false;
    };
    definition[nul + 1..] == [0, 0] && is_show_token(&definition[..nul])
}

/// Does a Bind (after its statement name: parameter formats, parameters, result formats) ask
/// for binary results? One column: the one result format code, or the first of several.
fn binary_result(rest: &[u8]) -> bool {
    let word = |at: usize| -> Option<usize> {
        rest.get(at..at + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as usize)
    };
    let read = || -> Option<bool> {
        let formats = word(0)?;
        let mut at = 2 + 2 * formats;
        let params = word(at)?;
        at += 2;
        for _ in 0..params {
            let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
            at += 4 + usize::try_from(len).unwrap_or(0);
        }
        let results = word(at)?;
        Some(results > 0 && word(at + 2)? == 1)
    };
    read().unwrap_or(false)
}

/// The SHOW's one text column (`binary`: its format code 1; a text value is the same bytes).
pub(crate) fn row_description(binary: bool) -> Vec<u8> {
    let mut field = TOKEN_NAME.as_bytes().to_vec();
    field.push(0);
    field.extend_from_slice(&0u32.to_be_bytes()); // table
    field.extend_from_slice(&0u16.to_be_bytes()); // column
    field.extend_from_slice(&25u32.to_be_bytes()); // text
    field.extend_from_slice(&(-1i16).to_be_bytes());
    field.extend_from_slice(&(-1i32).to_be_bytes());
    field.extend_from_slice(&u16::from(binary).to_be_bytes());
    message(b'T', &[&1u16.to_be_bytes(), &field])
}

/// The SHOW's row: the token as PostgreSQL writes a WAL position.
pub(crate) fn data_row(token: u64) -> Vec<u8> {
    let value = format_lsn(token);
    message(
        b'D',
        &[
            &1u16.to_be_bytes(),
            &(value.len() as i32).to_be_bytes(),
            value.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pooled::txn::frontend::parse;

    fn run(show: &mut LocalShow, quiet: bool, msgs: &[Vec<u8>]) -> (Vec<Step>, Vec<u8>) {
        let mut out = bytes::BytesMut::new();
        let steps = msgs
            .iter()
            .map(|raw| {
                show.message(
                    &parse(raw).expect("parse"),
                    quiet,
                    0x16B3748,
                    b'I',
                    &mut out,
                )
            })
            .collect();
        (steps, out.to_vec())
    }

    fn parse_msg(name: &str, query: &str) -> Vec<u8> {
        message(
            b'P',
            &[name.as_bytes(), b"\0", query.as_bytes(), b"\0", &[0, 0]],
        )
    }

    fn bind(portal: &str, statement: &str, result_format: Option<u16>) -> Vec<u8> {
        let mut rest = vec![0, 0, 0, 0];
        match result_format {
            Some(f) => {
                rest.extend_from_slice(&1u16.to_be_bytes());
                rest.extend_from_slice(&f.to_be_bytes());
            }
            None => rest.extend_from_slice(&[0, 0]),
        }
        message(
            b'B',
            &[portal.as_bytes(), b"\0", statement.as_bytes(), b"\0", &rest],
        )
    }

    fn execute(portal: &str) -> Vec<u8> {
        message(b'E', &[portal.as_bytes(), b"\0", &[0, 0, 0, 0]])
    }

    fn tags(out: &[u8]) -> String {
        let mut tags = String::new();
        let mut at = 0;
        while at < out.len() {
            tags.push(out[at] as char);
            let len = u32::from_be_bytes(out[at + 1..at + 5].try_into().unwrap()) as usize;
            at += 1 + len;
        }
        tags
    }

    #[test]
    fn an_unnamed_show_is_answered_message_by_message() {
        let mut show = LocalShow::default();
        let (steps, out) = run(
            &mut show,
            true,
            &[
                parse_msg("", "SHOW pgbaton.last_commit_lsn"),
                bind("", "", None),
                message(b'D', &[b"P\0"]),
                execute(""),
                message(b'S', &[]),
            ],
        );
        assert!(steps.iter().all(|s| *s == Step::Answered), "{steps:?}");
        assert_eq!(tags(&out), "12TDCZ");
        assert!(out.windows(9).any(|w| w == b"0/16B3748"));
    }

    #[test]
    fn a_named_show_is_answered_in_later_batches_until_closed() {
        let mut show = LocalShow::default();
        let describe = message(b'D', &[b"Ss0\0"]);
        let (_, out) = run(
            &mut show,
            true,
            &[
                parse_msg("s0", "show pgbaton.last_commit_lsn"),
                describe,
                message(b'S', &[]),
            ],
        );
        assert_eq!(tags(&out), "1tTZ");
        let (steps, out) = run(
            &mut show,
            true,
            &[bind("", "s0", Some(1)), execute(""), message(b'S', &[])],
        );
        assert!(steps.iter().all(|s| *s == Step::Answered));
        assert_eq!(tags(&out), "2DCZ");
        let (steps, out) = run(
            &mut show,
            true,
            &[message(b'C', &[b"Ss0\0"]), message(b'S', &[])],
        );
        assert!(steps.iter().all(|s| *s == Step::Answered));
        assert_eq!(tags(&out), "3Z");
        // Closed: a Bind of that name is the server's business now.
        let (steps, _) = run(&mut show, true, &[bind("", "s0", None)]);
        assert_eq!(steps, vec![Step::Pass]);
    }

    #[test]
    fn other_statements_and_a_show_behind_pending_work_pass() {
        let mut show = LocalShow::default();
        let (steps, out) = run(
            &mut show,
            true,
            &[
                parse_msg("", "SELECT 1"),
                bind("", "", None),
                execute(""),
                message(b'S', &[]),
            ],
        );
        assert!(steps.iter().all(|s| *s == Step::Pass), "{steps:?}");
        assert!(out.is_empty());
        let (steps, _) = run(
            &mut show,
            false,
            &[parse_msg("", "SHOW pgbaton.last_commit_lsn")],
        );
        assert_eq!(steps, vec![Step::Pass]);
        // A SHOW with parameter types is not ours either.
        let typed = message(
            b'P',
            &[b"\0SHOW pgbaton.last_commit_lsn\0", &[0, 1, 0, 0, 0, 25]],
        );
        let (steps, _) = run(&mut show, true, &[typed]);
        assert_eq!(steps, vec![Step::Pass]);
    }

    #[test]
    fn a_redefined_name_stops_being_the_show() {
        let mut show = LocalShow::default();
        run(
            &mut show,
            true,
            &[
                parse_msg("", "SHOW pgbaton.last_commit_lsn"),
                message(b'S', &[]),
            ],
        );
        let (steps, _) = run(
            &mut show,
            true,
            &[parse_msg("", "SELECT 2"), bind("", "", None)],
        );
        assert_eq!(steps, vec![Step::Pass, Step::Pass]);
    }

    #[test]
    fn the_bind_result_format_is_read_past_parameters() {
        let mut rest = vec![0, 1, 0, 0]; // one parameter format: text
        rest.extend_from_slice(&[0, 1]); // one parameter
        rest.extend_from_slice(&3i32.to_be_bytes());
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&[0, 1, 0, 1]); // one result format: binary
        assert!(binary_result(&rest));
        assert!(!binary_result(&[0, 0, 0, 0, 0, 0]));
        assert!(!binary_result(&[0, 0, 0, 0, 0, 1, 0, 0]));
        assert!(!binary_result(&[0]));
    }
}
