//! A server connection of a pool: connecting and logging in to PostgreSQL as the pool's
//! user (trust, cleartext, md5 or SCRAM — with a password, an md5 secret or the ClientKey a
//! client proved), reading its ParameterStatus and BackendKeyData up to ReadyForQuery, and
//! the few queries the router runs itself (the reset, the check, `SET` of a client's
//! parameters, `auth_query`), whose answers never reach a client.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::credentials::scram::{ClientCredential, ClientExchange};
use crate::credentials::userlist::md5_response;
use crate::protocol::{auth_code, backend_key, parameter_status, CancelKey};
use crate::topology::Backend;
use crate::wire::read_message;

/// How the router logs in to PostgreSQL as a user (from what a client proved or the auth file).
#[derive(Clone, Default)]
pub(crate) enum ServerLogin {
    /// Nothing: only a server that trusts the user accepts it.
    #[default]
    None,
    Plain(Vec<u8>),
    /// An md5 secret (answers md5 challenges only).
    Md5(String),
    /// The ClientKey of a SCRAM secret (answers SCRAM challenges of the same secret only).
    Scram {
        client_key: [u8; 32],
        secret: crate::credentials::scram::ScramSecret,
    },
}

impl ServerLogin {
    /// How much a login can do: a password beats a key beats nothing.
    pub(crate) fn strength(&self) -> u8 {
        match self {
            ServerLogin::None => 0,
            ServerLogin::Md5(_) => 1,
            ServerLogin::Scram { .. } => 2,
            ServerLogin::Plain(_) => 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("{0}")]
    Connect(String),
    /// The server's ErrorResponse (raw, for the client) and its message.
    #[error("{message}")]
    Refused { raw: Vec<u8>, message: String },
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Io(String),
}

/// A logged-in server connection: one pointer, so that checking it out of the pool, into a
/// client's relay and back in moves eight bytes, not the connection's state (a transaction
/// moves it half a dozen times).
pub(crate) struct ServerConn(Box<ServerParts>);

impl ServerConn {
    pub(crate) fn new(parts: ServerParts) -> Self {
        ServerConn(Box::new(parts))
    }

    pub(crate) fn into_parts(self) -> ServerParts {
        *self.0
    }
}

impl std::ops::Deref for ServerConn {
    type Target = ServerParts;

    fn deref(&self) -> &ServerParts {
        &self.0
    }
}

impl std::ops::DerefMut for ServerConn {
    fn deref_mut(&mut self) -> &mut ServerParts {
        &mut self.0
    }
}

/// What a server connection is.
pub(crate) struct ServerParts {
    pub id: u64,
    pub backend: Backend,
    pub read: OwnedReadHalf,
    pub write: OwnedWriteHalf,
    /// The server's cancel key: CancelRequests for the client using it go there.
    pub key: Option<CancelKey>,
    /// Parameters as the server reported them (ParameterStatus) or the router set them.
    pub params: BTreeMap<String, String>,
    /// The fingerprint of a client's parameters (`ClientParams::print`) that `params` were
    /// last found to match: the next client with the same ones needs no comparison. Reset
    /// whenever `params` change.
    pub fits: Option<u128>,
    /// Server-side names (hash ids) of the prepared statements this connection holds.
    pub prepared: HashSet<u64>,
    pub created: Instant,
    /// Last time it went back to the pool (for server_idle_timeout, server_check_delay).
    pub idle_since: Instant,
    /// Pool accounting: dropping the connection frees its place.
    pub slot: Option<super::Slot>,
    /// For `/servers`.
    pub view: std::sync::Arc<ServerView>,
}

/// What `/servers` shows of a server connection (PgBouncer's SHOW SERVERS), made once at
/// login: handing the connection to a client copies a pointer, no system call.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    pub id: u64,
    pub member: String,
    pub host: String,
    pub port: u16,
    pub local: Option<std::net::SocketAddr>,
    pub pid: Option<i32>,
    pub connect_time: chrono::DateTime<chrono::Utc>,
    pub application_name: Option<String>,
}

pub(crate) fn wall(at: Instant) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
        - chrono::Duration::from_std(at.elapsed()).unwrap_or_else(|_| chrono::Duration::zero())
}

impl ServerConn {
    pub(crate) fn view(&self) -> std::sync::Arc<ServerView> {
        self.view.clone()
    }

