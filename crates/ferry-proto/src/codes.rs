//! Error codes (in `error` frames and HTTP error bodies) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Declares `ErrorCode` with each code's wire name written once, next to its variant.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $wire:literal, )*) => {
        /// A stable, machine-readable error code. The string form (`AUTH_REQUIRED`, ...) is
        /// what travels on the wire; it never changes once released. Non-exhaustive: a
        /// later release may add codes, so a match needs a fallback arm.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$name),*];

            /// The wire form, e.g. `"AUTH_REQUIRED"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $wire,)*
                }
            }

            /// The code a wire name stands for; `None` for a name this release does not
            /// know.
            pub fn from_wire(name: &str) -> Option<ErrorCode> {
                match name {
                    $($wire => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The command needs an authenticated connection and this one is not.
    AuthRequired = "AUTH_REQUIRED",
    /// The credentials were checked and rejected (bad signature, unknown user, wrong password).
    AuthFailed = "AUTH_FAILED",
    /// The token expired; send a fresh one with an `auth` command.
    AuthExpired = "AUTH_EXPIRED",
    /// The user lacks the capability the command needs on that channel.
    PermissionDenied = "PERMISSION_DENIED",
    /// The frame was not valid JSON or MessagePack, had an unknown `type`, or missed a
    /// required field.
    InvalidMessage = "INVALID_MESSAGE",
    /// The channel's namespace is not configured, or the channel name is malformed.
    UnknownChannel = "UNKNOWN_CHANNEL",
    /// A connection limit (global, per IP, per user) was reached.
    ConnectionLimit = "CONNECTION_LIMIT",
    /// The connection sends commands faster than its token bucket allows.
    RateLimitExceeded = "RATE_LIMIT_EXCEEDED",
    /// A message or request body is larger than the configured limit.
    MessageTooBig = "MESSAGE_TOO_BIG",
    /// The publications since the given position are no longer in history.
    RecoveryFailed = "RECOVERY_FAILED",
    /// The server failed; the request may be retried.
    InternalError = "INTERNAL_ERROR",
    /// The requested thing (user, connection, route) does not exist.
    NotFound = "NOT_FOUND",
    /// The subscription limit per connection was reached, or a duplicate subscription.
    SubscriptionLimit = "SUBSCRIPTION_LIMIT",
    /// The client is already subscribed to this channel.
    AlreadySubscribed = "ALREADY_SUBSCRIBED",
    /// The client is not subscribed to this channel.
    NotSubscribed = "NOT_SUBSCRIBED",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        ErrorCode::from_wire(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code `{name}`")))
    }
}

impl ErrorCode {
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
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, code);
            let packed: ErrorCode =
                rmp_serde::from_slice(&rmp_serde::to_vec(&code).expect("msgpack")).expect("parse");
            assert_eq!(packed, code);
        }
        assert_eq!(ErrorCode::RateLimitExceeded.as_str(), "RATE_LIMIT_EXCEEDED");
        assert!(serde_json::from_str::<ErrorCode>("\"NO_SUCH_CODE\"").is_err());
    }
}
