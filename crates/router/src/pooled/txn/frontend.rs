//! Client (frontend) messages after the startup, on raw bytes and without I/O: where the
//! next whole message ends, and what the relay needs to know of it. Bodies the router does
//! not need (Bind's parameters, CopyData) are not looked into; the server checks them.
//! Malformed input is an error, never a panic (fuzzed in tests).

/// PostgreSQL's limit on a message (PQ_LARGE_MESSAGE_LIMIT is 1 GB - 1).
pub(crate) const MAX_MESSAGE: usize = (1 << 30) - 1;
/// PostgreSQL's limit for messages that carry no data (PQ_SMALL_MESSAGE_LIMIT).
const SMALL_MESSAGE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrontendError {
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
    #[error("invalid message length {length} for message type \"{tag}\"")]
    BadLength { tag: char, length: u32 },
    #[error("invalid {0} message format")]
    Malformed(&'static str),
}

/// A message the relay treats specially; everything else passes as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frontend<'a> {
    /// Simple query text (without its NUL).
    Query(&'a [u8]),
    /// Statement name, and everything after it (query, parameter types).
    Parse {
        name: &'a [u8],
        definition: &'a [u8],
    },
    /// Portal, statement, and everything after the statement name.
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
        rest: &'a [u8],
    },
    Describe {
        kind: u8,
        name: &'a [u8],
    },
    Close {
        kind: u8,
        name: &'a [u8],
    },
    /// Portal name.
    Execute {
        portal: &'a [u8],
    },
    Sync,
    Flush,
    Terminate,
    /// CopyData.
    Copy,
    /// CopyDone, CopyFail.
    CopyEnd,
    FunctionCall,
}

/// The length of the first whole message in `buf` (tag included), None if incomplete.
pub(crate) fn message_len(buf: &[u8]) -> Result<Option<usize>, FrontendError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some(word) = buf.get(1..5) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    let max = match tag {
        b'Q' | b'P' | b'B' | b'd' | b'f' | b'F' => MAX_MESSAGE,
        b'S' | b'H' | b'X' | b'c' | b'C' | b'D' | b'E' => SMALL_MESSAGE,
        other => return Err(FrontendError::UnknownType(other)),
    };
    if length < 4 || length as usize > max {
        return Err(FrontendError::BadLength {
            tag: tag as char,
            length,
        });
    }
    let total = 1 + length as usize;
    Ok((buf.len() >= total).then_some(total))
}

fn cstring<'a>(bytes: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), FrontendError> {
    let nul = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(FrontendError::Malformed(what))?;
    Ok((&bytes[..nul], &bytes[nul + 1..]))
}

/// Read one whole message (as `message_len` delimited it).
pub(crate) fn parse(raw: &[u8]) -> Result<Frontend<'_>, FrontendError> {
    let tag = *raw.first().ok_or(FrontendError::Malformed("empty"))?;
    let body = raw.get(5..).ok_or(FrontendError::Malformed("short"))?;
    Ok(match tag {
        b'Q' => {
            let (text, rest) = cstring(body, "Query")?;
            if !rest.is_empty() {
                return Err(FrontendError::Malformed("Query"));
            }
            Frontend::Query(text)
        }
        b'P' => {
            let (name, definition) = cstring(body, "Parse")?;
            let (_query, types) = cstring(definition, "Parse")?;
            let count = types
                .get(..2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
                .ok_or(FrontendError::Malformed("Parse"))?;
            if types.len() != 2 + 4 * count {
                return Err(FrontendError::Malformed("Parse"));
            }
            Frontend::Parse { name, definition }
        }
        b'B' => {
            let (portal, after) = cstring(body, "Bind")?;
            let (statement, rest) = cstring(after, "Bind")?;
            Frontend::Bind {
                portal,
                statement,
                rest,
            }
        }
        b'D' | b'C' => {
            let (&kind, named) = body
                .split_first()
                .ok_or(FrontendError::Malformed("Describe/Close"))?;
            if kind != b'S' && kind != b'P' {
                return Err(FrontendError::Malformed("Describe/Close"));
            }
            let (name, rest) = cstring(named, "Describe/Close")?;
            if !rest.is_empty() {
                return Err(FrontendError::Malformed("Describe/Close"));
            }
            if tag == b'D' {
                Frontend::Describe { kind, name }
            } else {
                Frontend::Close { kind, name }
            }
        }
        b'E' => {
            let (portal, rest) = cstring(body, "Execute")?;
            if rest.len() != 4 {
                return Err(FrontendError::Malformed("Execute"));
            }
            Frontend::Execute { portal }
        }
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'd' => Frontend::Copy,
        b'c' | b'f' => Frontend::CopyEnd,
        b'F' => Frontend::FunctionCall,
        other => return Err(FrontendError::UnknownType(other)),
    })
}

