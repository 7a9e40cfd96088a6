//! The start of the PostgreSQL v3 wire protocol, on raw bytes and without I/O: the first
//! packet a client sends (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), the
//! rewriting of a startup message that carries a routing request (`options=-c
//! pgbaton.target=read`, `target_session_attrs=...`), the few backend messages the router
//! looks at before handing a connection over (Authentication, ParameterStatus,
//! BackendKeyData, ReadyForQuery) and the ErrorResponse it sends when it refuses a client.
//! After ReadyForQuery the router forwards bytes and never parses again.

/// `SSLRequest` code (1234.5679).
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code (1234.5680).
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code (1234.5678).
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_V3: u32 = 196_608;
/// PostgreSQL's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The GUC a client sets in `options` to choose its role.
pub const TARGET_OPTION: &str = "pgbaton.target";
/// The startup option (or parameter) carrying a read-your-writes token.
pub const MIN_LSN_OPTION: &str = "pgbaton.min_lsn";

/// What identifies a backend to a CancelRequest (from BackendKeyData).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// The role a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The leader only.
    Write,
    /// A replica within the lag bound (fallback as configured).
    Read,
    /// A replica, else the leader, whatever the configured fallback.
    Any,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Write => "write",
            Target::Read => "read",
            Target::Any => "any",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("packet length {length} is out of range ({min}..={max})")]
    BadLength { length: u32, min: usize, max: usize },
    #[error("unsupported frontend protocol {major}.{minor}: the router speaks protocol 3")]
    UnsupportedVersion { major: u32, minor: u32 },
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("invalid value `{value}` for {parameter}: use {expected}")]
    BadTarget {
        parameter: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Startup parameters: name/value pairs, bytes as the client sent them.
pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupMessage),
}

/// The body length of a length-prefixed startup-phase packet (`len` counts itself).
pub fn startup_body_length(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(header);
    let len = length as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadLength {
            length,
            min: 8,
            max: MAX_STARTUP_LEN,
        });
    }
    Ok(len - 4)
}

/// Parse a startup-phase packet given everything after its length word.
pub fn parse_first_packet(body: &[u8]) -> Result<FirstPacket, ProtocolError> {
    let code = read_u32(body, 0).ok_or(ProtocolError::Malformed {
        what: "startup packet (no code)",
    })?;
    match code {
        SSL_REQUEST if body.len() == 4 => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if body.len() == 4 => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let (Some(pid), Some(secret), 12) = (read_u32(body, 4), read_u32(body, 8), body.len())
            else {
                return Err(ProtocolError::Malformed {
                    what: "CancelRequest",
                });
            };
            Ok(FirstPacket::Cancel(CancelKey {
                pid: pid as i32,
                secret: secret as i32,
            }))
        }
        SSL_REQUEST | GSSENC_REQUEST => Err(ProtocolError::Malformed {
            what: "SSLRequest/GSSENCRequest (wrong length)",
        }),
        version if version >> 16 == 3 => {
            let params = parse_params(&body[4..])?;
            Ok(FirstPacket::Startup(StartupMessage { version, params }))
        }
        version => Err(ProtocolError::UnsupportedVersion {
            major: version >> 16,
            minor: version & 0xffff,
        }),
    }
}

/// Name/value pairs, each a NUL-terminated string, ended by one more NUL.
fn parse_params(mut rest: &[u8]) -> Result<Params, ProtocolError> {
    let malformed = ProtocolError::Malformed {
        what: "StartupMessage parameters",
    };
    let mut params = Vec::new();
    loop {
        let (name, after) = cstring(rest).ok_or(malformed.clone())?;
        if name.is_empty() {
            return if after.is_empty() {
                Ok(params)
            } else {
                Err(malformed)
            };
        }
        let (value, after) = cstring(after).ok_or(malformed.clone())?;
        params.push((name.to_vec(), value.to_vec()));
        rest = after;
    }
}

