//! Credentials: what the router knows about a user's password, and PgBouncer's
//! `userlist.txt` format (`auth_file`): one `"user" "password"` per line, `""` for a quote
//! inside a field, lines starting with `;` or `#` ignored. A password is plain text, an md5
//! secret (`md5` + 32 hex digits, md5(password ‖ user)) or a SCRAM secret as in `pg_authid`.

use std::collections::HashMap;

use super::scram::ScramSecret;

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Plain(Vec<u8>),
    /// `md5…`, as stored.
    Md5(String),
    Scram(ScramSecret),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Plain(_) => "Plain(..)",
            Credential::Md5(_) => "Md5(..)",
            Credential::Scram(_) => "Scram(..)",
        })
    }
}

impl Credential {
    /// A stored password as PostgreSQL and PgBouncer read it.
    pub fn from_stored(text: &str) -> Credential {
        let is_md5 = text.len() == 35
            && text.starts_with("md5")
            && text[3..].bytes().all(|b| b.is_ascii_hexdigit());
        if is_md5 {
            return Credential::Md5(text.to_ascii_lowercase());
        }
        match ScramSecret::parse(text) {
            Some(secret) => Credential::Scram(secret),
            None => Credential::Plain(text.as_bytes().to_vec()),
        }
    }
}

/// One quoted field at the start of `rest`, and what follows it.
fn quoted(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if rest[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
            } else {
                return Some((out, &rest[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// The users of a userlist.txt; errors name the line.
pub fn parse(text: &str) -> Result<HashMap<String, Credential>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        let parsed = quoted(trimmed).and_then(|(user, rest)| {
            let (password, rest) = quoted(rest)?;
            Some((user, password, rest))
        });
        match parsed {
            Some((user, password, rest)) if !user.is_empty() => {
                let rest = rest.trim();
                if !rest.is_empty() && !rest.starts_with(';') && !rest.starts_with('#') {
                    return Err(format!(
                        "line {}: unexpected text after the password",
                        i + 1
                    ));
                }
                users.insert(user, Credential::from_stored(&password));
            }
            _ => {
                return Err(format!(
                "line {}: expected \"user\" \"password\" (double quotes, \"\" for a quote inside)",
                i + 1
            ))
            }
        }
    }
    Ok(users)
}

/// The md5 secret of a plain password: `md5` + hex(md5(password ‖ user)).
pub fn md5_secret(password: &[u8], user: &str) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    hasher.update(password);
    hasher.update(user.as_bytes());
    format!("md5{}", hex(&hasher.finalize()))
}

/// The answer to an md5 challenge from the stored secret: `md5` + hex(md5(hex ‖ salt)).
pub fn md5_response(secret: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    hasher.update(secret.trim_start_matches("md5").as_bytes());
    hasher.update(salt);
    format!("md5{}", hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userlist_lines_parse() {
        let text = "; PgBouncer userlist\n\
            \"alice\" \"plain pass\"\n\
            \"bob\" \"md5b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0\"\n\
            \n# another comment\n\
            \"quo\"\"te\" \"pa\"\"ss\"\n\
            \"carol\" \"SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n";
        let users = parse(text).expect("parse");
        assert_eq!(users["alice"], Credential::Plain(b"plain pass".to_vec()));
        assert!(matches!(&users["bob"], Credential::Md5(s) if s.len() == 35));
        assert_eq!(users["quo\"te"], Credential::Plain(b"pa\"ss".to_vec()));
        assert!(matches!(&users["carol"], Credential::Scram(s) if s.iterations == 4096));
        for bad in [
            "alice pass",
            "\"alice\"",
            "\"alice\" \"x\" extra",
            "\"\" \"x\"",
            "\"open",
        ] {
            let e = parse(&format!("\"ok\" \"\"\n{bad}\n")).expect_err(bad);
            assert!(e.starts_with("line 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn md5_matches_postgres() {
        // postgres-protocol computes what PostgreSQL stores.
        let secret = md5_secret(b"secret", "user");
        assert_eq!(secret, postgres_protocol::password::md5(b"secret", "user"));
        // libpq's answer: md5(md5(password ‖ user) hex ‖ salt).
        assert_eq!(md5_response(&secret, [1, 2, 3, 4]).len(), 35);
        assert_ne!(
            md5_response(&secret, [1, 2, 3, 4]),
            md5_response(&secret, [1, 2, 3, 5])
        );
    }
}
