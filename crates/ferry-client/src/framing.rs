//! A length-prefixed framing codec for app-to-app protocols over TCP.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of payload, the
//! payload being one JSON or MessagePack value. Built on tokio-util's
//! [`LengthDelimitedCodec`]: a length above the maximum is refused when the 4-byte header
//! arrives, before any buffer is reserved for it, so a peer cannot make the reader allocate
//! by announcing a huge frame.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::framing::FrameError> {
//! use futures_util::{SinkExt, StreamExt};
//! use ferry_client::framing::{Encoding, FrameCodec};
//! use tokio_util::codec::Framed;
//!
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//! let mut framed = Framed::new(tcp, FrameCodec::<serde_json::Value>::new(Encoding::MessagePack));
//! framed.send(serde_json::json!({"hello": "world"})).await?;
//! let answer = framed.next().await;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Default largest frame payload: 1 MiB, the hub's default message size.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// How a frame's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 JSON text.
    Json,
    /// MessagePack (rmp-serde; structs as maps, so field names travel).
    MessagePack,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "msgpack" | "messagepack" => Ok(Encoding::MessagePack),
            _ => Err(format!("encoding {s:?}: expected json or msgpack")),
        }
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or a value to send) exceeds the maximum frame size.
    #[error("frame larger than the {max}-byte maximum")]
    TooLarge {
        /// The maximum in force.
        max: usize,
    },
    /// The payload is not a valid value of the expected type.
    #[error("invalid frame payload: {0}")]
    Payload(String),
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The raw codec: `u32` big-endian length + payload, at most `max_frame` bytes of payload.
/// Frames are [`Bytes`]; use [`FrameCodec`] for typed values.
pub fn raw_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

fn map_io(e: std::io::Error, max: usize) -> FrameError {
    let too_large = e
        .get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
    if too_large {
        FrameError::TooLarge { max }
    } else {
        FrameError::Io(e)
    }
}

/// A typed frame codec: values of `T` as JSON or MessagePack payloads.
#[derive(Debug)]
pub struct FrameCodec<T> {
    inner: LengthDelimitedCodec,
    encoding: Encoding,
    max_frame: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> FrameCodec<T> {
    /// A codec with [`DEFAULT_MAX_FRAME`].
    pub fn new(encoding: Encoding) -> Self {
        Self::with_max_frame(encoding, DEFAULT_MAX_FRAME)
    }

    /// A codec refusing payloads over `max_frame` bytes (both ways).
    pub fn with_max_frame(encoding: Encoding, max_frame: usize) -> Self {
        FrameCodec {
            inner: raw_codec(max_frame),
            encoding,
            max_frame,
            _type: PhantomData,
        }
    }

    /// The payload encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

impl<T: DeserializeOwned> Decoder for FrameCodec<T> {
    type Item = T;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let Some(frame) = self
            .inner
            .decode(src)
            .map_err(|e| map_io(e, self.max_frame))?
        else {
            return Ok(None);
        };
        let value = match self.encoding {
            Encoding::Json => {
                serde_json::from_slice(&frame).map_err(|e| FrameError::Payload(e.to_string()))?
            }
            Encoding::MessagePack => {
                rmp_serde::from_slice(&frame).map_err(|e| FrameError::Payload(e.to_string()))?
            }
        };
        Ok(Some(value))
    }
}

impl<T: Serialize> Encoder<T> for FrameCodec<T> {
    type Error = FrameError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let payload = match self.encoding {
            Encoding::Json => {
                serde_json::to_vec(&item).map_err(|e| FrameError::Payload(e.to_string()))?
            }
            Encoding::MessagePack => {
                rmp_serde::to_vec_named(&item).map_err(|e| FrameError::Payload(e.to_string()))?
            }
        };
        if payload.len() > self.max_frame {
            return Err(FrameError::TooLarge {
                max: self.max_frame,
            });
        }
        self.inner
            .encode(Bytes::from(payload), dst)
            .map_err(|e| map_io(e, self.max_frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Msg {
        seq: u32,
        text: String,
        blob: Vec<u8>,
    }

    fn msg() -> impl Strategy<Value = Msg> {
        (
            any::<u32>(),
            ".{0,40}",
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(seq, text, blob)| Msg { seq, text, blob })
    }

    proptest! {
        /// Any sequence of frames, cut into pieces at any byte boundaries, decodes to the
        /// same frames in the same order, for both encodings.
        #[test]
        fn frames_split_anywhere_decode_to_the_same_frames(
            frames in proptest::collection::vec(msg(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            msgpack in any::<bool>(),
        ) {
            let encoding = if msgpack { Encoding::MessagePack } else { Encoding::Json };
            let mut codec = FrameCodec::<Msg>::new(encoding);
            let mut wire = BytesMut::new();
            for f in &frames {
                codec.encode(f.clone(), &mut wire).expect("encodes");
            }
            let wire = wire.freeze();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            points.dedup();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for pair in points.windows(2) {
                buf.extend_from_slice(&wire[pair[0]..pair[1]]);
                while let Some(f) = codec.decode(&mut buf).expect("valid frames") {
                    decoded.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        /// A length over the maximum is an error as soon as the header is in, and nothing
        /// is reserved for the announced size.
        #[test]
        fn an_oversized_length_is_an_error_not_an_allocation(len in (1025u32..=u32::MAX)) {
            let mut codec = FrameCodec::<Msg>::with_max_frame(Encoding::Json, 1024);
            let mut buf = BytesMut::with_capacity(8);
            buf.extend_from_slice(&len.to_be_bytes());
            let err = codec.decode(&mut buf).expect_err("refused");
            prop_assert!(matches!(err, FrameError::TooLarge { max: 1024 }), "{err:?}");
            prop_assert!(buf.capacity() < 1024);
        }
    }

    #[test]
    fn oversized_values_are_refused_on_send_and_bad_payloads_are_errors() {
        let mut codec = FrameCodec::<String>::with_max_frame(Encoding::Json, 8);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode("far too long".to_string(), &mut buf),
            Err(FrameError::TooLarge { max: 8 })
        ));
        let mut wire = BytesMut::from(&[0u8, 0, 0, 3, b'{', b'{', b'{'][..]);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(FrameError::Payload(_))
        ));
    }
}
