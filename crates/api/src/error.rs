//! Why a read request could not be answered, and how each reason becomes an HTTP response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::lag::LagParseError;
use crate::metrics::MetricsError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller's query string is wrong: 400, fix the URL.
    #[error(transparent)]
    BadLag(#[from] LagParseError),
    /// The metrics text could not be built: 500, a bug to report.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self {
            ApiError::BadLag(_) => StatusCode::BAD_REQUEST,
            ApiError::Metrics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(status = code.as_u16(), error = %self, "REST request failed");
        (code, format!("{self}\n")).into_response()
    }
}
