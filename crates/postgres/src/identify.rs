//! `IDENTIFY_SYSTEM` over a physical replication connection to the local server: the one
//! place PostgreSQL says on which timeline a standby's last replayed record lies.
//!
//! A standby's control file names the timeline of its last restartpoint, which stays behind
//! after a timeline switch until the next restartpoint (up to `checkpoint_timeout`); the WAL
//! receiver's `received_tli` exists only while the receiver runs. A walsender on a standby
//! answers `IDENTIFY_SYSTEM` with the replay timeline and the position it could serve a
//! cascading standby (`GetStandbyFlushRecPtr`: the replayed position, or the received one
//! when it is on the same timeline). tokio-postgres cannot open replication connections, so
//! this speaks the few messages needed itself, through postgres-protocol.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::client::bounded;
use crate::error::PgError;
use crate::lsn::parse_lsn;
use crate::run::absolute;
use crate::spec::PgSpec;

/// What `IDENTIFY_SYSTEM` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub system_identifier: u64,
    /// A standby: the timeline of the last replayed record. A primary: its current timeline.
    pub timeline: u32,
    /// A standby: the replayed position, or the received one when it is on that timeline.
    pub lsn: u64,
}

const WHAT: &str = "IDENTIFY_SYSTEM on a replication connection";

/// Runs `IDENTIFY_SYSTEM` on the local server through its unix socket, as the replication
/// role, bounded by `timeout` as a whole.
pub async fn identify_system(spec: &PgSpec, timeout: Duration) -> Result<Identity, PgError> {
    bounded(WHAT, timeout, identify(spec)).await
}

async fn identify(spec: &PgSpec) -> Result<Identity, PgError> {
    let socket = absolute(&spec.socket_dir)?.join(format!(".s.PGSQL.{}", spec.port));
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| PgError::io(&socket, e))?;
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(1024),
    };
    let user = spec.replication.username.as_str();
    let password = spec.replication.password.as_deref().unwrap_or("");
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", user),
            ("database", "replication"),
            ("replication", "true"),
            ("application_name", "pgbaton"),
        ],
        &mut out,
    )
    .map_err(|e| unexpected(e.to_string()))?;
    conn.send(&out).await?;
    authenticate(&mut conn, user, password).await?;
    wait_ready(&mut conn).await?;
    out.clear();
    frontend::query("IDENTIFY_SYSTEM", &mut out).map_err(|e| unexpected(e.to_string()))?;
    conn.send(&out).await?;
    let mut row: Option<Vec<Option<String>>> = None;
    loop {
        match conn.next().await? {
            Message::DataRow(body) => {
                let buf = body.buffer();
                let fields = body
                    .ranges()
                    .map(
                        |r| Ok(r.and_then(|r| std::str::from_utf8(&buf[r]).ok().map(String::from))),
                    )
                    .collect()
                    .map_err(|e: std::io::Error| unexpected(e.to_string()))?;
                row = Some(fields);
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    out.clear();
    frontend::terminate(&mut out);
    // The answer is in; a failed goodbye changes nothing.
    let _ = conn.send(&out).await;
    let row = row.ok_or_else(|| unexpected("no row".into()))?;
    parse_row(&row)
}

fn parse_row(row: &[Option<String>]) -> Result<Identity, PgError> {
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let system_identifier = field(0)
        .parse::<u64>()
        .map_err(|_| unexpected(format!("systemid {:?}", field(0))))?;
    let timeline = field(1)
        .parse::<u32>()
        .map_err(|_| unexpected(format!("timeline {:?}", field(1))))?;
    let lsn = parse_lsn(&field(2)).ok_or_else(|| unexpected(format!("xlogpos {:?}", field(2))))?;
    Ok(Identity {
        system_identifier,
        timeline,
        lsn,
    })
}

struct Conn {
    stream: UnixStream,
    buf: BytesMut,
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), PgError> {
        self.stream.write_all(bytes).await.map_err(io_error)
    }

    async fn next(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).map_err(io_error)? {
                return Ok(message);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(io_error)?;
            if n == 0 {
                return Err(unexpected("the server closed the connection".into()));
            }
        }
    }
}

async fn authenticate(conn: &mut Conn, user: &str, password: &str) -> Result<(), PgError> {
    let mut out = BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    loop {
        out.clear();
        match conn.next().await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password.as_bytes(), &mut out).map_err(io_error)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(user.as_bytes(), password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io_error)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = false;
                while let Some(m) = mechanisms.next().map_err(io_error)? {
                    offered |= m == SCRAM_SHA_256;
                }
                if !offered {
                    return Err(unexpected("the server offers no SCRAM-SHA-256".into()));
                }
                let state = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut out)
                    .map_err(io_error)?;
                scram = Some(state);
            }
            Message::AuthenticationSaslContinue(body) => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| unexpected("SASL out of order".into()))?;
                state.update(body.data()).map_err(io_error)?;
                frontend::sasl_response(state.message(), &mut out).map_err(io_error)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| unexpected("SASL out of order".into()))?;
                state.finish(body.data()).map_err(io_error)?;
                continue;
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            _ => {
                return Err(unexpected(
                    "an authentication method pgbaton does not speak".into(),
                ))
            }
        }
        conn.send(&out).await?;
    }
}

async fn wait_ready(conn: &mut Conn) -> Result<(), PgError> {
    loop {
        match conn.next().await? {
            Message::ReadyForQuery(_) => return Ok(()),
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            _ => {}
        }
    }
}

fn server_error(mut fields: ErrorFields<'_>) -> PgError {
    let mut message = String::new();
    let mut code = String::new();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    unexpected(format!("the server answered {code}: {message}"))
}

fn unexpected(detail: String) -> PgError {
    PgError::UnexpectedResult {
        what: WHAT.into(),
        detail,
    }
}

fn io_error(e: std::io::Error) -> PgError {
    unexpected(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_parses_into_an_identity() {
        let row = vec![
            Some("7441234567890123456".to_string()),
            Some("3".to_string()),
            Some("0/3000148".to_string()),
            None,
        ];
        let id = parse_row(&row).expect("parse");
        assert_eq!(id.system_identifier, 7441234567890123456);
        assert_eq!(id.timeline, 3);
        assert_eq!(id.lsn, 0x3000148);
    }

    #[test]
    fn a_bad_timeline_is_an_error_naming_it() {
        let row = vec![Some("1".into()), Some("x".into()), Some("0/1".into()), None];
        let err = parse_row(&row).unwrap_err().to_string();
        assert!(err.contains("timeline"), "{err}");
    }
}
