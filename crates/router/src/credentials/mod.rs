//! What the router's client authentication is configured with (the `auth:` section of
//! router.yml) and the rules and users it names, read and checked at start: pg_hba-style
//! rules (`hba`), PgBouncer's userlist.txt (`userlist`), SCRAM secrets and exchanges
//! (`scram`). The configuration reads this to refuse a bad `auth:` naming the key; the
//! client authentication at run time (`auth`) and the server logins (`pool::server`) use the
//! same rules and secrets.

pub(crate) mod hba;
pub mod scram;
pub mod userlist;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::RouterConfigError;
use hba::HbaRule;
pub use hba::Method;
use userlist::Credential;

/// `auth.auth_type`: one method for everybody, or the rules of `auth.hba`/`auth_hba_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Method(Method),
    Hba,
}

impl AuthType {
    pub fn label(self) -> &'static str {
        match self {
            AuthType::Method(m) => m.label(),
            AuthType::Hba => "hba",
        }
    }
}

/// The `auth:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// `auth_type` (PgBouncer's; default `md5`, or `hba` when `hba` lines are given).
    pub auth_type: AuthType,
    /// `hba`: pg_hba.conf lines, used with `auth_type: hba`.
    pub hba: Vec<String>,
    /// `auth_hba_file`: a pg_hba.conf-format file (read at start), after the `hba` lines.
    pub auth_hba_file: Option<PathBuf>,
    /// `auth_file`: userlist.txt.
    pub auth_file: Option<PathBuf>,
    /// `auth_user`: the role `auth_query` runs as (its password from `auth_file`); without
    /// it `auth_query` is not used.
    pub auth_user: Option<String>,
    /// `auth_query`: `$1` is the user name; answers (name, password).
    pub auth_query: String,
    /// `auth_dbname`: the database `auth_query` runs in (default: the client's).
    pub auth_dbname: Option<String>,
    /// `auth_query_cache_ttl`: how long an answer of `auth_query` is used.
    pub auth_query_cache_ttl: Duration,
}

/// PgBouncer 1.21's default.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname = $1 AND rolcanlogin";

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            auth_type: AuthType::Method(Method::Md5),
            hba: Vec::new(),
            auth_hba_file: None,
            auth_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_dbname: None,
            auth_query_cache_ttl: Duration::from_secs(30),
        }
    }
}

/// The rules and users `auth:` names, read and checked.
pub(crate) struct Credentials {
    pub rules: Vec<HbaRule>,
    pub users: HashMap<String, Credential>,
}

fn invalid(key: &str, reason: String) -> RouterConfigError {
    crate::yaml::invalid(key, &reason)
}

impl Credentials {
    /// Read `auth_file` and the hba rules; every error names its key and line.
    pub(crate) fn load(cfg: &AuthConfig) -> Result<Credentials, RouterConfigError> {
        let mut lines = cfg.hba.clone();
        let rules = hba::parse(&lines).map_err(|e| invalid("auth.hba", e))?;
        let mut rules = rules;
        if let Some(path) = &cfg.auth_hba_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "auth.auth_hba_file",
                    format!("cannot be read ({}): {e}", path.display()),
                )
            })?;
            lines = text.lines().map(str::to_string).collect();
            rules.extend(
                hba::parse(&lines).map_err(|e| {
                    invalid("auth.auth_hba_file", format!("{}: {e}", path.display()))
                })?,
            );
        }
        if cfg.auth_type == AuthType::Hba && rules.is_empty() {
            return Err(invalid(
                "auth.auth_type",
                "is hba but there are no rules: give auth.hba lines or auth.auth_hba_file".into(),
            ));
        }
        let users = match &cfg.auth_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "auth.auth_file",
                        format!("cannot be read ({}): {e}", path.display()),
                    )
                })?;
                userlist::parse(&text)
                    .map_err(|e| invalid("auth.auth_file", format!("{}: {e}", path.display())))?
            }
            None => HashMap::new(),
        };
        let needs_passwords = match cfg.auth_type {
            AuthType::Method(Method::Trust | Method::Reject | Method::Cert) => false,
            AuthType::Method(_) => true,
            AuthType::Hba => rules
                .iter()
                .any(|r| !matches!(r.method, Method::Trust | Method::Reject | Method::Cert)),
        };
        if needs_passwords && cfg.auth_file.is_none() && cfg.auth_user.is_none() {
            return Err(RouterConfigError::Missing {
                key: "auth.auth_file".into(),
                hint: "password methods need users: an auth_file (PgBouncer's userlist.txt) or auth_user for auth_query",
            });
        }
        Ok(Credentials { rules, users })
    }

    /// Whether any rule asks for a client certificate (then `tls_cafile` is needed).
    pub(crate) fn use_client_certificates(&self, auth_type: AuthType) -> bool {
        match auth_type {
            AuthType::Method(m) => m == Method::Cert,
            AuthType::Hba => self
                .rules
                .iter()
                .any(|r| r.clientcert != hba::ClientCert::None),
        }
    }
}
