//! A publication as the hub holds it: the wire value plus its encodings, made once and
//! shared by every subscriber's queue.

use std::sync::{Arc, OnceLock};

use ferry_proto::envelope::{ClientInfo, Publication as WirePublication};
use serde_json::value::RawValue;

use crate::transports::ws_io::WsText;

/// A channel's position: the last offset and the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamPosition {
    /// The offset of the newest publication (0 before the first).
    pub offset: u64,
    /// The epoch: changes whenever the channel's history starts over.
    pub epoch: String,
}

/// One publication, immutable once made.
#[derive(Debug)]
pub struct Publication {
    wire: WirePublication,
    payload_json: Box<RawValue>,
    ws_frame: OnceLock<WsText>,
}

impl Publication {
    /// Make a publication and encode its payload JSON (the one serialisation it gets).
    pub fn new(
        channel: &str,
        offset: u64,
        epoch: &str,
        data: Box<RawValue>,
        info: Option<ClientInfo>,
        time: u64,
    ) -> Arc<Publication> {
        let wire = WirePublication {
            channel: channel.to_string(),
            offset,
            epoch: epoch.to_string(),
            data,
            info,
            time,
        };
        let payload_json = serde_json::value::to_raw_value(&wire).unwrap_or_default();
        Arc::new(Publication {
            wire,
            payload_json,
            ws_frame: OnceLock::new(),
        })
    }

    /// The wire value.
    pub fn wire(&self) -> &WirePublication {
        &self.wire
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.wire.channel
    }

    /// The offset.
    pub fn offset(&self) -> u64 {
        self.wire.offset
    }

    /// The epoch.
    pub fn epoch(&self) -> &str {
        &self.wire.epoch
    }

    /// The payload object `{"channel","offset","epoch","data","info","time"}` as JSON.
    pub fn payload_json(&self) -> &RawValue {
        &self.payload_json
    }

    /// The complete `message` push frame, encoded on first use and shared afterwards.
    pub(crate) fn ws_frame(&self) -> &WsText {
        self.ws_frame.get_or_init(|| {
            let mut s = String::with_capacity(self.payload_json.get().len() + 32);
            s.push_str(r#"{"type":"message","payload":"#);
            s.push_str(self.payload_json.get());
            s.push('}');
            WsText::from(s)
        })
    }
}