/// A typed message (`tag`, length, body).
pub(crate) fn message(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(5 + len);
    out.push(tag);
    out.extend_from_slice(&((len + 4) as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_delimited_and_read() {
        let parse_msg = message(b'P', &[b"s1\0", b"SELECT $1\0", &[0, 1, 0, 0, 0, 23]]);
        let bind = message(b'B', &[b"\0s1\0", &[0, 0, 0, 0, 0, 0]]);
        let mut stream = parse_msg.clone();
        stream.extend_from_slice(&bind);
        assert_eq!(message_len(&stream), Ok(Some(parse_msg.len())));
        assert_eq!(message_len(&stream[..3]), Ok(None));
        assert_eq!(message_len(&parse_msg[..parse_msg.len() - 1]), Ok(None));
        assert_eq!(
            parse(&parse_msg),
            Ok(Frontend::Parse {
                name: b"s1",
                definition: b"SELECT $1\0\0\x01\0\0\0\x17"
            })
        );
        assert!(matches!(
            parse(&bind),
            Ok(Frontend::Bind {
                portal: b"",
                statement: b"s1",
                ..
            })
        ));
        assert_eq!(
            parse(&message(b'C', &[b"Sname\0"])),
            Ok(Frontend::Close {
                kind: b'S',
                name: b"name"
            })
        );
        assert_eq!(
            parse(&message(b'Q', &[b"select 1\0"])),
            Ok(Frontend::Query(b"select 1"))
        );
        assert_eq!(parse(&message(b'S', &[])), Ok(Frontend::Sync));
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            message_len(b"Z\0\0\0\x04"),
            Err(FrontendError::UnknownType(b'Z'))
        );
        assert!(matches!(
            message_len(b"Q\0\0\0\x02"),
            Err(FrontendError::BadLength { .. })
        ));
        assert!(matches!(
            message_len(b"S\x7f\0\0\0"),
            Err(FrontendError::BadLength { .. })
        ));
        assert!(parse(&message(b'P', &[b"s1\0select\0", &[0, 2, 0, 0, 0, 23]])).is_err());
        assert!(parse(&message(b'D', &[b"Xname\0"])).is_err());
        assert!(parse(&message(b'Q', &[b"no nul"])).is_err());
        assert!(parse(&message(b'E', &[b"\0\0"])).is_err());
    }

    /// Any bytes: delimiting and parsing never panic, and a delimited message parses or
    /// fails cleanly. 1,000,000 inputs from a fixed seed (`PGBATON_FUZZ_INPUTS` for more,
    /// `PGBATON_FUZZ_SEED` for another seed): a third random bytes, a third well-framed
    /// messages of every tag with random bodies, a third valid messages with bytes flipped,
    /// cut or repeated. (tests/pooling.rs sends such bytes to a running router.)
    #[test]
    fn the_parser_survives_a_million_random_inputs() {
        use rand::rngs::StdRng;
        use rand::{Rng, RngCore, SeedableRng};
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let inputs = env("PGBATON_FUZZ_INPUTS", 1_000_000).max(1_000_000);
        let mut rng = StdRng::seed_from_u64(env("PGBATON_FUZZ_SEED", 0x5eed_ba70));
        let tags = b"QPBDCESHXdcfFZp\0";
        let valid = [
            message(b'P', &[b"s1\0", b"SELECT $1\0", &[0, 1, 0, 0, 0, 23]]),
            message(b'B', &[b"\0s1\0", &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]]),
            message(b'D', &[b"Ss1\0"]),
            message(b'C', &[b"Pportal\0"]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            message(b'Q', &[b"select 1\0"]),
            message(b'S', &[]),
        ];
        let check = |bytes: &[u8]| {
            let mut rest = bytes;
            while let Ok(Some(len)) = message_len(rest) {
                let _ = parse(&rest[..len]);
                rest = &rest[len..];
            }
        };
        let mut buf = Vec::with_capacity(256);
        for i in 0..inputs {
            buf.clear();
            match i % 3 {
                0 => {
                    buf.resize(rng.random_range(0..96), 0);
                    rng.fill_bytes(&mut buf);
                }
                1 => {
                    let mut body = vec![0u8; rng.random_range(0..48)];
                    rng.fill_bytes(&mut body);
                    // Sprinkle NULs so cstrings end in odd places.
                    for b in body.iter_mut() {
                        if rng.random_range(0..4) == 0 {
                            *b = 0;
                        }
                    }
                    buf = message(tags[rng.random_range(0..tags.len())], &[&body]);
                }
                _ => {
                    for _ in 0..rng.random_range(1..4) {
                        buf.extend_from_slice(&valid[rng.random_range(0..valid.len())]);
                    }
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..buf.len());
                        match rng.random_range(0..3) {
                            0 => buf[at] = rng.random(),
                            1 => buf.truncate(at),
                            _ => buf.insert(at, rng.random()),
                        }
                        if buf.is_empty() {
                            break;
                        }
                    }
                }
            }
            check(&buf);
        }
    }
}
