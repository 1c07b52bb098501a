//! The JSON envelope `{"type", "id"?, "payload", "timestamp"?}` and the typed commands,
//! replies and pushes that travel inside it. docs/PROTOCOL.md is the normative description;
//! this module is its one implementation.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::codes::ErrorCode;
use crate::data::Data;

/// A frame as it arrives, before its payload is interpreted.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// The frame type: a command name from a client, a push or `reply`/`error` from the server.
    #[serde(rename = "type")]
    pub kind: String,
    /// Correlation id chosen by the client, as written; echoed in the one answer to the
    /// command (see [`FrameId`]).
    #[serde(default)]
    pub id: Option<Box<RawValue>>,
    /// The type-specific body; absent means `{}`.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// Optional client-side timestamp (milliseconds since the Unix epoch); informational.
    #[serde(default)]
    pub timestamp: Option<u64>,
}

/// A command's correlation id exactly as the client wrote it: a JSON string or number,
/// echoed byte for byte in the answer. A number is never converted, so ids beyond 2^64
/// (`18446744073709551617`) or with a fraction (`1.50`) come back unchanged instead of
/// as a rounded float.
#[derive(Debug, Clone)]
pub struct FrameId(Box<RawValue>);

impl PartialEq for FrameId {
    fn eq(&self, other: &FrameId) -> bool {
        self.json() == other.json()
    }
}

impl Eq for FrameId {}

impl FrameId {
    /// Read an envelope's raw `id`: `None` for `null`, an error for anything that is not
    /// a string or a number.
    fn from_raw(raw: Box<RawValue>) -> Result<Option<FrameId>, InvalidMessage> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Ok(Some(FrameId(raw))),
            Some(b'n') => Ok(None),
            _ => Err(InvalidMessage::new("`id` must be a string or a number")),
        }
    }

    /// A string id (what a client puts in the commands it makes).
    pub fn string(id: &str) -> FrameId {
        // A JSON string always serialises, and is always a valid raw value.
        let raw = serde_json::value::to_raw_value(id).unwrap_or_else(|_| RawValue::NULL.to_owned());
        FrameId(raw)
    }

    /// The id as JSON text, e.g. `"a1"` (with quotes) or `18446744073709551617`.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for FrameId {
    /// As written in JSON; in a binary format (MessagePack) as the string or number it is.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            serde_json::from_str::<Value>(self.0.get())
                .map_err(serde::ser::Error::custom)?
                .serialize(s)
        }
    }
}

/// Why a frame could not be turned into a command. Always answered with `INVALID_MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidMessage {
    /// A human-readable description naming the field or type at fault.
    pub message: String,
}

impl InvalidMessage {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        InvalidMessage {
            message: message.into(),
        }
    }
}

/// `auth`: present a JWT on an open connection (first auth, or a refresh after expiry).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCommand {
    /// The JWT.
    pub token: String,
}

/// `subscribe`: start receiving a channel's publications, optionally recovering missed ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeCommand {
    /// The channel, e.g. `chat:lobby`.
    pub channel: String,
    /// Ask for the publications after `offset` in `epoch` to be returned in the reply.
    #[serde(default)]
    pub recover: bool,
    /// The last offset the client saw (with `recover`).
    #[serde(default)]
    pub offset: Option<u64>,
    /// The epoch that offset belongs to (with `recover`).
    #[serde(default)]
    pub epoch: Option<String>,
}

/// A command that names only a channel (`unsubscribe`, `presence`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCommand {
    /// The channel.
    pub channel: String,
}

/// `publish`: send data to every subscriber of a channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCommand {
    /// The channel.
    pub channel: String,
    /// Any value: JSON text from `ferry.json`, a MessagePack value from `ferry.msgpack`;
    /// delivered byte for byte to subscribers of the same codec.
    pub data: Data,
    /// Do not deliver this publication back to the publishing connection.
    #[serde(default)]
    pub skip_self: bool,
}

/// `history`: read a channel's retained publications.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryCommand {
    /// The channel.
    pub channel: String,
    /// Return publications with an offset strictly greater than this (forward) or strictly
    /// smaller (reverse). Absent: from the oldest (forward) or the newest (reverse).
    #[serde(default)]
    pub since: Option<u64>,
    /// At most this many publications (capped by the server, default 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

/// A parsed client command.
#[derive(Debug, Clone)]
pub enum Command {
    /// `auth`
    Auth(AuthCommand),
    /// `subscribe`
    Subscribe(SubscribeCommand),
    /// `unsubscribe`
    Unsubscribe(ChannelCommand),
    /// `publish`
    Publish(PublishCommand),
    /// `history`
    History(HistoryCommand),
    /// `presence`
    Presence(ChannelCommand),
    /// `ping`
    Ping,
    /// `batch`: several commands in one frame, answered one by one. An inner command that
    /// does not parse is kept as its error, so it is answered in its turn (with its own id
    /// where it had a readable one) and the rest of the batch still runs.
    Batch(Vec<Result<Frame, FrameError>>),
}