fn cstring(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// A v3 StartupMessage: the protocol version and its parameters, bytes as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub version: u32,
    pub params: Params,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Set a parameter: replace its value where it is, else append it.
    pub fn set_param(&mut self, name: &str, value: &[u8]) {
        match self.params.iter_mut().find(|(n, _)| n == name.as_bytes()) {
            Some((_, v)) => *v = value.to_vec(),
            None => self.params.push((name.as_bytes().to_vec(), value.to_vec())),
        }
    }

    /// The `user` parameter, lossily as text (for logs).
    pub fn user(&self) -> String {
        String::from_utf8_lossy(self.param("user").unwrap_or_default()).into_owned()
    }

    /// Remove the routing requests PostgreSQL would reject (`pgbaton.target` in `options`,
    /// the `target_session_attrs` parameter) and return the role they ask for;
    /// `pgbaton.target` wins over `target_session_attrs`.
    pub fn take_target(&mut self) -> Result<Option<Target>, ProtocolError> {
        let mut from_attrs = None;
        let mut from_option = None;
        let mut kept = Vec::with_capacity(self.params.len());
        for (name, value) in self.params.drain(..) {
            match name.as_slice() {
                b"target_session_attrs" => from_attrs = Some(session_attrs_target(&value)?),
                b"options" => {
                    let (rewritten, requested) = strip_target_option(&value);
                    if let Some(requested) = requested {
                        from_option = Some(option_target(&requested)?);
                    }
                    if !rewritten.is_empty() {
                        kept.push((name, rewritten));
                    }
                }
                _ => kept.push((name, value)),
            }
        }
        self.params = kept;
        Ok(from_option.or(from_attrs))
    }

    /// Remove `pgbaton.min_lsn` (a startup parameter of that name, or a setting in
    /// `options`) and return its value, unparsed; the last one wins.
    pub fn take_min_lsn(&mut self) -> Option<Vec<u8>> {
        let mut found = None;
        let mut kept = Vec::with_capacity(self.params.len());
        for (name, value) in self.params.drain(..) {
            if name.as_slice() == MIN_LSN_OPTION.as_bytes() {
                found = Some(value);
            } else if name.as_slice() == b"options" {
                let (rewritten, token) = strip_option(&value, MIN_LSN_OPTION);
                if token.is_some() {
                    found = token;
                }
                if !rewritten.is_empty() {
                    kept.push((name, rewritten));
                }
            } else {
                kept.push((name, value));
            }
        }
        self.params = kept;
        found
    }

    /// The message as it goes on the wire (length word included).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = self.version.to_be_bytes().to_vec();
        for (name, value) in &self.params {
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(value);
            body.push(0);
        }
        body.push(0);
        with_length(body)
    }
}

