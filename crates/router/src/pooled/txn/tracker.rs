//! What the relay knows of the conversation on one server connection, without I/O: how
//! many Sync/Query/FunctionCall messages wait for their ReadyForQuery, whether extended
//! messages were sent since the last Sync, the last transaction status — together they say
//! when the connection may go back to the pool — and the client's named prepared
//! statements (PgBouncer 1.21's `max_prepared_statements` scheme).
//!
//! A client's statement `s1` gets a server-side name from its definition (query and
//! parameter types): `pgbaton_<hash>`, so the same statement prepared by many clients is one
//! statement per server connection. A Bind or Describe on a server connection that lacks it
//! is preceded by an injected Close + Parse; their CloseComplete and ParseComplete are
//! swallowed. Responses come in order, so one queue of "the next `1` or `3`" entries, each
//! tagged with its Sync batch, says which to swallow; an ErrorResponse makes the server skip
//! the rest of its batch, so that batch's entries are forgotten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::frontend::{message, Frontend};

/// A named statement as the server knows it.
#[derive(Debug)]
pub(crate) struct Statement {
    pub id: u64,
    /// `pgbaton_<16 hex digits>`.
    pub name: Vec<u8>,
    /// Query and parameter types, as in the client's Parse after its name.
    pub definition: Vec<u8>,
}

impl Statement {
    fn new(definition: &[u8]) -> Statement {
        let digest = Sha256::digest(definition);
        let id = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        Statement {
            id,
            name: format!("pgbaton_{id:016x}").into_bytes(),
            definition: definition.to_vec(),
        }
    }

    fn parse_message(&self) -> Vec<u8> {
        message(b'P', &[&self.name, b"\0", &self.definition])
    }

    fn close_message(&self) -> Vec<u8> {
        message(b'C', &[b"S", &self.name, b"\0"])
    }
}

/// A client's named statements, by the client's names.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    by_name: HashMap<Vec<u8>, Arc<Statement>>,
}

impl Statements {
    /// The client closed `name` while it holds no server connection: forgotten here; the
    /// server connections that prepared it keep their copy (a later Parse of the name
    /// closes it first).
    pub(crate) fn forget(&mut self, name: &[u8]) {
        self.by_name.remove(name);
    }

    /// A statement the client prepared where the router did not see it (a session taken
    /// out of the kernel): prepared again, under its server-side name, where it is used.
    pub(crate) fn import(&mut self, name: Vec<u8>, definition: &[u8]) {
        self.by_name
            .insert(name, Arc::new(Statement::new(definition)));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Expect {
    batch: u64,
    swallow: bool,
}

/// Forward a server message to the client, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Forward,
    Swallow,
}

#[derive(Debug)]
pub(crate) struct Tracker {
    /// Sync, Query and FunctionCall messages sent whose ReadyForQuery has not come.
    pub pending: usize,
    /// Extended-protocol messages sent since the last Sync.
    pub unsynced: bool,
    /// The last ReadyForQuery's transaction status: `I`, `T` or `E`.
    pub status: u8,
    sent_batches: u64,
    answered_batches: u64,
    expected: VecDeque<Expect>,
    /// Syncs sent since the last Execute and before any CopyDone/CopyFail: if that Execute
    /// turns out to be a COPY FROM STDIN, the server ignores them (it ignores Sync in
    /// copy-in mode), so no ReadyForQuery will answer them. tokio-postgres sends one.
    syncs_after_execute: usize,
    copy_end_sent: bool,
    /// The server is in copy-in mode (CopyInResponse seen, no CopyDone/CopyFail sent).
    copy_in: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            pending: 0,
            unsynced: false,
            status: b'I',
            sent_batches: 0,
            answered_batches: 0,
            expected: VecDeque::new(),
            syncs_after_execute: 0,
            copy_end_sent: false,
            copy_in: false,
        }
    }
}

/// `DISCARD ...` or `DEALLOCATE ...` (looked at in place: no copy of the query).
fn is_reset(query: &[u8]) -> bool {
    let start = query
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(query.len());
    let text = &query[start..];
    let starts =
        |word: &[u8]| text.len() >= word.len() && text[..word.len()].eq_ignore_ascii_case(word);
    starts(b"discard") || starts(b"deallocate")
}

