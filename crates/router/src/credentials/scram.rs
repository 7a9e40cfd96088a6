//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, without I/O: the stored
//! secret (`SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey`, as in `pg_authid`), the
//! server side of an exchange (the router authenticating a client), and a client side that
//! logs in to PostgreSQL either with a password or with the ClientKey recovered from a
//! client's proof (so the router never needs the plain password, as PgBouncer does).
//! Channel binding is not offered (the router advertises `SCRAM-SHA-256` only).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// A server's iteration count above this is refused (a hostile server could make the
/// router spin).
const MAX_ITERATIONS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported by the pgbaton router")]
    ChannelBinding,
    #[error("the SCRAM nonce does not match")]
    Nonce,
    #[error("the client's SCRAM proof is wrong")]
    Proof,
    #[error("the server's SCRAM signature is wrong")]
    ServerSignature,
    #[error("the server's SCRAM secret differs from the router's (salt or iteration count); give the router the secret stored in pg_authid")]
    SecretMismatch,
}

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's `Hi`.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut previous = hmac(password, &[salt, &[0, 0, 0, 1]]);
    let mut result = previous;
    for _ in 1..iterations {
        previous = hmac(password, &[&previous]);
        for (r, p) in result.iter_mut().zip(previous.iter()) {
            *r ^= p;
        }
    }
    result
}

/// SASLprep where it applies; other passwords are used as bytes (what libpq and the server do).
fn normalize(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password) {
        Ok(text) => match stringprep::saslprep(text) {
            Ok(prepared) => prepared.into_owned().into_bytes(),
            Err(_) => password.to_vec(),
        },
        Err(_) => password.to_vec(),
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// Constant-time comparison of two keys.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A nonce: 18 random bytes in base64 (printable, no comma).
fn nonce() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// What PostgreSQL stores for a SCRAM-SHA-256 password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramSecret(iterations {}, ..)", self.iterations)
    }
}

impl ScramSecret {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts.
    pub fn parse(text: &str) -> Option<ScramSecret> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |b64: &str| -> Option<[u8; 32]> { STANDARD.decode(b64).ok()?.try_into().ok() };
        Some(ScramSecret {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = hi(&normalize(password), salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A secret with a fresh random salt (for a plain password in the auth file).
    pub fn generate(password: &[u8]) -> ScramSecret {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A secret nobody can answer, the same for the same `user` within this process: for
    /// unknown users, so that the exchange looks like a real one (PostgreSQL's mock
    /// authentication).
    pub fn mock(user: &str) -> ScramSecret {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            rand::rng().fill_bytes(&mut k);
            k
        });
        let salt = hmac(key, &[user.as_bytes()]);
        let mut stored_key = [0u8; 32];
        rand::rng().fill_bytes(&mut stored_key);
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key,
            server_key: stored_key,
        }
    }

    /// Does a cleartext password match this secret?
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let candidate = ScramSecret::from_password(password, &self.salt, self.iterations);
        same(&candidate.stored_key, &self.stored_key)
    }

    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// `k=v` attributes of a SCRAM message, in order.
fn attributes(message: &str) -> Result<Vec<(char, &str)>, ScramError> {
    message
        .split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(ScramError::Malformed("attribute")),
            }
        })
        .collect()
}

/// The server side after the client's first message.
#[derive(Debug)]
pub struct ServerExchange {
    secret: ScramSecret,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Read the client-first message (from SASLInitialResponse) and make the server-first.
    pub fn start(secret: ScramSecret, client_first: &[u8]) -> Result<ServerExchange, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("authzid"));
        }
        let attrs = attributes(bare)?;
        let client_nonce = match attrs.as_slice() {
            [('n', _), ('r', nonce), ..] if !nonce.is_empty() => *nonce,
            [('m', _), ..] => return Err(ScramError::Malformed("mandatory extension")),
            _ => return Err(ScramError::Malformed("client-first-message")),
        };
        let nonce = format!("{client_nonce}{}", self::nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&secret.salt),
            secret.iterations
        );
        Ok(ServerExchange {
            secret,
            gs2_header: text[..flag.len() + 1 + authzid.len() + 1].to_string(),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        })
    }

    /// AuthenticationSASLContinue's data.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Check the client-final message: the ClientKey it proves and the server-final message
    /// (AuthenticationSASLFinal's data), or why it failed.
    pub fn finish(&self, client_final: &[u8]) -> Result<([u8; 32], String), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let attrs = attributes(without_proof)?;
        let (binding, nonce) = match attrs.as_slice() {
            [('c', c), ('r', r), ..] => (*c, *r),
            _ => return Err(ScramError::Malformed("client-final-message")),
        };
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.secret.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &signature);
        if !same(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac(&self.secret.server_key, &[auth_message.as_bytes()]);
        Ok((
            client_key,
            format!("v={}", STANDARD.encode(server_signature)),
        ))
    }
}

/// How the router proves itself to PostgreSQL.
#[derive(Clone)]
pub enum ClientCredential {
    Password(Vec<u8>),
    /// The ClientKey of `secret` (recovered from a client's proof).
    Keys {
        client_key: [u8; 32],
        secret: ScramSecret,
    },
}

/// The client side of an exchange with PostgreSQL.
pub struct ClientExchange {
    credential: ClientCredential,
    client_first_bare: String,
    nonce: String,
    server_key: Option<[u8; 32]>,
    auth_message: String,
}

