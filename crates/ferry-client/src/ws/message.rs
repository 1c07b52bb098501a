//! Messages as the application sees them (SPEC W2).

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, ErrorKind};

/// Whether a message is UTF-8 text or arbitrary bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A text message: the data is valid UTF-8.
    Text,
    /// A binary message.
    Binary,
}

/// One WebSocket message: its kind, its data and when it was created (for an incoming
/// message: when it was received; for an outgoing one: when it was made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    kind: MessageKind,
    data: Bytes,
    timestamp: SystemTime,
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Message {
            kind: MessageKind::Text,
            data: Bytes::from(text.into()),
            timestamp: SystemTime::now(),
        }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message {
            kind: MessageKind::Binary,
            data: data.into(),
            timestamp: SystemTime::now(),
        }
    }

    /// A text message holding `value` as JSON.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the value cannot be serialized (e.g. a map with
    /// non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_string(value)
            .map(Message::text)
            .map_err(|e| Error::new(ErrorKind::Decode, format!("encoding JSON: {e}")))
    }

    /// Text whose bytes are already known to be UTF-8 (from the WebSocket layer).
    pub(crate) fn from_utf8_bytes(data: Bytes) -> Self {
        Message {
            kind: MessageKind::Text,
            data,
            timestamp: SystemTime::now(),
        }
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    /// The payload bytes (UTF-8 for text).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The payload, consuming the message.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The text of a text message; `None` for a binary one (or binary data that is not
    /// UTF-8).
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(&self.data).ok(),
            MessageKind::Binary => None,
        }
    }

    /// When the message was received (incoming) or created (outgoing).
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// Parse the payload (text or binary) as JSON.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the payload is not JSON of the expected shape.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.data).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("message is not the expected JSON: {e}"),
            )
        })
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::text(text)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::binary(data)
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::binary(data)
    }
}

/// The default request id of a message: the top-level `"id"` of a JSON object, a string
/// or a number (numbers compare by their decimal text). Binary messages and messages
/// without such a field have none.
pub fn json_id(message: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        #[serde(default)]
        id: Option<serde_json::Value>,
    }
    if !message.is_text() {
        return None;
    }
    let parsed: WithId = serde_json::from_slice(message.data()).ok()?;
    match parsed.id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_id_reads_strings_and_numbers_only() {
        assert_eq!(
            json_id(&Message::text(r#"{"id":"a1","x":1}"#)).as_deref(),
            Some("a1")
        );
        assert_eq!(
            json_id(&Message::text(r#"{"type":"t","id":7}"#)).as_deref(),
            Some("7")
        );
        assert_eq!(json_id(&Message::text(r#"{"id":{"x":1}}"#)), None);
        assert_eq!(json_id(&Message::text("not json")), None);
        assert_eq!(json_id(&Message::text("[1,2]")), None);
        assert_eq!(json_id(&Message::binary(&b"{\"id\":\"a\"}"[..])), None);
    }

    #[test]
    fn text_and_binary_keep_their_kind() {
        let t = Message::text("héllo");
        assert_eq!(t.kind(), MessageKind::Text);
        assert_eq!(t.as_text(), Some("héllo"));
        let b = Message::binary(vec![0xff, 0]);
        assert_eq!(b.kind(), MessageKind::Binary);
        assert_eq!(b.as_text(), None);
        assert_eq!(b.data().as_ref(), &[0xff, 0]);
    }
}
