//! Frames of the hub protocol in the client's codec: commands out, replies and pushes in.
//! The encodings themselves are `ferry_proto::Codec`'s; this file only moves them in and
//! out of [`Message`]s.

use ferry_proto::Codec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::ws::Message;

/// Deepest nesting a server's MessagePack frame may have (as the server allows its
/// clients: a hostile server must not make the decoder recurse without bound).
const MAX_DEPTH: usize = 128;

/// A frame from the server, its payload not yet interpreted.
pub(super) struct InFrame {
    /// `reply`, `error`, `message`, `join`, ...
    pub kind: String,
    /// Whether it answers a command (carries an id).
    pub has_id: bool,
    payload: Payload,
}

enum Payload {
    Json(Option<Box<RawValue>>),
    /// The whole frame: its `payload` is read straight from it when asked for.
    MsgPack(Message),
}

/// Read `T` from a MessagePack frame, depth-bounded. Fields `T` does not name are skipped
/// as they are read, never built into values.
fn from_msgpack<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

/// A MessagePack frame's `id`, whatever else it holds.
#[derive(serde::Deserialize)]
struct MsgPackId {
    #[serde(default)]
    id: Option<rmpv::Value>,
}

impl InFrame {
    /// Read a frame: JSON text for `ferry.json`, a MessagePack map for `ferry.msgpack`.
    pub fn read(codec: Codec, message: &Message) -> Result<InFrame, String> {
        match codec {
            Codec::Json => {
                #[derive(serde::Deserialize)]
                struct Envelope {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    id: Option<serde_json::Value>,
                    #[serde(default)]
                    payload: Option<Box<RawValue>>,
                }
                let envelope: Envelope = serde_json::from_slice(message.data())
                    .map_err(|e| format!("not a JSON envelope: {e}"))?;
                Ok(InFrame {
                    kind: envelope.kind,
                    has_id: envelope.id.is_some_and(|id| !id.is_null()),
                    payload: Payload::Json(envelope.payload),
                })
            }
            Codec::MsgPack => {
                #[derive(serde::Deserialize)]
                struct Head {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    id: Option<rmpv::Value>,
                }
                let head: Head = from_msgpack(message.data())
                    .map_err(|e| format!("not a MessagePack envelope: {e}"))?;
                Ok(InFrame {
                    kind: head.kind,
                    has_id: head.id.is_some_and(|id| !id.is_nil()),
                    payload: Payload::MsgPack(message.clone()),
                })
            }
        }
    }

    /// The payload as `T` (an absent payload reads as `{}`).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        match &self.payload {
            Payload::Json(raw) => serde_json::from_str(raw.as_deref().map_or("{}", RawValue::get))
                .map_err(|e| e.to_string()),
            Payload::MsgPack(message) => {
                #[derive(serde::Deserialize)]
                struct Body<T> {
                    #[serde(default = "Option::default")]
                    payload: Option<T>,
                }
                match from_msgpack::<Body<T>>(message.data())?.payload {
                    Some(payload) => Ok(payload),
                    // An absent payload reads as an empty map.
                    None => from_msgpack(&[0x80]),
                }
            }
        }
    }
}

/// A command frame with this id.
pub(super) fn command(codec: Codec, kind: &str, id: &str, payload: impl Serialize) -> Message {
    #[derive(Serialize)]
    struct Out<'a, P> {
        #[serde(rename = "type")]
        kind: &'a str,
        id: &'a str,
        payload: P,
    }
    let frame = Out { kind, id, payload };
    match codec {
        // Plain structs and JSON values always encode.
        Codec::Json => Message::text(serde_json::to_string(&frame).unwrap_or_default()),
        Codec::MsgPack => Message::binary(rmp_serde::to_vec_named(&frame).unwrap_or_default()),
    }
}

/// The request id of a MessagePack frame (its `id`, a string or an integer), for
/// matching replies to commands.
pub(super) fn msgpack_id(message: &Message) -> Option<String> {
    if message.is_text() {
        return None;
    }
    match from_msgpack::<MsgPackId>(message.data()).ok()?.id? {
        rmpv::Value::String(s) => s.into_str(),
        rmpv::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_msgpack_command_carries_its_id_and_reads_back() {
        let message = command(
            Codec::MsgPack,
            "publish",
            "c7",
            serde_json::json!({"channel": "a:b", "data": [1]}),
        );
        assert!(!message.is_text());
        assert_eq!(msgpack_id(&message).as_deref(), Some("c7"));
        let frame = InFrame::read(Codec::MsgPack, &message).expect("reads");
        assert_eq!(frame.kind, "publish");
        assert!(frame.has_id);
        let payload: serde_json::Value = frame.payload().expect("payload");
        assert_eq!(payload["channel"], "a:b");
    }

    /// A hostile server's deeply nested frame is refused, not recursed into without bound.
    #[test]
    fn a_frame_nested_past_the_depth_limit_is_an_error() {
        // {"type":"message","payload":[[[[...]]]]} with 100,000 levels.
        let mut bytes = vec![0x82, 0xa4];
        bytes.extend_from_slice(b"type");
        bytes.push(0xa7);
        bytes.extend_from_slice(b"message");
        bytes.push(0xa7);
        bytes.extend_from_slice(b"payload");
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0x90);
        let message = Message::binary(bytes);
        assert!(InFrame::read(Codec::MsgPack, &message).is_err());
        assert_eq!(msgpack_id(&message), None);
    }
}
