//! The two encodings of the hub protocol, chosen by the WebSocket subprotocol:
//! `ferry.json` (JSON text frames) and `ferry.msgpack` (MessagePack binary frames). Both
//! carry the same envelope `{type, id?, payload}` and the same typed commands, replies and
//! pushes; a frame is decoded and encoded here and nowhere else.
//!
//! A MessagePack frame is read into the same typed [`Frame`] as a JSON one: everything
//! but a publication's `data` goes through the one command parser of
//! [`envelope`](crate::envelope), and `data` stays the MessagePack value it was
//! ([`Data::MsgPack`]). Replies and pushes are any `Serialize` type, written by
//! serde_json or rmp-serde (structs as maps with their field names); [`Data`] picks its
//! own form for each.

use rmpv::Value as MpValue;
use serde::Serialize;
use serde_json::Value as JsonValue;

use crate::data::{Data, JsonForm, check_json_form};
use crate::envelope::{
    Command, ErrorPayload, Frame, FrameError, FrameId, InvalidMessage, parse_frame,
};

/// Deepest nesting a MessagePack frame may have (the envelope, the payload and `data`).
const MAX_FRAME_DEPTH: usize = 128;

/// An encoding of the hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// `ferry.json`: JSON text frames (the default, and the only one SSE speaks).
    #[default]
    Json,
    /// `ferry.msgpack`: MessagePack binary frames.
    MsgPack,
}

impl Codec {
    /// Every codec, in the server's order of preference.
    pub const ALL: [Codec; 2] = [Codec::Json, Codec::MsgPack];

    /// The WebSocket subprotocol that selects it.
    pub const fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => "ferry.json",
            Codec::MsgPack => "ferry.msgpack",
        }
    }

    /// The codec a negotiated subprotocol names; no subprotocol means `ferry.json`.
    pub fn from_subprotocol(protocol: Option<&str>) -> Option<Codec> {
        match protocol {
            None | Some("ferry.json") => Some(Codec::Json),
            Some("ferry.msgpack") => Some(Codec::MsgPack),
            Some(_) => None,
        }
    }

    /// Short name for flags (`json`, `msgpack`).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// Whether its frames are binary (else text).
    pub const fn is_binary(self) -> bool {
        matches!(self, Codec::MsgPack)
    }

    /// Decode one frame into a command. Errors are values, as for
    /// [`parse_frame`](crate::envelope::parse_frame).
    pub fn decode(self, frame: &[u8]) -> Result<Frame, FrameError> {
        match self {
            Codec::Json => match std::str::from_utf8(frame) {
                Ok(text) => parse_frame(text),
                Err(_) => Err(invalid(None, "a text frame that is not UTF-8".into())),
            },
            Codec::MsgPack => decode_msgpack(frame),
        }
    }

    /// Encode `{"type":"reply","id":ID,"payload":PAYLOAD}`.
    pub fn reply<P: Serialize>(self, id: &FrameId, payload: P) -> Vec<u8> {
        self.encode("reply", Some(id), payload)
    }

    /// Encode `{"type":"error","id"?:ID,"payload":{"code","message","details"?}}`.
    pub fn error(self, id: Option<&FrameId>, error: &ErrorPayload) -> Vec<u8> {
        self.encode("error", id, error)
    }

    /// Encode a server push without id (`message`, `join`, `auth_success`, ...).
    pub fn push<P: Serialize>(self, kind: &str, payload: P) -> Vec<u8> {
        self.encode(kind, None, payload)
    }

    /// Encode a command frame (what a client sends).
    pub fn command<P: Serialize>(self, kind: &str, id: Option<&FrameId>, payload: P) -> Vec<u8> {
        self.encode(kind, id, payload)
    }

    fn encode<P: Serialize>(self, kind: &str, id: Option<&FrameId>, payload: P) -> Vec<u8> {
        let frame = OutFrame { kind, id, payload };
        let encoded = match self {
            Codec::Json => serde_json::to_vec(&frame).map_err(|e| e.to_string()),
            Codec::MsgPack => rmp_serde::to_vec_named(&frame).map_err(|e| e.to_string()),
        };
        // Replies are plain structs of strings, numbers and checked data; should one ever
        // fail to encode, the peer gets an INTERNAL_ERROR frame rather than a panic.
        encoded.unwrap_or_else(|e| {
            let error = ErrorPayload {
                code: crate::ErrorCode::InternalError,
                message: format!("encoding failed: {e}"),
                details: None,
            };
            let fallback = OutFrame {
                kind: "error",
                id,
                payload: error,
            };
            match self {
                Codec::Json => serde_json::to_vec(&fallback).unwrap_or_default(),
                Codec::MsgPack => rmp_serde::to_vec_named(&fallback).unwrap_or_default(),
            }
        })
    }

    /// Decode a server frame into its JSON form (a MessagePack frame converted as
    /// [`Data`] is: binary as base64). For clients and tools that read frames generically.
    pub fn frame_to_json(self, frame: &[u8]) -> Result<JsonValue, InvalidMessage> {
        match self {
            Codec::Json => serde_json::from_slice(frame)
                .map_err(|e| InvalidMessage::new(format!("malformed frame: {e}"))),
            Codec::MsgPack => {
                let data = Data::from_msgpack(frame)
                    .map_err(|e| InvalidMessage::new(format!("malformed frame: {e}")))?;
                Ok(data.to_json_value())
            }
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;

    /// A codec by its short name, as flags take it: `json` or `msgpack`.
    fn from_str(name: &str) -> Result<Codec, String> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| format!("unknown encoding `{name}`; expected json or msgpack"))
    }
}

