//! HTTP basic authentication of the write endpoints (`restapi.authentication`): a request
//! without the configured user and password is answered 401 with
//! `WWW-Authenticate: Basic realm="pgbaton"` and changes nothing.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use pgbaton_config::Credentials;
use serde_json::json;

/// Why the credentials of a request were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send HTTP basic auth with restapi.authentication's username and password")]
    Missing,
    #[error("the Authorization header is not HTTP basic auth (Basic base64(user:password))")]
    Malformed,
    #[error("wrong username or password")]
    Wrong,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "REST write request refused: 401");
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"pgbaton\"")],
            Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Accept the request when no authentication is configured, or when its basic-auth user and
/// password equal the configured ones (a configured user without password means "").
pub fn check(expected: Option<&Credentials>, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let (user, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
    let want_password = expected.password.as_deref().unwrap_or("");
    if constant_time_eq(user.as_bytes(), expected.username.as_bytes())
        & constant_time_eq(password.as_bytes(), want_password.as_bytes())
    {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The `Authorization` header value for `user:password` (for clients and tests).
pub fn basic_header(username: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {token}")
}
