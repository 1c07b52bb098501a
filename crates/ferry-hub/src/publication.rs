//! A publication as the hub holds it, and its fan-out form.
//!
//! A [`Publication`] keeps its data as a shared [`Data`] in the codec it was published in:
//! a broadcast to many channels holds the data once, and history keeps nothing but the
//! fields. Encodings are made when they are needed: a [`Delivery`] (one per publication
//! fan-out) builds each codec's complete WebSocket `message` frame once, on first use, for
//! every subscriber's queue of that codec, and is dropped with the last queue that held
//! it, so retained history never carries a second, encoded copy of each publication. A
//! [`Push`] (join, leave, direct) is shared and encoded the same way.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ferry_proto::envelope::ClientInfo;
use ferry_proto::{Codec, Data};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::transports::ws_io::{self, WsText};

/// A channel's position: the last offset and the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamPosition {
    /// The offset of the newest publication (0 before the first).
    pub offset: u64,
    /// The epoch: changes whenever the channel's history starts over.
    pub epoch: String,
}

/// One publication, immutable once made. Serialises as the wire payload
/// `{"channel","offset","epoch","data","info"?,"time"}` (docs/PROTOCOL.md).
#[derive(Debug)]
pub struct Publication {
    channel: Box<str>,
    offset: u64,
    epoch: Arc<str>,
    data: Data,
    info: Option<ClientInfo>,
    time: u64,
}

/// `{"type":"message","payload":` — the `message` push frame around a payload.
const FRAME_PREFIX: &str = r#"{"type":"message","payload":"#;

impl Publication {
    /// Make a publication.
    pub fn new(
        channel: &str,
        offset: u64,
        epoch: &Arc<str>,
        data: Data,
        info: Option<ClientInfo>,
        time: u64,
    ) -> Arc<Publication> {
        Arc::new(Publication {
            channel: channel.into(),
            offset,
            epoch: epoch.clone(),
            data,
            info,
            time,
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// When it was published, in milliseconds since the Unix epoch.
    pub fn time(&self) -> u64 {
        self.time
    }

    /// Who published it, when known.
    pub fn info(&self) -> Option<&ClientInfo> {
        self.info.as_ref()
    }

    /// The published value, unchanged, in the codec it was published in.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// About how many bytes the encoded payload takes (for size budgets).
    pub fn encoded_size(&self) -> usize {
        let info = self
            .info
            .as_ref()
            .map_or(0, |i| i.user.len() + i.client.len() + 32);
        self.data.len() + self.channel.len() + self.epoch.len() + info + 128
    }

    /// The payload object as JSON text.
    pub fn payload_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `message` push frame in `codec`: JSON text (see [`Publication::ws_frame`]) or
    /// a MessagePack map.
    pub fn frame(&self, codec: Codec) -> Bytes {
        match codec {
            Codec::Json => Bytes::from(self.ws_frame()),
            Codec::MsgPack => codec.push("message", self).into(),
        }
    }

    /// The complete JSON `message` push frame.
    pub fn ws_frame(&self) -> WsText {
        let mut frame = Vec::with_capacity(self.encoded_size() + FRAME_PREFIX.len() + 1);
        frame.extend_from_slice(FRAME_PREFIX.as_bytes());
        // Writing into a Vec cannot fail, and every field serialises.
        let _ = serde_json::to_writer(&mut frame, self);
        frame.push(b'}');
        // serde_json writes UTF-8 only; the check is one pass over bytes just written.
        WsText::from(String::from_utf8(frame).unwrap_or_default())
    }
}

impl Serialize for Publication {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.info.is_some() { 6 } else { 5 };
        let mut s = serializer.serialize_struct("Publication", fields)?;
        s.serialize_field("channel", &*self.channel)?;
        s.serialize_field("offset", &self.offset)?;
        s.serialize_field("epoch", &*self.epoch)?;
        s.serialize_field("data", &self.data)?;
        if let Some(info) = &self.info {
            s.serialize_field("info", info)?;
        }
        s.serialize_field("time", &self.time)?;
        s.end()
    }
}

/// One publication on its way to subscribers: shared by every queue it is pushed to, it
/// encodes the WebSocket frame once, on first use, and lives only as long as a queue holds
/// it.
#[derive(Debug)]
pub struct Delivery {
    publication: Arc<Publication>,
    frame: OnceLock<WsText>,
    wire: OnceLock<bytes::Bytes>,
    /// The complete binary WebSocket frame of the MessagePack `message` push.
    wire_msgpack: OnceLock<bytes::Bytes>,
    /// The same JSON frame deflated (permessage-deflate, no context takeover), for the
    /// subscribers that agreed on it.
    wire_deflated: OnceLock<bytes::Bytes>,
    /// When fan-out queued it (`ferry_enqueue_write_seconds`).
    enqueued: std::time::Instant,
    /// Its namespace lets it go out compressed (`compress`).
    compressible: bool,
}

impl Delivery {
    /// Wrap a publication for fan-out; `compressible` when its namespace allows sending
    /// it compressed.
    pub fn new(publication: Arc<Publication>, compressible: bool) -> Arc<Delivery> {
        Arc::new(Delivery {
            publication,
            frame: OnceLock::new(),
            wire: OnceLock::new(),
            wire_msgpack: OnceLock::new(),
            wire_deflated: OnceLock::new(),
            enqueued: std::time::Instant::now(),
            compressible,
        })
    }

    /// Whether its namespace lets it go out compressed.
    pub fn compressible(&self) -> bool {
        self.compressible
    }

    /// When fan-out queued it.
    pub fn enqueued(&self) -> std::time::Instant {
        self.enqueued
    }

    /// The publication.
    pub fn publication(&self) -> &Arc<Publication> {
        &self.publication
    }

    /// The `message` push frame, encoded on first use and shared afterwards.
    pub fn ws_frame(&self) -> &WsText {
        self.frame.get_or_init(|| self.publication.ws_frame())
    }

    /// The complete WebSocket frame (header and `message` push) in `codec`, built on
    /// first use: the same bytes are written to every subscriber's socket of that codec.
    pub fn ws_wire(&self, codec: Codec) -> &bytes::Bytes {
        match codec {
            Codec::Json => self
                .wire
                .get_or_init(|| ws_io::data_frame(codec, self.ws_frame().as_bytes())),
            Codec::MsgPack => self
                .wire_msgpack
                .get_or_init(|| ws_io::data_frame(codec, &self.publication.frame(Codec::MsgPack))),
        }
    }

    /// [`Delivery::ws_wire`] in JSON compressed (permessage-deflate, deflated on its own, 15-bit
    /// window), built on first use and shared like it.
    pub fn ws_wire_deflated(&self) -> &bytes::Bytes {
        self.wire_deflated.get_or_init(|| {
            ferry_proto::deflate::compressed_text_frame(self.ws_frame().as_bytes()).into()
        })
    }

    /// The payload JSON: the part of the frame inside `{"type":"message","payload":…}`.
    pub fn payload_json(&self) -> &str {
        let frame = self.ws_frame().as_str();
        frame
            .get(FRAME_PREFIX.len()..frame.len().saturating_sub(1))
            .unwrap_or_default()
    }
}

/// What a [`Push`] says.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum PushBody {
    /// `join` / `leave`: who came or went.
    Presence {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        info: ClientInfo,
    },
    /// `direct`: data sent to a user or a client through the server API.
    Direct {
        /// What was sent.
        data: Data,
    },
}

/// A push other than a publication (`join`, `leave`, `direct`), shared by every queue it
/// goes to; each codec's complete WebSocket frame is built once, on first use.
#[derive(Debug)]
pub struct Push {
    kind: &'static str,
    body: PushBody,
    wire: [OnceLock<Bytes>; 2],
}

impl Push {
    /// A `join` or `leave` push.
    pub fn presence(joined: bool, channel: &str, info: &ClientInfo) -> Arc<Push> {
        Push::new(
            if joined { "join" } else { "leave" },
            PushBody::Presence {
                channel: channel.into(),
                info: info.clone(),
            },
        )
    }