#[derive(Serialize)]
struct OutFrame<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a FrameId>,
    payload: P,
}

fn invalid(id: Option<FrameId>, message: String) -> FrameError {
    FrameError {
        id,
        error: InvalidMessage::new(message),
    }
}

/// A MessagePack frame → the JSON command parser, with each publish's `data` taken out
/// first and put back as [`Data::MsgPack`].
fn decode_msgpack(frame: &[u8]) -> Result<Frame, FrameError> {
    let mut rest = frame;
    let mut value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_FRAME_DEPTH)
        .map_err(|e| invalid(None, format!("malformed MessagePack frame: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(
            None,
            format!("{} bytes after the MessagePack frame", rest.len()),
        ));
    }
    // `data` of the publish itself (slot 0) or of each command of a batch (slot i).
    let mut taken: Vec<Option<MpValue>> = Vec::new();
    match kind_of(&value) {
        Some("publish") => taken.push(take_data(&mut value)),
        Some("batch") => {
            if let Some(commands) = field_mut(&mut value, "payload")
                .and_then(|p| field_mut(p, "commands"))
                .and_then(|c| match c {
                    MpValue::Array(items) => Some(items),
                    _ => None,
                })
            {
                for command in commands.iter_mut() {
                    let data = match kind_of(command) {
                        Some("publish") => take_data(command),
                        _ => None,
                    };
                    taken.push(data);
                }
            }
        }
        _ => {}
    }
    let envelope_error = |message: String| {
        // Read the id for the error's sake when the envelope at least gives one.
        let id = field(&value, "id").and_then(|id| frame_id(id).ok());
        invalid(id, message)
    };
    check_json_form(&value).map_err(|e| envelope_error(format!("malformed frame: {e}")))?;
    let json = serde_json::to_string(&JsonForm(&value))
        .map_err(|e| envelope_error(format!("malformed frame: {e}")))?;
    let mut frame = parse_frame(&json)?;
    let put_back = |data: MpValue, id: Option<&FrameId>| {
        Data::from_msgpack_value(&data)
            .map_err(|e| invalid(id.cloned(), format!("invalid `data`: {e}")))
    };
    match &mut frame.command {
        Command::Publish(publish) => {
            if let Some(Some(data)) = taken.pop() {
                publish.data = put_back(data, frame.id.as_ref())?;
            }
        }
        Command::Batch(frames) => {
            for (inner, data) in frames.iter_mut().zip(taken) {
                if let (Ok(inner_frame), Some(data)) = (&mut *inner, data)
                    && let Command::Publish(publish) = &mut inner_frame.command
                {
                    match put_back(data, inner_frame.id.as_ref()) {
                        Ok(data) => publish.data = data,
                        Err(e) => *inner = Err(e),
                    }
                }
            }
        }
        _ => {}
    }
    Ok(frame)
}

fn kind_of(value: &MpValue) -> Option<&str> {
    field(value, "type").and_then(MpValue::as_str)
}

fn field<'a>(value: &'a MpValue, name: &str) -> Option<&'a MpValue> {
    match value {
        MpValue::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn field_mut<'a>(value: &'a mut MpValue, name: &str) -> Option<&'a mut MpValue> {
    match value {
        MpValue::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Take `payload.data` out of a publish command, leaving `nil` in its place (the command
/// parser then sees a present `data`).
fn take_data(command: &mut MpValue) -> Option<MpValue> {
    let payload = field_mut(command, "payload")?;
    let data = field_mut(payload, "data")?;
    Some(std::mem::replace(data, MpValue::Nil))
}

/// A MessagePack id (string or integer or float) as the JSON text the parser keeps.
fn frame_id(id: &MpValue) -> Result<FrameId, ()> {
    let json = serde_json::to_string(&JsonForm(id)).map_err(|_| ())?;
    let frame = parse_frame(&format!(r#"{{"type":"ping","id":{json}}}"#)).map_err(|_| ())?;
    frame.id.ok_or(())
}

#[cfg(test)]
mod tests;