/// One parsed command with its correlation id.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The id to echo in the answer; `None` means the client wants no reply.
    pub id: Option<FrameId>,
    /// The command.
    pub command: Command,
}

/// A frame that failed to parse, keeping whatever id could be read so the error can be
/// correlated.
#[derive(Debug, Clone)]
pub struct FrameError {
    /// The id, if the envelope carried a usable one.
    pub id: Option<FrameId>,
    /// What was wrong.
    pub error: InvalidMessage,
}

/// The largest number of commands one `batch` may carry.
pub const MAX_BATCH: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchPayload {
    commands: Vec<Box<RawValue>>,
}

/// Parse one text frame into a command.
///
/// Errors are values: malformed JSON, an unknown `type`, a missing or mistyped field, or an
/// `id` that is neither a string nor a number all give a [`FrameError`].
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| FrameError {
        id: None,
        error: InvalidMessage::new(format!("malformed frame: {e}")),
    })?;
    parse_envelope(envelope, true)
}

fn parse_envelope(envelope: Envelope, allow_batch: bool) -> Result<Frame, FrameError> {
    let id = match envelope.id {
        None => None,
        Some(raw) => FrameId::from_raw(raw).map_err(|error| FrameError { id: None, error })?,
    };
    let fail = |message: String| FrameError {
        id: id.clone(),
        error: InvalidMessage::new(message),
    };
    let raw = envelope
        .payload
        .as_deref()
        .map(RawValue::get)
        .unwrap_or("{}");
    let kind = envelope.kind.as_str();
    let command = match kind {
        "auth" => Command::Auth(payload(kind, raw).map_err(fail)?),
        "subscribe" => Command::Subscribe(payload(kind, raw).map_err(fail)?),
        "unsubscribe" => Command::Unsubscribe(payload(kind, raw).map_err(fail)?),
        "publish" => Command::Publish(payload(kind, raw).map_err(fail)?),
        "history" => Command::History(payload(kind, raw).map_err(fail)?),
        "presence" => Command::Presence(payload(kind, raw).map_err(fail)?),
        "ping" => Command::Ping,
        "batch" if allow_batch => {
            let batch: BatchPayload = payload(kind, raw).map_err(fail)?;
            if batch.commands.len() > MAX_BATCH {
                return Err(fail(format!(
                    "a batch carries at most {MAX_BATCH} commands, this one has {}",
                    batch.commands.len()
                )));
            }
            let frames = batch
                .commands
                .into_iter()
                .map(|raw| {
                    let inner: Envelope =
                        serde_json::from_str(raw.get()).map_err(|e| FrameError {
                            id: None,
                            error: InvalidMessage::new(format!("malformed command in batch: {e}")),
                        })?;
                    parse_envelope(inner, false)
                })
                .collect();
            Command::Batch(frames)
        }
        "batch" => return Err(fail("a batch cannot contain another batch".into())),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(fail(format!(
                "unknown type `{shown}`; expected one of auth, subscribe, unsubscribe, publish, history, presence, ping, batch"
            )));
        }
    };
    Ok(Frame { id, command })
}

fn payload<T: for<'de> Deserialize<'de>>(kind: &str, raw: &str) -> Result<T, String> {
    serde_json::from_str(raw).map_err(|e| format!("invalid `{kind}` payload: {e}"))
}

/// Who published: the user id (empty for anonymous) and the connection id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The user (`sub` claim); empty string for an anonymous connection or the server API.
    pub user: String,
    /// The connection id, unique per server process; empty for the server API.
    pub client: String,
}

/// A publication as it travels in `message` pushes, history replies and SSE events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// Position in the channel: 1 for the first publication of an epoch, +1 for each next.
    pub offset: u64,
    /// The lifetime of the channel's history this offset belongs to.
    pub epoch: String,
    /// The published value, unchanged in its own codec.
    pub data: Data,
    /// Who published it; absent for publications made through the server API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub time: u64,
}