    /// When it last went back to the pool (wall clock).
    pub(crate) fn idle_since_wall(&self) -> chrono::DateTime<chrono::Utc> {
        wall(self.idle_since)
    }
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerConn({} on {})", self.id, self.backend.name)
    }
}

/// The `M` and `C` fields of an ErrorResponse body.
pub(crate) fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = crate::protocol::PROTOCOL_V3.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn io(e: impl std::fmt::Display) -> LoginError {
    LoginError::Io(e.to_string())
}

/// Connect to `backend` and log in as `user` to `database`, until ReadyForQuery.
pub(crate) async fn login(
    backend: &Backend,
    user: &str,
    database: &str,
    credential: &ServerLogin,
    connect_timeout: Duration,
    startup_timeout: Duration,
) -> Result<ServerConn, LoginError> {
    let startup = [("user", user), ("database", database)];
    login_with(
        backend,
        &startup,
        credential,
        connect_timeout,
        startup_timeout,
    )
    .await
}

/// `login` with these startup parameters (`user` among them), for a connection that is not
/// the pool's (a replication connection).
pub(crate) async fn login_with(
    backend: &Backend,
    startup: &[(&str, &str)],
    credential: &ServerLogin,
    connect_timeout: Duration,
    startup_timeout: Duration,
) -> Result<ServerConn, LoginError> {
    let connecting = TcpStream::connect((backend.host.as_str(), backend.port));
    let mut stream = match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(LoginError::Connect(format!(
                "cannot connect to {} at {}: {e}",
                backend.name,
                backend.address()
            )))
        }
        Err(_) => {
            return Err(LoginError::Connect(format!(
                "no connection to {} at {} within {connect_timeout:?}",
                backend.name,
                backend.address()
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let exchange = handshake(&mut stream, startup, credential);
    let (key, params) = match tokio::time::timeout(startup_timeout, exchange).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(LoginError::Io(format!(
                "{} did not complete the startup within {startup_timeout:?}",
                backend.name
            )))
        }
    };
    let (read, write) = stream.into_split();
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let now = Instant::now();
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let view = std::sync::Arc::new(ServerView {
        id,
        member: backend.name.clone(),
        host: backend.host.clone(),
        port: backend.port,
        local: read.local_addr().ok(),
        pid: key.map(|k: CancelKey| k.pid),
        connect_time: chrono::Utc::now(),
        application_name: params.get("application_name").cloned(),
    });
    Ok(ServerConn::new(ServerParts {
        id,
        view,
        backend: backend.clone(),
        read,
        write,
        key,
        params,
        fits: None,
        prepared: HashSet::new(),
        created: now,
        idle_since: now,
        slot: None,
    }))
}

/// `login` within `server_connect_timeout` when the pool has one: connecting and logging
/// in together must finish within it (as PgBouncer's), else the attempt is given up.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn login_within(
    server_connect_timeout: Option<Duration>,
    backend: &Backend,
    user: &str,
    database: &str,
    credential: &ServerLogin,
    connect_timeout: Duration,
    startup_timeout: Duration,
) -> Result<ServerConn, LoginError> {
    let startup = [("user", user), ("database", database)];
    login_with_within(
        server_connect_timeout,
        backend,
        &startup,
        credential,
        connect_timeout,
        startup_timeout,
    )
    .await
}

/// `login_within` with these startup parameters (`login_with`).
pub(crate) async fn login_with_within(
    server_connect_timeout: Option<Duration>,
    backend: &Backend,
    startup: &[(&str, &str)],
    credential: &ServerLogin,
    connect_timeout: Duration,
    startup_timeout: Duration,
) -> Result<ServerConn, LoginError> {
    let Some(limit) = server_connect_timeout else {
        return login_with(
            backend,
            startup,
            credential,
            connect_timeout,
            startup_timeout,
        )
        .await;
    };
    // The steps' own bounds are past the whole one, which is what gives up.
    let beyond = limit + Duration::from_secs(1);
    let attempt = login_with(backend, startup, credential, beyond, beyond);
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(LoginError::Connect(format!(
            "no connection to {} at {} logged in within pool.server_connect_timeout ({limit:?})",
            backend.name,
            backend.address()
        ))),
    }
}

type Started = (Option<CancelKey>, BTreeMap<String, String>);

