//! Error codes (in `error` frames and HTTP error bodies) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The string form (`AUTH_REQUIRED`, ...) is what
/// travels on the wire; it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The command needs an authenticated connection and this one is not.
    AuthRequired,
    /// The credentials were checked and rejected (bad signature, unknown user, wrong password).
    AuthFailed,
    /// The token expired; send a fresh one with an `auth` command.
    AuthExpired,
    /// The user lacks the capability the command needs on that channel.
    PermissionDenied,
    /// The frame was not valid JSON, had an unknown `type`, or missed a required field.
    InvalidMessage,
    /// The channel's namespace is not configured, or the channel name is malformed.
    UnknownChannel,
    /// A connection limit (global, per IP, per user) was reached.
    ConnectionLimit,
    /// The connection sends commands faster than its token bucket allows.
    RateLimitExceeded,
    /// A message or request body is larger than the configured limit.
    MessageTooBig,
    /// The publications since the given position are no longer in history.
    RecoveryFailed,
    /// The server failed; the request may be retried.
    InternalError,
    /// The requested thing (user, connection, route) does not exist.
    NotFound,
    /// The subscription limit per connection was reached, or a duplicate subscription.
    SubscriptionLimit,
    /// The client is already subscribed to this channel.
    AlreadySubscribed,
    /// The client is not subscribed to this channel.
    NotSubscribed,
}

impl ErrorCode {
    /// The wire form, e.g. `"AUTH_REQUIRED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::AuthExpired => "AUTH_EXPIRED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::UnknownChannel => "UNKNOWN_CHANNEL",
            ErrorCode::ConnectionLimit => "CONNECTION_LIMIT",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::MessageTooBig => "MESSAGE_TOO_BIG",
            ErrorCode::RecoveryFailed => "RECOVERY_FAILED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            ErrorCode::AlreadySubscribed => "ALREADY_SUBSCRIBED",
            ErrorCode::NotSubscribed => "NOT_SUBSCRIBED",
        }
    }

    /// The HTTP status that carries this code in the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthRequired | ErrorCode::AuthFailed | ErrorCode::AuthExpired => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::InvalidMessage => 400,
            ErrorCode::UnknownChannel | ErrorCode::NotFound => 404,
            ErrorCode::ConnectionLimit => 503,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::MessageTooBig => 413,
            ErrorCode::RecoveryFailed => 409,
            ErrorCode::SubscriptionLimit
            | ErrorCode::AlreadySubscribed
            | ErrorCode::NotSubscribed => 409,
            ErrorCode::InternalError => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the hub sends (RFC 6455 §7.4.1). Named constants so that every
/// place that closes a socket says why in the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the client asked to close, or a clean end (e.g. `/api/disconnect` with reconnect off).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down; reconnect to another node or later.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a frame type this endpoint does not accept (binary frames on `ferry.json`).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy: auth deadline missed, token expired and not refreshed, persistent rate
    /// abuse, disconnected by the server API. Clients must not reconnect blindly.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server failed, or the peer stopped answering pings.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later: connection limit reached, or the client read too slowly
    /// (its send queue filled up).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::AuthRequired,
            ErrorCode::RateLimitExceeded,
            ErrorCode::RecoveryFailed,
            ErrorCode::NotSubscribed,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, code);
        }
    }
}