/// The body of an `error` frame and of every HTTP API error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong and, where possible, what to do next.
    pub message: String,
    /// Extra machine-readable context (e.g. `retry_after_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: Vec<u8>) -> String {
        String::from_utf8(frame).expect("JSON is UTF-8")
    }

    #[test]
    fn parses_the_documented_subscribe_example() {
        let f = parse_frame(r#"{"type":"subscribe","id":"1","payload":{"channel":"chat:lobby"}}"#)
            .expect("valid");
        assert_eq!(f.id.as_ref().map(FrameId::json), Some(r#""1""#));
        match f.command {
            Command::Subscribe(s) => assert_eq!(s.channel, "chat:lobby"),
            other => panic!("wrong command {other:?}"),
        }
    }

    #[test]
    fn publish_keeps_data_byte_for_byte() {
        let f = parse_frame(
            r#"{"type":"publish","id":7,"payload":{"channel":"c","data":{"b":1, "a":[2 ,3]}}}"#,
        )
        .expect("valid");
        match f.command {
            Command::Publish(p) => assert_eq!(p.data.to_json().get(), r#"{"b":1, "a":[2 ,3]}"#),
            other => panic!("wrong command {other:?}"),
        }
    }

    #[test]
    fn errors_keep_the_id_when_they_can() {
        let e = parse_frame(r#"{"type":"subscribe","id":"9","payload":{}}"#).expect_err("missing");
        assert_eq!(e.id.as_ref().map(FrameId::json), Some(r#""9""#));
        assert!(e.error.message.contains("channel"), "{}", e.error.message);
        let e = parse_frame(r#"{"type":"nope","id":"3"}"#).expect_err("unknown");
        assert!(e.error.message.contains("unknown type `nope`"));
        let e = parse_frame("{not json").expect_err("malformed");
        assert!(e.id.is_none());
        let e = parse_frame(r#"{"type":"ping","id":{"x":1}}"#).expect_err("bad id");
        assert!(e.error.message.contains("`id`"));
    }

    #[test]
    fn numeric_ids_are_echoed_exactly_as_written() {
        for written in [
            "18446744073709551617",
            "-18446744073709551617",
            "123456789012345678901234567890",
            "1.50",
            "7",
            r#""x""#,
        ] {
            let frame = format!(r#"{{"type":"ping","id": {written} }}"#);
            let id = parse_frame(&frame).expect("valid").id.expect("id");
            assert_eq!(id.json(), written);
            assert_eq!(
                text(crate::Codec::Json.reply(&id, serde_json::json!({}))),
                format!(r#"{{"type":"reply","id":{written},"payload":{{}}}}"#)
            );
        }
        assert!(
            parse_frame(r#"{"type":"ping","id":null}"#)
                .expect("valid")
                .id
                .is_none()
        );
        for bad in ["true", "[1]", "{}"] {
            let e = parse_frame(&format!(r#"{{"type":"ping","id":{bad}}}"#)).expect_err(bad);
            assert!(e.error.message.contains("`id`"), "{}", e.error.message);
        }
    }

    #[test]
    fn batch_parses_inner_commands_and_refuses_nesting() {
        let f = parse_frame(
            r#"{"type":"batch","payload":{"commands":[{"type":"ping","id":"a"},{"type":"presence","id":"b","payload":{"channel":"x"}}]}}"#,
        )
        .expect("valid");
        match f.command {
            Command::Batch(frames) => assert_eq!(frames.len(), 2),
            other => panic!("wrong command {other:?}"),
        }
        let f = parse_frame(
            r#"{"type":"batch","id":"B","payload":{"commands":[{"type":"batch","id":"n"},{"type":"nope","id":"u"},{"oops":1},{"type":"ping","id":"p"}]}}"#,
        )
        .expect("a batch with bad inner commands still parses");
        assert_eq!(f.id.as_ref().map(FrameId::json), Some(r#""B""#));
        let Command::Batch(frames) = f.command else {
            panic!("not a batch");
        };
        let outcome: Vec<(Option<&str>, bool)> = frames
            .iter()
            .map(|r| match r {
                Ok(frame) => (frame.id.as_ref().map(FrameId::json), true),
                Err(e) => (e.id.as_ref().map(FrameId::json), false),
            })
            .collect();
        assert_eq!(
            outcome,
            vec![
                (Some(r#""n""#), false),
                (Some(r#""u""#), false),
                (None, false),
                (Some(r#""p""#), true),
            ]
        );
        let Err(nested) = &frames[0] else {
            panic!("nested batch accepted")
        };
        assert!(
            nested
                .error
                .message
                .contains("cannot contain another batch")
        );
    }

    #[test]
    fn encodes_replies_errors_and_pushes() {
        let id = parse_frame(r#"{"type":"ping","id":"1"}"#)
            .expect("valid")
            .id
            .expect("id");
        assert_eq!(
            text(crate::Codec::Json.reply(&id, serde_json::json!({"offset": 3}))),
            r#"{"type":"reply","id":"1","payload":{"offset":3}}"#
        );
        let err = ErrorPayload {
            code: ErrorCode::UnknownChannel,
            message: "no namespace `x`".into(),
            details: None,
        };
        assert_eq!(
            text(crate::Codec::Json.error(None, &err)),
            r#"{"type":"error","payload":{"code":"UNKNOWN_CHANNEL","message":"no namespace `x`"}}"#
        );
        assert_eq!(
            text(crate::Codec::Json.push("pong", serde_json::json!({}))),
            r#"{"type":"pong","payload":{}}"#
        );
    }
}
