//! The hub's error type: a stable [`ErrorCode`] plus a message for humans. Transports turn
//! it into an `error` frame, a close code or an HTTP status; they never invent codes.

use ferry_proto::{ErrorCode, ErrorPayload};

/// An error from a hub operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HubError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong and what to do next.
    pub message: String,
    /// Optional machine-readable details.
    pub details: Option<serde_json::Value>,
}

impl HubError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Attach machine-readable details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The wire body of this error.
    pub fn payload(&self) -> ErrorPayload {
        ErrorPayload {
            code: self.code,
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }

    /// Shorthand for `PERMISSION_DENIED` on a channel.
    pub fn permission_denied(what: &str, channel: &str) -> Self {
        HubError::new(
            ErrorCode::PermissionDenied,
            format!("no {what} permission on channel `{channel}`"),
        )
    }
}

/// Result of a hub operation.
pub type HubResult<T> = Result<T, HubError>;