impl Tracker {
    /// Nothing in flight and no transaction open: the connection may go back to the pool.
    pub(crate) fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy_in && self.status == b'I'
    }

    fn expect(&mut self, swallow: bool) {
        self.expected.push_back(Expect {
            batch: self.sent_batches,
            swallow,
        });
    }

    fn ensure(&mut self, statement: &Statement, prepared: &mut HashSet<u64>, out: &mut Vec<u8>) {
        if prepared.insert(statement.id) {
            out.extend_from_slice(&statement.close_message());
            self.expect(true);
            out.extend_from_slice(&statement.parse_message());
            self.expect(true);
        }
    }

    /// Translate one client message (`raw`, read as `parsed`) into what the server gets.
    pub(crate) fn client_message(
        &mut self,
        parsed: &Frontend<'_>,
        raw: &[u8],
        statements: &mut Statements,
        prepared: &mut HashSet<u64>,
        out: &mut Vec<u8>,
    ) {
        match *parsed {
            Frontend::Query(text) => {
                self.syncs_after_execute = 0;
                if is_reset(text) {
                    // DISCARD ALL / DEALLOCATE: the server forgets statements; so do we.
                    prepared.clear();
                }
                self.pending += 1;
                self.sent_batches += 1;
                out.extend_from_slice(raw);
            }
            Frontend::FunctionCall => {
                self.pending += 1;
                self.sent_batches += 1;
                out.extend_from_slice(raw);
            }
            Frontend::Sync if self.copy_in => {
                // Ignored by a server in copy-in mode: nothing will answer it.
                out.extend_from_slice(raw);
            }
            Frontend::Sync => {
                self.pending += 1;
                self.sent_batches += 1;
                self.unsynced = false;
                if !self.copy_end_sent {
                    self.syncs_after_execute += 1;
                }
                out.extend_from_slice(raw);
            }
            Frontend::Parse { name, definition } => {
                self.unsynced = true;
                if name.is_empty() {
                    self.expect(false);
                    out.extend_from_slice(raw);
                    return;
                }
                let statement = Arc::new(Statement::new(definition));
                // Close first: the server may hold it already (another client's Parse).
                out.extend_from_slice(&statement.close_message());
                self.expect(true);
                out.extend_from_slice(&statement.parse_message());
                self.expect(false);
                prepared.insert(statement.id);
                statements.by_name.insert(name.to_vec(), statement);
            }
            Frontend::Bind {
                portal,
                statement,
                rest,
            } => {
                self.unsynced = true;
                match statements
                    .by_name
                    .get(statement)
                    .filter(|_| !statement.is_empty())
                {
                    Some(known) => {
                        let known = known.clone();
                        self.ensure(&known, prepared, out);
                        out.extend_from_slice(&message(
                            b'B',
                            &[portal, b"\0", &known.name, b"\0", rest],
                        ));
                    }
                    None => out.extend_from_slice(raw),
                }
            }
            Frontend::Describe { kind: b'S', name } if !name.is_empty() => {
                self.unsynced = true;
                match statements.by_name.get(name) {
                    Some(known) => {
                        let known = known.clone();
                        self.ensure(&known, prepared, out);
                        out.extend_from_slice(&message(b'D', &[b"S", &known.name, b"\0"]));
                    }
                    None => out.extend_from_slice(raw),
                }
            }
            Frontend::Close { kind, name } => {
                self.unsynced = true;
                self.expect(false);
                let removed = (kind == b'S' && !name.is_empty())
                    .then(|| statements.by_name.remove(name))
                    .flatten();
                match removed {
                    Some(statement) => {
                        prepared.remove(&statement.id);
                        out.extend_from_slice(&statement.close_message());
                    }
                    None => out.extend_from_slice(raw),
                }
            }
            Frontend::Execute { .. } => {
                self.unsynced = true;
                self.syncs_after_execute = 0;
                self.copy_end_sent = false;
                out.extend_from_slice(raw);
            }
            Frontend::Describe { .. } | Frontend::Flush => {
                self.unsynced = true;
                out.extend_from_slice(raw);
            }
            Frontend::CopyEnd => {
                self.copy_in = false;
                self.copy_end_sent = true;
                out.extend_from_slice(raw);
            }
            Frontend::Copy | Frontend::Terminate => out.extend_from_slice(raw),
        }
    }

    /// Account for one server message; whether the client sees it.
    pub(crate) fn server_message(&mut self, tag: u8, body: &[u8]) -> Verdict {
        match tag {
            b'1' | b'3' => match self.expected.pop_front() {
                Some(e) if e.swallow => Verdict::Swallow,
                _ => Verdict::Forward,
            },
            b'E' => {
                let batch = self.answered_batches;
                self.expected.retain(|e| e.batch != batch);
                Verdict::Forward
            }
            b'G' => {
                // Copy-in mode: the Syncs sent behind the COPY's Execute get no answer, and
                // neither will those sent until CopyDone/CopyFail.
                self.pending = self.pending.saturating_sub(self.syncs_after_execute);
                self.answered_batches += self.syncs_after_execute as u64;
                self.syncs_after_execute = 0;
                self.copy_in = !self.copy_end_sent;
                Verdict::Forward
            }
            b'Z' => {
                self.pending = self.pending.saturating_sub(1);
                self.answered_batches += 1;
                let answered = self.answered_batches;
                self.expected.retain(|e| e.batch >= answered);
                self.status = body.first().copied().unwrap_or(b'I');
                Verdict::Forward
            }
            _ => Verdict::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frontend::{message_len, parse};
    use super::*;

    /// Feed client messages; returns the server-bound messages as (tag, first name) pairs.
    fn send(
        tracker: &mut Tracker,
        statements: &mut Statements,
        prepared: &mut HashSet<u64>,
        messages: &[Vec<u8>],
    ) -> Vec<(char, String)> {
        let mut out = Vec::new();
        for raw in messages {
            let parsed = parse(raw).expect("valid");
            tracker.client_message(&parsed, raw, statements, prepared, &mut out);
        }
        let mut seen = Vec::new();
        let mut rest = out.as_slice();
        while let Ok(Some(len)) = message_len(rest) {
            let body = &rest[5..len];
            let name = match rest[0] {
                b'P' => body.split(|b| *b == 0).next(),
                b'C' | b'D' => body[1..].split(|b| *b == 0).next(),
                b'B' => body.split(|b| *b == 0).nth(1),
                _ => Some(&b""[..]),
            };
            seen.push((
                rest[0] as char,
                String::from_utf8_lossy(name.unwrap_or_default()).into_owned(),
            ));
            rest = &rest[len..];
        }
        seen
    }

    fn p(name: &str, query: &str) -> Vec<u8> {
        message(
            b'P',
            &[name.as_bytes(), b"\0", query.as_bytes(), b"\0", &[0, 0]],
        )
    }
    fn b(statement: &str) -> Vec<u8> {
        message(
            b'B',
            &[b"\0", statement.as_bytes(), b"\0", &[0, 0, 0, 0, 0, 0]],
        )
    }
    fn e() -> Vec<u8> {
        message(b'E', &[b"\0", &[0, 0, 0, 0]])
    }
    fn s() -> Vec<u8> {
        message(b'S', &[])
    }

    #[test]
    fn a_statement_follows_the_client_to_another_server_connection() {
        let mut statements = Statements::default();
        let (mut first, mut second) = (HashSet::new(), HashSet::new());
        let mut t = Tracker::default();
        let sent = send(
            &mut t,
            &mut statements,
            &mut first,
            &[p("s1", "select 1"), b("s1"), e(), s()],
        );
        let server_name = sent[1].1.clone();
        assert!(server_name.starts_with("pgbaton_"), "{sent:?}");
        assert_eq!(
            sent.iter().map(|(t, _)| *t).collect::<String>(),
            "CPBES",
            "Close first (another client may have prepared it), then Parse"
        );
        assert!(!t.idle() && t.pending == 1);
        // CloseComplete swallowed, ParseComplete, BindComplete, ..., ReadyForQuery.
        assert_eq!(t.server_message(b'3', &[]), Verdict::Swallow);
        assert_eq!(t.server_message(b'1', &[]), Verdict::Forward);
        assert_eq!(t.server_message(b'2', &[]), Verdict::Forward);
        assert_eq!(t.server_message(b'Z', b"I"), Verdict::Forward);
        assert!(t.idle());

        // On another server connection: re-prepared (both answers swallowed), then bound.
        let mut t = Tracker::default();
        let sent = send(&mut t, &mut statements, &mut second, &[b("s1"), e(), s()]);
        assert_eq!(
            sent,
            vec![
                ('C', server_name.clone()),
                ('P', server_name.clone()),
                ('B', server_name.clone()),
                ('E', String::new()),
                ('S', String::new())
            ]
        );
        assert_eq!(t.server_message(b'3', &[]), Verdict::Swallow);
        assert_eq!(t.server_message(b'1', &[]), Verdict::Swallow);
        assert_eq!(t.server_message(b'2', &[]), Verdict::Forward);
        // Once there, no more re-preparing.
        let again = send(&mut t, &mut statements, &mut second, &[b("s1"), e(), s()]);
        assert_eq!(again[0], ('B', server_name.clone()));

        // Close: the client's name is forgotten and the server's copy closed.
        let closed = send(
            &mut t,
            &mut statements,
            &mut second,
            &[message(b'C', &[b"Ss1\0"]), s()],
        );
        assert_eq!(closed[0], ('C', server_name));
        assert_eq!(statements.len(), 0);
        assert!(second.is_empty());
        // An unknown name goes to the server as is (it answers "does not exist").
        let unknown = send(&mut t, &mut statements, &mut second, &[b("nope")]);
        assert_eq!(unknown, vec![('B', "nope".into())]);
    }

    #[test]
    fn an_error_forgets_the_rest_of_its_batch() {
        let mut statements = Statements::default();
        let mut prepared = HashSet::new();
        let mut t = Tracker::default();
        // Batch 0 fails at its first Parse; batch 1 is pipelined behind it.
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[
                p("a", "bad"),
                p("b", "select 2"),
                s(),
                p("c", "select 3"),
                s(),
            ],
        );
        assert_eq!(t.server_message(b'3', &[]), Verdict::Swallow, "a's Close");
        assert_eq!(t.server_message(b'E', b"..."), Verdict::Forward);
        assert_eq!(t.server_message(b'Z', b"I"), Verdict::Forward);
        assert!(!t.idle(), "batch 1 still pending");
        // Batch 1: c's Close (swallowed) and Parse (forwarded).
        assert_eq!(t.server_message(b'3', &[]), Verdict::Swallow);
        assert_eq!(t.server_message(b'1', &[]), Verdict::Forward);
        assert_eq!(t.server_message(b'Z', b"I"), Verdict::Forward);
        assert!(t.idle());
    }

    #[test]
    fn discard_and_deallocate_are_recognised_in_any_case_after_whitespace() {
        for query in [
            &b"DISCARD ALL"[..],
            b"  discard all",
            b"\n\tDeAllocate s1",
            b"deallocate",
        ] {
            assert!(is_reset(query), "{}", String::from_utf8_lossy(query));
        }
        for query in [
            &b"select 1"[..],
            b"",
            b"   ",
            b"discar",
            b"-- discard\nselect 1",
        ] {
            assert!(!is_reset(query), "{}", String::from_utf8_lossy(query));
        }
    }

    #[test]
    fn transaction_status_and_unsynced_messages_hold_the_connection() {
        let mut statements = Statements::default();
        let mut prepared = HashSet::new();
        let mut t = Tracker::default();
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'Q', &[b"BEGIN\0"])],
        );
        t.server_message(b'Z', b"T");
        assert!(!t.idle(), "in a transaction");
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'Q', &[b"COMMIT\0"])],
        );
        t.server_message(b'Z', b"I");
        assert!(t.idle());
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[p("", "select 1"), message(b'H', &[])],
        );
        assert!(!t.idle(), "a Parse without Sync keeps the connection");
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'Q', &[b"DISCARD ALL\0"])],
        );
        assert!(prepared.is_empty());
    }

    /// tokio-postgres's COPY FROM STDIN: Bind, Execute, Sync, then (after CopyInResponse)
    /// CopyData, CopyDone, Sync. The server ignores the first Sync: one ReadyForQuery.
    #[test]
    fn a_sync_inside_copy_in_expects_no_answer() {
        let mut statements = Statements::default();
        let mut prepared = HashSet::new();
        let mut t = Tracker::default();
        send(&mut t, &mut statements, &mut prepared, &[b(""), e(), s()]);
        assert_eq!(t.server_message(b'2', &[]), Verdict::Forward);
        t.server_message(b'G', &[0, 0, 0]);
        assert_eq!(t.pending, 0);
        assert!(!t.idle(), "copy-in mode holds the connection");
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'd', &[b"row\n"]), message(b'c', &[]), s()],
        );
        assert_eq!(t.pending, 1);
        t.server_message(b'C', b"COPY 1\0");
        t.server_message(b'Z', b"I");
        assert!(t.idle());
        // psql's simple-protocol COPY: no Sync at all, one ReadyForQuery.
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'Q', &[b"COPY t FROM STDIN\0"])],
        );
        t.server_message(b'G', &[0, 0, 0]);
        send(
            &mut t,
            &mut statements,
            &mut prepared,
            &[message(b'c', &[])],
        );
        t.server_message(b'Z', b"I");
        assert!(t.idle());
    }
}
