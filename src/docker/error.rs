//! The one place errors become wire replies: `{"Err": "…"}` with a status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::ErrResponse;
use crate::driver::DriverError;

/// An error as Docker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

/// The error and its causes, joined with `: ` (what `{:#}` prints for anyhow).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Text from a remote party (Vault's `errors`, the Docker Engine's `message`) made fit for one
/// log line: newlines folded, at most `max` bytes.
pub fn one_line(text: &str, max: usize) -> String {
    let mut text = text.replace(['\n', '\r'], " ");
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        let status = match &e {
            DriverError::InvalidName { .. }
            | DriverError::InvalidMountId { .. }
            | DriverError::Options { .. }
            | DriverError::Render { .. } => StatusCode::BAD_REQUEST,
            DriverError::NoSuchVolume { .. } => StatusCode::NOT_FOUND,
            DriverError::IdentityGone { .. } => StatusCode::GONE,
            DriverError::Exists { .. } | DriverError::InUse { .. } => StatusCode::CONFLICT,
            DriverError::ChildToken { .. }
            | DriverError::Read { .. }
            | DriverError::NoIdentity { .. }
            | DriverError::Renew { .. }
            | DriverError::Rotate { .. } => StatusCode::BAD_GATEWAY,
            DriverError::Mount { .. }
            | DriverError::Write { .. }
            | DriverError::Directory { .. }
            | DriverError::State { .. }
            | DriverError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, message: chain(&e) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrResponse { err: self.message })).into_response()
    }
}
