//! The one place errors become wire replies: `{"Err": "…"}` with a status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::ErrResponse;
use crate::driver::{DriverError, SecretError};
use crate::report::chain;

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
            | DriverError::ReadOnly { .. }
            | DriverError::Directory { .. }
            | DriverError::State { .. }
            | DriverError::Record { .. }
            | DriverError::Internal { .. }
            | DriverError::Userns { .. }
            | DriverError::UsernsDiffer { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, message: chain(&e) }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        let status = match &e {
            SecretError::InvalidName { .. }
            | SecretError::InvalidTask { .. }
            | SecretError::Labels { .. }
            | SecretError::Render { .. }
            | SecretError::TooLarge { .. } => StatusCode::BAD_REQUEST,
            SecretError::NoIdentity { .. }
            | SecretError::Token { .. }
            | SecretError::Read { .. } => StatusCode::BAD_GATEWAY,
            SecretError::State { .. } | SecretError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError { status, message: chain(&e) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrResponse { err: self.message })).into_response()
    }
}
