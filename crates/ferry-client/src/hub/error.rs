//! Errors of the hub client: the server's error codes, or the transport's.

use std::fmt;

use ferry_proto::{ErrorCode, ErrorPayload};

/// A failed hub call: either the server answered with an `error` frame (a stable
/// [`ErrorCode`] such as `PERMISSION_DENIED`), or the WebSocket failed (timeout, queue
/// full, connection lost, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum HubError {
    /// The server refused the command.
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// Extra machine-readable context, if any.
        details: Option<serde_json::Value>,
    },
    /// The transport failed.
    Transport(crate::ws::Error),
    /// The server's answer did not have the documented shape.
    Decode(String),
}

impl HubError {
    /// The stable code: the server's (`AUTH_REQUIRED`, ...), the transport's (`TIMEOUT`,
    /// `QUEUE_FULL`, ...) or `DECODE_ERROR`.
    pub fn code(&self) -> &str {
        match self {
            HubError::Server { code, .. } => code.as_str(),
            HubError::Transport(e) => e.code(),
            HubError::Decode(_) => "DECODE_ERROR",
        }
    }

    /// The server's code, when the server refused.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            HubError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The transport error, when the transport failed.
    pub fn transport(&self) -> Option<&crate::ws::Error> {
        match self {
            HubError::Transport(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn from_payload(p: ErrorPayload) -> Self {
        HubError::Server {
            code: p.code,
            message: p.message,
            details: p.details,
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Server { code, message, .. } => write!(f, "{code}: {message}"),
            HubError::Transport(e) => e.fmt(f),
            HubError::Decode(m) => write!(f, "DECODE_ERROR: {m}"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<crate::ws::Error> for HubError {
    fn from(e: crate::ws::Error) -> Self {
        HubError::Transport(e)
    }
}
