//! Client authentication by the router (with an `auth:` section; without one the router
//! relays the server's own authentication). The method comes from pg_hba-style rules or
//! one `auth_type` (`hba`); the user's password from `auth_file` (PgBouncer's userlist.txt)
//! or from `auth_query` run as `auth_user` on the leader (`query`). What the client proved
//! becomes the `ServerLogin` the pool logs in to PostgreSQL with: its plain password, an md5
//! secret, or the SCRAM ClientKey recovered from its proof. A wrong password and an unknown
//! user get the same FATAL 28P01 (an unknown user even runs a mock SCRAM exchange).

mod query;

pub use crate::credentials::{scram, userlist, AuthConfig, AuthType, Method, DEFAULT_AUTH_QUERY};

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::credentials::hba::{self, HbaRule};
use crate::credentials::scram::{ScramSecret, ServerExchange};
use crate::credentials::userlist::{md5_response, md5_secret, Credential};
use crate::credentials::Credentials;
use crate::error::RouterConfigError;
use crate::pool::server::ServerLogin;
use crate::topology::Backend;
use crate::wire::{read_message, WireError};
pub(crate) use query::QueryLeader;

/// The loaded rules and users, and the `auth_query` cache.
pub(crate) struct Auth {
    pub cfg: AuthConfig,
    rules: Vec<HbaRule>,
    users: HashMap<String, Credential>,
    cache: Mutex<HashMap<String, (Instant, Option<Credential>)>>,
}

impl Auth {
    /// Read `auth_file` and the hba rules (`Credentials::load`).
    pub(crate) fn load(cfg: &AuthConfig) -> Result<Auth, RouterConfigError> {
        let Credentials { rules, users } = Credentials::load(cfg)?;
        Ok(Auth {
            cfg: cfg.clone(),
            rules,
            users,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn rule(&self, database: &str, user: &str, ip: IpAddr, tls: bool) -> Option<hba::Rule> {
        match self.cfg.auth_type {
            AuthType::Method(method) => Some(hba::Rule {
                method,
                clientcert: if method == Method::Cert {
                    hba::ClientCert::VerifyFull
                } else {
                    hba::ClientCert::None
                },
            }),
            AuthType::Hba => hba::rule_for(&self.rules, database, user, ip, tls),
        }
    }

    /// The password of `user`: auth_file first, then auth_query (cached).
    async fn credential<F: Future<Output = Option<Backend>>>(
        &self,
        leader: QueryLeader<F>,
        user: &str,
        database: &str,
    ) -> Result<Option<Credential>, String> {
        if let Some(found) = self.users.get(user) {
            return Ok(Some(found.clone()));
        }
        let Some(auth_user) = &self.cfg.auth_user else {
            return Ok(None);
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, found)) = cache.get(user) {
                // Unknown users are asked again after a second (a role may just have been made).
                let ttl = if found.is_some() {
                    self.cfg.auth_query_cache_ttl
                } else {
                    self.cfg.auth_query_cache_ttl.min(Duration::from_secs(1))
                };
                if at.elapsed() < ttl {
                    return Ok(found.clone());
                }
            }
        }
        let login = match self.users.get(auth_user) {
            Some(Credential::Plain(p)) => ServerLogin::Plain(p.clone()),
            Some(Credential::Md5(s)) => ServerLogin::Md5(s.clone()),
            Some(Credential::Scram(_)) => {
                return Err(format!(
                    "auth_user \"{auth_user}\" has only a SCRAM secret in auth_file; the router needs its plain password (or md5 secret) to run auth_query"
                ))
            }
            None => ServerLogin::None,
        };
        let database = self.cfg.auth_dbname.as_deref().unwrap_or(database);
        let found = query::lookup(leader, &self.cfg, auth_user, &login, database, user).await?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_string(), (Instant::now(), found.clone()));
        Ok(found)
    }

    /// The server login for a user whose client authenticated without a password exchange
    /// (trust): whatever auth_file says.
    fn login_without_proof(credential: Option<&Credential>) -> ServerLogin {
        match credential {
            Some(Credential::Plain(p)) => ServerLogin::Plain(p.clone()),
            Some(Credential::Md5(s)) => ServerLogin::Md5(s.clone()),
            _ => ServerLogin::None,
        }
    }
}

/// Why a client was not let in.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Send this FATAL and close.
    Fatal {
        code: &'static str,
        reason: &'static str,
        message: String,
    },
    /// The client went away (psql does, to ask for a password) or broke the protocol.
    Client(WireError),
}