    /// A `direct` push.
    pub fn direct(data: Data) -> Arc<Push> {
        Push::new("direct", PushBody::Direct { data })
    }

    fn new(kind: &'static str, body: PushBody) -> Arc<Push> {
        Arc::new(Push {
            kind,
            body,
            wire: Default::default(),
        })
    }

    /// The push's type (`join`, `leave`, `direct`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What it says.
    pub fn body(&self) -> &PushBody {
        &self.body
    }

    /// About how many bytes it takes encoded.
    pub fn encoded_size(&self) -> usize {
        64 + match &self.body {
            PushBody::Presence { channel, info } => {
                channel.len() + info.user.len() + info.client.len()
            }
            PushBody::Direct { data } => data.len(),
        }
    }

    /// The complete WebSocket frame in `codec`, built on first use.
    pub fn ws_wire(&self, codec: Codec) -> &Bytes {
        let slot = match codec {
            Codec::Json => &self.wire[0],
            Codec::MsgPack => &self.wire[1],
        };
        slot.get_or_init(|| ws_io::data_frame(codec, &codec.push(self.kind, &self.body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_wraps_the_payload_and_matches_the_wire_format() {
        let epoch: Arc<str> = "e1".into();
        let data = Data::from(
            serde_json::value::RawValue::from_string(r#"{"b":1, "a":"é\n"}"#.into()).expect("json"),
        );
        let info = ClientInfo {
            user: "alice".into(),
            client: "c1".into(),
        };
        let p = Publication::new("chat:x", 7, &epoch, data, Some(info), 42);
        let payload = p.payload_json();
        assert_eq!(
            payload,
            r#"{"channel":"chat:x","offset":7,"epoch":"e1","data":{"b":1, "a":"é\n"},"info":{"user":"alice","client":"c1"},"time":42}"#
        );
        let wire: ferry_proto::envelope::Publication =
            serde_json::from_str(&payload).expect("the client's type reads it");
        assert_eq!(wire.offset, 7);
        let delivery = Delivery::new(p, true);
        assert_eq!(delivery.payload_json(), payload);
        assert_eq!(
            delivery.ws_frame().as_str(),
            format!(r#"{{"type":"message","payload":{payload}}}"#)
        );
    }
}
