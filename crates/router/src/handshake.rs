//! Relaying the startup between a client and one server until the server's ReadyForQuery.
//!
//! Authentication requests go to the client and its answers to the server as they come.
//! From AuthenticationOk on, the server's messages (ParameterStatus, BackendKeyData, ...)
//! are held back: the router reads `in_hot_standby` and `default_transaction_read_only`
//! and only hands the connection to the client when it may (a write connection never meets
//! a server in recovery). A second attempt on another server cannot show the client a second
//! authentication, so it succeeds only when the server needs none (trust) or a cleartext
//! password the router saw the first time; SCRAM and MD5 cannot be repeated.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::{auth_code, backend_key, parameter_status, CancelKey};
use crate::wire::{read_message, WireError};

/// AuthenticationCleartextPassword
const AUTH_CLEARTEXT: u32 = 3;
/// AuthenticationSASLFinal: informational, the client answers nothing.
const AUTH_SASL_FINAL: u32 = 12;

/// What the client did during authentication, so a retry knows whether it can be repeated.
#[derive(Debug, Default)]
pub(crate) struct AuthLog {
    /// The client answered at least one authentication request.
    pub client_involved: bool,
    /// Its answer to a cleartext password request (repeatable).
    pub cleartext: Option<Vec<u8>>,
}

/// A server ready to be handed to the client.
#[derive(Debug)]
pub(crate) struct Ready {
    /// AuthenticationOk .. ReadyForQuery, not yet sent to the client.
    pub held: Vec<u8>,
    pub key: Option<CancelKey>,
    /// The router does not know the session's protocol (TLS passed through): it never
    /// writes into it.
    pub opaque: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartFailure {
    /// The server refused the client: these bytes (ending in its ErrorResponse) go to the client.
    #[error("the server refused the connection")]
    Refused(Vec<u8>),
    #[error("the server is not writable ({0})")]
    NotWritable(String),
    #[error("the server asks for authentication method {0}, which the router cannot repeat for the client")]
    CannotRepeatAuth(u32),
    #[error("client: {0}")]
    Client(WireError),
    #[error("server: {0}")]
    Server(WireError),
}

fn server_err<E: Into<WireError>>(e: E) -> StartFailure {
    StartFailure::Server(e.into())
}

fn client_err<E: Into<WireError>>(e: E) -> StartFailure {
    StartFailure::Client(e.into())
}

/// Send `startup` to `server` and relay until ReadyForQuery.
pub(crate) async fn start<C, S>(
    client: &mut C,
    server: &mut S,
    startup: &[u8],
    auth: &mut AuthLog,
    require_writable: bool,
) -> Result<Ready, StartFailure>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    // On a second server the client has already authenticated once: answer from the log.
    let repeating = auth.client_involved;
    server.write_all(startup).await.map_err(server_err)?;
    let mut held = Vec::new();
    let mut authenticated = false;
    let mut key = None;
    let mut not_writable = Vec::new();
    loop {
        let message = read_message(server).await.map_err(server_err)?;
        match message.tag() {
            b'R' => {
                let code = auth_code(message.body()).ok_or_else(|| {
                    server_err(crate::protocol::ProtocolError::Malformed {
                        what: "Authentication message",
                    })
                })?;
                if code == 0 {
                    authenticated = true;
                    held.extend_from_slice(&message.raw);
                } else if repeating {
                    let answer = match (code, &auth.cleartext) {
                        (AUTH_CLEARTEXT, Some(answer)) => answer.clone(),
                        _ => return Err(StartFailure::CannotRepeatAuth(code)),
                    };
                    server.write_all(&answer).await.map_err(server_err)?;
                } else {
                    client.write_all(&message.raw).await.map_err(client_err)?;
                    // A TLS client's bytes may sit in the TLS layer until flushed.
                    client.flush().await.map_err(client_err)?;
                    if code != AUTH_SASL_FINAL {
                        let answer = read_message(client).await.map_err(client_err)?;
                        auth.client_involved = true;
                        if code == AUTH_CLEARTEXT {
                            auth.cleartext = Some(answer.raw.clone());
                        }
                        server.write_all(&answer.raw).await.map_err(server_err)?;
                    }
                }
            }
            b'E' => {
                held.extend_from_slice(&message.raw);
                return Err(StartFailure::Refused(held));
            }
            b'S' => {
                if let Some((name, value)) = parameter_status(message.body()) {
                    let on = value.eq_ignore_ascii_case(b"on");
                    if on && (name == b"in_hot_standby" || name == b"default_transaction_read_only")
                    {
                        not_writable.push(format!("{}=on", String::from_utf8_lossy(name)));
                    }
                }
                held.extend_from_slice(&message.raw);
            }
            b'K' => {
                key = backend_key(message.body());
                held.extend_from_slice(&message.raw);
            }
            b'Z' => {
                held.extend_from_slice(&message.raw);
                if require_writable && !not_writable.is_empty() {
                    return Err(StartFailure::NotWritable(not_writable.join(", ")));
                }
                return Ok(Ready {
                    held,
                    key,
                    opaque: false,
                });
            }
            // NegotiateProtocolVersion and notices before authentication: the client sees
            // them on the first server only.
            _ if !authenticated => {
                if !repeating {
                    client.write_all(&message.raw).await.map_err(client_err)?;
                    client.flush().await.map_err(client_err)?;
                }
            }
            _ => held.extend_from_slice(&message.raw),
        }
    }
}