fn password_failed(user: &str) -> Refusal {
    Refusal::Fatal {
        code: "28P01",
        reason: "auth_failed",
        message: format!("password authentication failed for user \"{user}\""),
    }
}

fn auth_request(code: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![b'R'];
    out.extend_from_slice(&((8 + data.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Send an authentication request and read the client's 'p' answer (its body).
async fn ask<C>(client: &mut C, request: &[u8]) -> Result<Vec<u8>, Refusal>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    client
        .write_all(request)
        .await
        .map_err(|e| Refusal::Client(e.into()))?;
    client
        .flush()
        .await
        .map_err(|e| Refusal::Client(e.into()))?;
    let answer = read_message(client).await.map_err(Refusal::Client)?;
    if answer.tag() != b'p' {
        return Err(Refusal::Fatal {
            code: crate::protocol::sqlstate::PROTOCOL_VIOLATION,
            reason: "malformed",
            message: format!(
                "expected a password response, got message type \"{}\"",
                answer.tag().escape_ascii()
            ),
        });
    }
    Ok(answer.body().to_vec())
}

fn cstring(body: &[u8]) -> &[u8] {
    body.split(|b| *b == 0).next().unwrap_or_default()
}

/// The SCRAM exchange with the client against `secret`; the recovered ClientKey.
async fn scram_exchange<C>(
    client: &mut C,
    secret: ScramSecret,
    user: &str,
) -> Result<[u8; 32], Refusal>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let initial = ask(client, &auth_request(10, b"SCRAM-SHA-256\0\0")).await?;
    let mechanism = cstring(&initial);
    let malformed = |what: String| Refusal::Fatal {
        code: crate::protocol::sqlstate::PROTOCOL_VIOLATION,
        reason: "malformed",
        message: what,
    };
    if mechanism != b"SCRAM-SHA-256" {
        return Err(Refusal::Fatal {
            code: "28000",
            reason: "auth_failed",
            message: "client selected an invalid SASL authentication mechanism".into(),
        });
    }
    let data = initial
        .get(mechanism.len() + 5..)
        .ok_or_else(|| malformed("malformed SASLInitialResponse".into()))?;
    let exchange = ServerExchange::start(secret, data)
        .map_err(|e| malformed(format!("malformed SCRAM message: {e}")))?;
    let last = ask(
        client,
        &auth_request(11, exchange.server_first().as_bytes()),
    )
    .await?;
    match exchange.finish(&last) {
        Ok((client_key, server_final)) => {
            client
                .write_all(&auth_request(12, server_final.as_bytes()))
                .await
                .map_err(|e| Refusal::Client(e.into()))?;
            Ok(client_key)
        }
        Err(scram::ScramError::Proof) => Err(password_failed(user)),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// Who is connecting, for the rules.
pub(crate) struct Peer<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub ip: IpAddr,
    pub tls: bool,
    /// The common name of the client certificate the TLS handshake verified against
    /// `tls_cafile` (`Some("")` for a verified certificate without one; `None`: no
    /// certificate).
    pub certificate: Option<&'a str>,
}

/// Authenticate the client; on success the caller sends AuthenticationOk
/// ([`authentication_ok`]) with what follows it.
pub(crate) async fn authenticate<C, F>(
    leader: QueryLeader<F>,
    auth: &Auth,
    client: &mut C,
    peer: &Peer<'_>,
) -> Result<ServerLogin, Refusal>
where
    C: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Option<Backend>>,
{
    let Peer {
        user,
        database,
        ip,
        tls,
        certificate,
    } = *peer;
    let encryption = if tls {
        "SSL encryption"
    } else {
        "no encryption"
    };
    let rule = auth.rule(database, user, ip, tls);
    let method = match rule.map(|r| r.method) {
        Some(Method::Reject) => {
            return Err(Refusal::Fatal {
                code: "28000",
                reason: "hba_reject",
                message: format!("pg_hba.conf rejects connection for host \"{ip}\", user \"{user}\", database \"{database}\", {encryption}"),
            })
        }
        Some(m) => m,
        None => {
            return Err(Refusal::Fatal {
                code: "28000",
                reason: "hba_no_entry",
                message: format!("no pg_hba.conf entry for host \"{ip}\", user \"{user}\", database \"{database}\", {encryption}"),
            })
        }
    };
    if let Some(rule) = rule {
        check_certificate(rule, certificate, user)?;
    }
    let credential = match auth.credential(leader, user, database).await {
        Ok(c) => c,
        Err(cause) => {
            tracing::warn!(%user, %cause, "cannot look up a password with auth_query; refusing the client");
            return Err(Refusal::Fatal {
                code: "58000",
                reason: "auth_query_failed",
                message: format!(
                    "pgbaton router: cannot check the password of user \"{user}\": {cause}"
                ),
            });
        }
    };
    let login = match (method, credential) {
        // The certificate was checked above (its common name is the user name).
        (Method::Trust | Method::Cert, c) => Auth::login_without_proof(c.as_ref()),
        (Method::Password, c) => {
            let answer = ask(client, &auth_request(3, &[])).await?;
            let password = cstring(&answer).to_vec();
            let ok = match &c {
                Some(Credential::Plain(p)) => p == &password,
                Some(Credential::Md5(s)) => &md5_secret(&password, user) == s,
                Some(Credential::Scram(s)) => s.verify_password(&password),
                None => false,
            };
            if !ok {
                tracing::info!(%user, known = c.is_some(), "cleartext password authentication failed");
                return Err(password_failed(user));
            }
            ServerLogin::Plain(password)
        }
        (Method::Md5, Some(Credential::Plain(p))) => {
            md5_challenge(client, &md5_secret(&p, user), user).await?;
            ServerLogin::Plain(p)
        }
        (Method::Md5, Some(Credential::Md5(s))) => {
            md5_challenge(client, &s, user).await?;
            ServerLogin::Md5(s)
        }
        (Method::Md5, None) => {
            // Unknown user: a challenge nobody can answer.
            let mut fake = [0u8; 16];
            rand::rng().fill_bytes(&mut fake);
            let fake = format!(
                "md5{}",
                fake.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            md5_challenge(client, &fake, user).await?;
            ServerLogin::None
        }
        // md5 with a SCRAM secret is SCRAM, as in PostgreSQL.
        (Method::Md5 | Method::ScramSha256, Some(Credential::Scram(secret))) => {
            let client_key = scram_exchange(client, secret.clone(), user).await?;
            ServerLogin::Scram { client_key, secret }
        }
        (Method::ScramSha256, Some(Credential::Plain(p))) => {
            scram_exchange(client, ScramSecret::generate(&p), user).await?;
            ServerLogin::Plain(p)
        }
        (Method::ScramSha256, other) => {
            if other.is_some() {
                tracing::info!(%user, "user has an md5 secret, which cannot answer scram-sha-256; give a SCRAM secret or a plain password");
            }
            scram_exchange(client, ScramSecret::mock(user), user).await?;
            return Err(password_failed(user));
        }
        (Method::Reject, _) => return Err(password_failed(user)),
    };
    Ok(login)
}

/// AuthenticationOk: the caller sends it with what follows it (the parameters, the key and
/// ReadyForQuery, or a FATAL), in one write: a connection's first answer is one segment.
pub(crate) fn authentication_ok() -> Vec<u8> {
    auth_request(0, &[])
}

/// The certificate check of a rule, with PostgreSQL's messages: none presented, or one whose
/// common name is not the user name where the name must match.
fn check_certificate(
    rule: hba::Rule,
    certificate: Option<&str>,
    user: &str,
) -> Result<(), Refusal> {
    let refuse = |message: String| Refusal::Fatal {
        code: "28000",
        reason: "client_certificate",
        message,
    };
    match (rule.clientcert, certificate) {
        (hba::ClientCert::None, _) => Ok(()),
        (_, None) => Err(refuse(
            "connection requires a valid client certificate".into(),
        )),
        (hba::ClientCert::VerifyCa, Some(_)) => Ok(()),
        (hba::ClientCert::VerifyFull, Some(name)) if name == user => Ok(()),
        (hba::ClientCert::VerifyFull, Some(name)) => {
            tracing::info!(%user, certificate = %name, "client certificate common name does not match the user name");
            Err(refuse(if rule.method == Method::Cert {
                format!("certificate authentication failed for user \"{user}\"")
            } else {
                format!("certificate validation (clientcert=verify-full) failed for user \"{user}\": CN mismatch")
            }))
        }
    }
}

async fn md5_challenge<C>(client: &mut C, secret: &str, user: &str) -> Result<(), Refusal>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut salt = [0u8; 4];
    rand::rng().fill_bytes(&mut salt);
    let answer = ask(client, &auth_request(5, &salt)).await?;
    if cstring(&answer) == md5_response(secret, salt).as_bytes() {
        Ok(())
    } else {
        tracing::info!(%user, "md5 password authentication failed");
        Err(password_failed(user))
    }
}
