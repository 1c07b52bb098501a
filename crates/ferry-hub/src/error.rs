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

/// Why a hub, or a part of one, could not be set up from its configuration: what
/// [`Hub::new`](crate::Hub::new), [`Authenticator::from_config`](crate::auth::Authenticator::from_config),
/// [`ensure_secrets`](crate::secrets::ensure_secrets) and the server's start return.
/// Every message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A setting that cannot work as given.
    #[error("{0}")]
    Config(String),
    /// A file the configuration names could not be read, created or written.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was attempted: `read`, `create` or `write`.
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file the configuration names was read but is not what it should be.
    #[error("{} is not valid: {source}; fix or delete it", path.display())]
    InvalidFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SQLite history file could not be opened (in use, damaged, read-only).
    #[error(transparent)]
    History(#[from] crate::store::sqlite::StoreError),
    /// The broker URL cannot be used (the URL is shown without its password).
    #[error("broker {url}: {source}")]
    Broker {
        /// The URL, credentials redacted.
        url: String,
        /// What the client library said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SetupError {
    /// A file operation that failed.
    pub(crate) fn file(
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        SetupError::File {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