async fn handshake(
    stream: &mut TcpStream,
    params: &[(&str, &str)],
    credential: &ServerLogin,
) -> Result<Started, LoginError> {
    let user = params
        .iter()
        .find_map(|(k, v)| (*k == "user").then_some(*v))
        .unwrap_or_default();
    stream.write_all(&startup(params)).await.map_err(io)?;
    let mut scram: Option<ClientExchange> = None;
    let mut key = None;
    let mut params = BTreeMap::new();
    let cannot = |method: &str| {
        LoginError::Auth(format!(
            "the server asks for {method} authentication for user \"{user}\" and the router has no credential for it (give a plain password or the server's secret in auth_file, or let a client log in first with SCRAM)"
        ))
    };
    loop {
        let message = read_message(stream).await.map_err(io)?;
        match message.tag() {
            b'R' => {
                let body = message.body();
                match auth_code(body) {
                    Some(0) => {}
                    Some(3) => {
                        let ServerLogin::Plain(password) = credential else {
                            return Err(cannot("cleartext password"));
                        };
                        let mut answer = password.clone();
                        answer.push(0);
                        stream.write_all(&typed(b'p', &answer)).await.map_err(io)?;
                    }
                    Some(5) => {
                        let salt: [u8; 4] = body
                            .get(4..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| io("short md5 request"))?;
                        let secret = match credential {
                            ServerLogin::Plain(p) => crate::credentials::userlist::md5_secret(p, user),
                            ServerLogin::Md5(secret) => secret.clone(),
                            _ => return Err(cannot("md5")),
                        };
                        let mut answer = md5_response(&secret, salt).into_bytes();
                        answer.push(0);
                        stream.write_all(&typed(b'p', &answer)).await.map_err(io)?;
                    }
                    Some(10) => {
                        let offers_scram = body[4..]
                            .split(|b| *b == 0)
                            .any(|m| m == b"SCRAM-SHA-256");
                        if !offers_scram {
                            return Err(LoginError::Auth(
                                "the server offers no SASL mechanism the router speaks".into(),
                            ));
                        }
                        let client = match credential {
                            ServerLogin::Plain(p) => {
                                ClientExchange::new(ClientCredential::Password(p.clone()))
                            }
                            ServerLogin::Scram { client_key, secret } => {
                                ClientExchange::new(ClientCredential::Keys {
                                    client_key: *client_key,
                                    secret: secret.clone(),
                                })
                            }
                            _ => return Err(cannot("SCRAM-SHA-256")),
                        };
                        let first = client.client_first();
                        let mut answer = b"SCRAM-SHA-256\0".to_vec();
                        answer.extend_from_slice(&(first.len() as u32).to_be_bytes());
                        answer.extend_from_slice(first.as_bytes());
                        stream.write_all(&typed(b'p', &answer)).await.map_err(io)?;
                        scram = Some(client);
                    }
                    Some(11) => {
                        let client = scram.as_mut().ok_or_else(|| io("SASL out of order"))?;
                        let answer = client
                            .respond(&body[4..])
                            .map_err(|e| LoginError::Auth(e.to_string()))?;
                        stream
                            .write_all(&typed(b'p', answer.as_bytes()))
                            .await
                            .map_err(io)?;
                    }
                    Some(12) => {
                        let client = scram.as_ref().ok_or_else(|| io("SASL out of order"))?;
                        client
                            .verify(&body[4..])
                            .map_err(|e| LoginError::Auth(e.to_string()))?;
                    }
                    Some(code) => {
                        return Err(LoginError::Auth(format!(
                            "the server asks for authentication method {code}, which the router does not speak"
                        )))
                    }
                    None => return Err(io("malformed Authentication message")),
                }
            }
            b'E' => {
                let (_, text) = error_fields(message.body());
                return Err(LoginError::Refused {
                    raw: message.raw,
                    message: text,
                });
            }
            b'S' => {
                if let Some((name, value)) = parameter_status(message.body()) {
                    params.insert(
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
            }
            b'K' => key = backend_key(message.body()),
            b'Z' => return Ok((key, params)),
            // NoticeResponse, NegotiateProtocolVersion: nothing for the router.
            _ => {}
        }
    }
}

/// What a query the router runs itself returned.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub rows: Vec<Vec<Option<String>>>,
    /// ErrorResponse: (SQLSTATE, message).
    pub error: Option<(String, String)>,
}

impl ServerConn {
    /// Send `bytes` (whole messages ending in Sync or a Query) and read up to ReadyForQuery,
    /// keeping ParameterStatus changes. An I/O error means the connection is unusable.
    pub(crate) async fn exchange(&mut self, bytes: &[u8]) -> std::io::Result<Answer> {
        self.exchange_leaving(bytes, b'I').await
    }

    /// [`exchange`](Self::exchange), the connection left in transaction status `status`
    /// (`T`: after a `BEGIN`), else an error.
    async fn exchange_leaving(&mut self, bytes: &[u8], status: u8) -> std::io::Result<Answer> {
        self.write.write_all(bytes).await?;
        let mut answer = Answer::default();
        loop {
            let message = read_message(&mut self.read)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            tracing::trace!(conn = self.id, tag = %(message.tag() as char), "router's own query");
            match message.tag() {
                b'D' => {
                    let body = message.body();
                    let mut row = Vec::new();
                    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    for _ in 0..count {
                        let len = i32::from_be_bytes(
                            body.get(at..at + 4)
                                .and_then(|b| b.try_into().ok())
                                .ok_or_else(|| std::io::Error::other("short DataRow"))?,
                        );
                        at += 4;
                        if len < 0 {
                            row.push(None);
                        } else {
                            let end = at + len as usize;
                            let value = body
                                .get(at..end)
                                .ok_or_else(|| std::io::Error::other("short DataRow"))?;
                            row.push(Some(String::from_utf8_lossy(value).into_owned()));
                            at = end;
                        }
                    }
                    answer.rows.push(row);
                }
                b'E' => answer.error = Some(error_fields(message.body())),
                b'S' => {
                    if let Some((name, value)) = parameter_status(message.body()) {
                        self.params.insert(
                            String::from_utf8_lossy(name).into_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        );
                    }
                }
                b'Z' => {
                    if message.body().first() != Some(&status) {
                        // Left in a transaction by the router's own query: not reusable.
                        return Err(std::io::Error::other(
                            "server connection not idle after the router's query",
                        ));
                    }
                    return Ok(answer);
                }
                _ => {}
            }
        }
    }

    /// A simple query; its error (if any) in the answer.
    pub(crate) async fn simple_query(&mut self, sql: &str) -> std::io::Result<Answer> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.exchange(&typed(b'Q', &body)).await
    }

    /// `BEGIN`: the connection is left in a transaction.
    pub(crate) async fn begin(&mut self) -> std::io::Result<Answer> {
        self.exchange_leaving(&typed(b'Q', b"BEGIN\0"), b'T').await
    }

    /// One statement with text parameters, through the extended protocol (unnamed).
    pub(crate) async fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> std::io::Result<Answer> {
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        let mut bind = vec![0u8, 0u8, 0, 0];
        bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
            bind.extend_from_slice(p.as_bytes());
        }
        bind.extend_from_slice(&[0, 0]);
        let mut out = typed(b'P', &parse);
        out.extend(typed(b'B', &bind));
        out.extend(typed(b'E', &[0, 0, 0, 0, 0]));
        out.extend(typed(b'S', &[]));
        self.exchange(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_connect_timeout_bounds_connecting_and_logging_in_together() {
        // A server that accepts the connection and never answers the startup.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let backend = Backend {
            name: "silent".into(),
            host: "127.0.0.1".into(),
            port,
        };
        let login = ServerLogin::None;
        let (connect, startup) = (Duration::from_secs(3), Duration::from_secs(10));
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let result = login_within(Some(limit), &backend, "u", "db", &login, connect, startup).await;
        let took = started.elapsed();
        let error = result.expect_err("a silent server is given up").to_string();
        assert!(
            error.contains("server_connect_timeout") && error.contains("silent"),
            "{error}"
        );
        assert!(
            took >= limit && took < Duration::from_secs(3),
            "given up after {took:?}"
        );
        // Without it, startup_timeout (here 1 s) bounds the login, as before.
        let started = Instant::now();
        let result = login_within(
            None,
            &backend,
            "u",
            "db",
            &login,
            connect,
            Duration::from_secs(1),
        )
        .await;
        let error = result.expect_err("a silent server is given up").to_string();
        assert!(error.contains("did not complete the startup"), "{error}");
        assert!(started.elapsed() >= Duration::from_secs(1));
        silent.abort();
    }
}