fn with_length(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn session_attrs_target(value: &[u8]) -> Result<Target, ProtocolError> {
    match value.to_ascii_lowercase().as_slice() {
        b"read-write" | b"primary" => Ok(Target::Write),
        b"read-only" | b"standby" | b"prefer-standby" => Ok(Target::Read),
        b"any" => Ok(Target::Any),
        _ => Err(ProtocolError::BadTarget {
            parameter: "target_session_attrs",
            value: String::from_utf8_lossy(value).into_owned(),
            expected: "read-write, primary, read-only, standby, prefer-standby or any",
        }),
    }
}

fn option_target(value: &[u8]) -> Result<Target, ProtocolError> {
    match value.to_ascii_lowercase().as_slice() {
        b"write" | b"primary" | b"leader" => Ok(Target::Write),
        b"read" | b"replica" | b"standby" => Ok(Target::Read),
        b"any" => Ok(Target::Any),
        _ => Err(ProtocolError::BadTarget {
            parameter: TARGET_OPTION,
            value: String::from_utf8_lossy(value).into_owned(),
            expected: "read, write or any",
        }),
    }
}

/// Split `options` like PostgreSQL's `pg_split_opts`: on unescaped whitespace, a backslash
/// escaping the next byte. Tokens keep their backslashes so they can be joined back.
fn split_options(options: &[u8]) -> Vec<&[u8]> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < options.len() {
        while i < options.len() && options[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < options.len() && !options[i].is_ascii_whitespace() {
            i += if options[i] == b'\\' { 2 } else { 1 };
        }
        let end = i.min(options.len());
        if end > start {
            tokens.push(&options[start..end]);
        }
    }
    tokens
}

fn unescape(token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    let mut escaped = false;
    for &b in token {
        if b == b'\\' && !escaped {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// If `setting` (`name=value`, unescaped) sets `option`, its value.
fn option_setting(setting: &[u8], option: &str) -> Option<Vec<u8>> {
    let eq = setting.iter().position(|&b| b == b'=')?;
    let name: Vec<u8> = setting[..eq]
        .iter()
        .map(|b| {
            if *b == b'-' {
                b'_'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect();
    (name == option.as_bytes()).then(|| setting[eq + 1..].to_vec())
}

/// `options` without its `pgbaton.target` settings (`-c x`, `-cx`, `--x`), and the value of
/// the last one.
pub fn strip_target_option(options: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    strip_option(options, TARGET_OPTION)
}

/// `options` without its settings of `option` (`-c x`, `-cx`, `--x`), and the value of the
/// last one.
fn strip_option(options: &[u8], option: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let tokens = split_options(options);
    let mut kept: Vec<&[u8]> = Vec::with_capacity(tokens.len());
    let mut found = None;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        let (setting, width) = if token == b"-c" {
            match tokens.get(i + 1) {
                Some(next) => (Some(unescape(next)), 2),
                None => (None, 1),
            }
        } else if let Some(rest) = token.strip_prefix(b"--") {
            (Some(unescape(rest)), 1)
        } else if let Some(rest) = token.strip_prefix(b"-c") {
            (Some(unescape(rest)), 1)
        } else {
            (None, 1)
        };
        match setting.as_deref().and_then(|s| option_setting(s, option)) {
            Some(value) => found = Some(value),
            None => kept.extend_from_slice(&tokens[i..i + width]),
        }
        i += width;
    }
    (kept.join(&b' '), found)
}

/// A FATAL ErrorResponse (`E`) with SQLSTATE `code`.
pub fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut out = vec![b'E', 0, 0, 0, 0];
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        out.push(field);
        out.extend(value.bytes().filter(|&b| b != 0));
        out.push(0);
    }
    out.push(0);
    let length = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&length.to_be_bytes());
    out
}

/// A CancelRequest packet for `key`.
pub fn cancel_request(key: CancelKey) -> Vec<u8> {
    let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
    body.extend_from_slice(&key.pid.to_be_bytes());
    body.extend_from_slice(&key.secret.to_be_bytes());
    with_length(body)
}

/// A BackendKeyData (`K`) message for `key`.
pub fn backend_key_message(key: CancelKey) -> Vec<u8> {
    let mut out = vec![b'K', 0, 0, 0, 12];
    out.extend_from_slice(&key.pid.to_be_bytes());
    out.extend_from_slice(&key.secret.to_be_bytes());
    out
}

/// The body length of a typed message (`tag`, then a length word counting itself).
pub fn message_body_length(length_word: [u8; 4], max: usize) -> Result<usize, ProtocolError> {
    let length = u32::from_be_bytes(length_word);
    let len = length as usize;
    if !(4..=max).contains(&len) {
        return Err(ProtocolError::BadLength {
            length,
            min: 4,
            max,
        });
    }
    Ok(len - 4)
}

/// The request code of an Authentication (`R`) message body (0 = AuthenticationOk).
pub fn auth_code(body: &[u8]) -> Option<u32> {
    read_u32(body, 0)
}

/// Name and value of a ParameterStatus (`S`) body.
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstring(body)?;
    let (value, _) = cstring(rest)?;
    Some((name, value))
}

/// The key of a BackendKeyData (`K`) body.
pub fn backend_key(body: &[u8]) -> Option<CancelKey> {
    Some(CancelKey {
        pid: read_u32(body, 0)? as i32,
        secret: read_u32(body, 4)? as i32,
    })
}

/// The SQLSTATEs the router answers with itself.
pub(crate) mod sqlstate {
    /// cannot_connect_now.
    pub(crate) const CANNOT_CONNECT_NOW: &str = "57P03";
    /// protocol_violation.
    pub(crate) const PROTOCOL_VIOLATION: &str = "08P01";
    /// invalid_parameter_value.
    pub(crate) const INVALID_PARAMETER: &str = "22023";
    /// connection_failure.
    pub(crate) const CONNECTION_FAILURE: &str = "08006";
}

#[cfg(test)]
mod tests;