impl ClientExchange {
    pub fn new(credential: ClientCredential) -> ClientExchange {
        let nonce = nonce();
        ClientExchange {
            credential,
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            server_key: None,
            auth_message: String::new(),
        }
    }

    /// SASLInitialResponse's data.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answer the server-first message with the client-final message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let attrs = attributes(text)?;
        let (nonce, salt, iterations) = match attrs.as_slice() {
            [('r', r), ('s', s), ('i', i), ..] => (*r, *s, *i),
            _ => return Err(ScramError::Malformed("server-first-message")),
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed("iteration count"))?;
        let (client_key, server_key) = match &self.credential {
            ClientCredential::Password(password) => {
                let salted = hi(&normalize(password), &salt, iterations);
                (
                    hmac(&salted, &[b"Client Key"]),
                    hmac(&salted, &[b"Server Key"]),
                )
            }
            ClientCredential::Keys { client_key, secret } => {
                if secret.salt != salt || secret.iterations != iterations {
                    return Err(ScramError::SecretMismatch);
                }
                (*client_key, secret.server_key)
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac(&sha256(&client_key), &[self.auth_message.as_bytes()]);
        self.server_key = Some(server_key);
        Ok(format!(
            "{without_proof},p={}",
            STANDARD.encode(xor(&client_key, &signature))
        ))
    }

    /// Check the server-final message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| {
                STANDARD
                    .decode(v.split(',').next().unwrap_or_default())
                    .ok()
            })
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or(ScramError::Malformed("server-final-message"))?;
        let key = self
            .server_key
            .ok_or(ScramError::Malformed("out of order"))?;
        let expected = hmac(&key, &[self.auth_message.as_bytes()]);
        if same(&expected, &signature) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// A secret made by postgres-protocol (as `ALTER ROLE ... PASSWORD` would store it).
    fn secret(password: &str) -> ScramSecret {
        ScramSecret::parse(&postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ))
        .expect("parse")
    }

    #[test]
    fn secrets_parse_verify_and_round_trip() {
        let s = secret("pencil");
        assert_eq!(s.iterations, 4096);
        assert!(s.verify_password(b"pencil"));
        assert!(!s.verify_password(b"Pencil"));
        assert_eq!(ScramSecret::parse(&s.encode()), Some(s.clone()));
        let mine = ScramSecret::from_password(b"pencil", &s.salt, s.iterations);
        assert_eq!(mine, s, "the same derivation as postgres-protocol's");
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        ] {
            assert!(ScramSecret::parse(bad).is_none(), "{bad}");
        }
    }

    /// postgres-protocol's client against our server side, then our key-based client
    /// against our server side with the recovered key.
    fn run_exchange(secret: &ScramSecret, password: &str) -> Result<[u8; 32], ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let server = ServerExchange::start(secret.clone(), client.message())?;
        client
            .update(server.server_first().as_bytes())
            .expect("client update");
        let (key, server_final) = server.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("the client accepts our signature");
        Ok(key)
    }

    #[test]
    fn the_server_side_accepts_the_right_password_only() {
        let s = secret("correct horse");
        let key = run_exchange(&s, "correct horse").expect("accepted");
        assert_eq!(sha256(&key), s.stored_key);
        assert_eq!(run_exchange(&s, "wrong"), Err(ScramError::Proof));
        let mock = ScramSecret::mock("nobody");
        assert_eq!(run_exchange(&mock, "anything"), Err(ScramError::Proof));
        assert_eq!(ScramSecret::mock("nobody").salt, mock.salt, "stable salt");
    }

    #[test]
    fn the_recovered_key_logs_in_without_the_password() {
        let s = secret("s3cret");
        let client_key = run_exchange(&s, "s3cret").expect("accepted");
        for credential in [
            ClientCredential::Keys {
                client_key,
                secret: s.clone(),
            },
            ClientCredential::Password(b"s3cret".to_vec()),
        ] {
            let mut client = ClientExchange::new(credential);
            let server =
                ServerExchange::start(s.clone(), client.client_first().as_bytes()).expect("start");
            let client_final = client
                .respond(server.server_first().as_bytes())
                .expect("respond");
            let (_, server_final) = server.finish(client_final.as_bytes()).expect("accepted");
            client.verify(server_final.as_bytes()).expect("verified");
            assert_eq!(
                client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                Err(ScramError::ServerSignature)
            );
        }
        // Another salt (the server's secret is not the router's): said so, not a wrong proof.
        let other = secret("s3cret");
        let mut client = ClientExchange::new(ClientCredential::Keys {
            client_key,
            secret: s,
        });
        let server = ServerExchange::start(other, client.client_first().as_bytes()).expect("start");
        assert_eq!(
            client.respond(server.server_first().as_bytes()),
            Err(ScramError::SecretMismatch)
        );
    }

    #[test]
    fn malformed_client_messages_are_errors() {
        let s = secret("x");
        for bad in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"n,,r=abc",
            b"n,,n=,r=",
            b"x,,n=,r=abc",
            b"n,,",
            b"\xff",
            b"n,,m=ext,n=,r=abc",
        ] {
            assert!(
                ServerExchange::start(s.clone(), bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let server = ServerExchange::start(s, b"n,,n=,r=abc").expect("start");
        for bad in [
            &b"c=biws,r=abc,p=AAAA"[..],
            b"c=biws,r=wrong,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            b"c=eSws,r=abc,p=x",
            b"nothing",
        ] {
            assert!(server.finish(bad).is_err());
        }
    }
}
