//! The one error type of the WebSocket client (and of the hub client's transport layer).

use std::fmt;

/// What kind of failure an [`Error`] is. The [`code`](ErrorKind::code) strings are stable
/// and are what the CLI prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL is malformed or not `ws://`/`wss://`, or a header or subprotocol is invalid.
    InvalidUrl,
    /// The TCP connection failed: refused, unreachable, DNS failure, reset.
    Connection,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The server answered the upgrade with an HTTP status instead of `101`.
    HttpStatus,
    /// The peer broke the WebSocket protocol (bad handshake, subprotocol mismatch, bad frame).
    Protocol,
    /// A connect or request deadline passed.
    Timeout,
    /// The bounded outgoing queue is full: the connection is down (or slow) and the
    /// queue reached its capacity.
    QueueFull,
    /// The WebSocket is closed for good (closed by the user, by the server with a final
    /// code, or after too many failed attempts); nothing more can be sent.
    Closed,
    /// The connection dropped. For a request: after it was written and before its reply
    /// arrived; it may or may not have reached the server, so it is not resent. For an
    /// event stream: the server ended it.
    ConnectionLost,
    /// A message could not be encoded or decoded (JSON).
    Decode,
}

impl ErrorKind {
    /// The stable code, e.g. `"QUEUE_FULL"`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidUrl => "INVALID_URL",
            ErrorKind::Connection => "CONNECTION_ERROR",
            ErrorKind::Tls => "TLS_ERROR",
            ErrorKind::HttpStatus => "HTTP_STATUS",
            ErrorKind::Protocol => "PROTOCOL_ERROR",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::QueueFull => "QUEUE_FULL",
            ErrorKind::Closed => "CLOSED",
            ErrorKind::ConnectionLost => "CONNECTION_LOST",
            ErrorKind::Decode => "DECODE_ERROR",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A WebSocket client error: a [`kind`](Error::kind) with a stable code, a human-readable
/// message and, for [`ErrorKind::HttpStatus`], the status the server answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
        }
    }

    pub(crate) fn http_status(status: u16, message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::HttpStatus,
            message: message.into(),
            status: Some(status),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of the kind, e.g. `"CONNECTION_ERROR"`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// What happened, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of a refused upgrade ([`ErrorKind::HttpStatus`]).
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// A connect or request deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The connection could not be established (TCP, TLS, HTTP status or handshake).
    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connection | ErrorKind::Tls | ErrorKind::HttpStatus | ErrorKind::Protocol
        )
    }

    /// The outgoing queue was full.
    pub fn is_queue_full(&self) -> bool {
        self.kind == ErrorKind::QueueFull
    }

    /// The WebSocket is closed for good.
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}
