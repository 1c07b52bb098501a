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
    MsgPack(Vec<u8>),
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
                let value =
                    rmpv::decode::read_value_with_max_depth(&mut &message.data()[..], MAX_DEPTH)
                        .map_err(|e| format!("not a MessagePack envelope: {e}"))?;
                let field = |name: &str| {
                    value.as_map().and_then(|entries| {
                        entries
                            .iter()
                            .find(|(k, _)| k.as_str() == Some(name))
                            .map(|(_, v)| v)
                    })
                };
                let kind = field("type")
                    .and_then(rmpv::Value::as_str)
                    .ok_or("a MessagePack envelope without `type`")?
                    .to_owned();
                let mut payload = Vec::new();
                match field("payload") {
                    Some(p) => rmpv::encode::write_value(&mut payload, p)
                        .map_err(|e| format!("re-encoding the payload: {e}"))?,
                    None => payload.push(0x80),
                }
                Ok(InFrame {
                    kind,
                    has_id: field("id").is_some_and(|id| !id.is_nil()),
                    payload: Payload::MsgPack(payload),
                })
            }
        }
    }

    /// The payload as `T` (an absent payload reads as `{}`).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        match &self.payload {
            Payload::Json(raw) => serde_json::from_str(raw.as_deref().map_or("{}", RawValue::get))
                .map_err(|e| e.to_string()),
            Payload::MsgPack(bytes) => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
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
    let value =
        rmpv::decode::read_value_with_max_depth(&mut &message.data()[..], MAX_DEPTH).ok()?;
    let id = value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some("id"))
        .map(|(_, v)| v)?;
    match id {
        rmpv::Value::String(s) => s.as_str().map(str::to_owned),
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
}
