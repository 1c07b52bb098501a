//! Writing a `/ws` session's frames: shared pre-built frames with vectored writes,
//! the drain on shutdown, and the close.

use std::time::Duration;

use ferry_proto::{CloseCode, Codec};
use futures_util::SinkExt;

use crate::conn::{Outbound, Receiver};
use crate::transports::ws_io::{self, Message, RawFrames, ServerSocket, WsText, write_raw};

use super::session::End;

/// A data message of the codec around an encoded frame (JSON frames are UTF-8: serde_json
/// writes nothing else).
pub(super) fn data_message(codec: Codec, frame: bytes::Bytes) -> Message {
    match codec {
        Codec::Json => match WsText::try_from(frame) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text(WsText::from_static(
                r#"{"type":"error","payload":{"code":"INTERNAL_ERROR","message":"a frame was not UTF-8"}}"#,
            )),
        },
        Codec::MsgPack => Message::Binary(frame),
    }
}

/// Time allowed for the final frames and the close frame to be written.
pub(super) const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time the peer gets to answer our close frame before the socket is dropped.
/// A write pending this long kept the session from reading the peer's frames.
pub(super) const WRITE_HELD_READS: Duration = Duration::from_millis(250);

pub(super) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Turn `End::ShuttingDown` into a drained queue and a 1001 close; other ends pass.
/// Called boxed: shutdown is rare, and its future should not sit in every idle
/// connection's task.
pub(super) async fn finish(
    end: End,
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    rx: &mut Receiver,
    compress: Compress,
    codec: Codec,
) -> End {
    if !matches!(end, End::ShuttingDown) {
        return end;
    }
    // Drain what is already queued (bounded: a stuck peer cannot hold us).
    let drain = write_queued(socket, raw, None, rx, compress, codec);
    match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, drain).await {
        Ok(Ok(())) => End::Close(CloseCode::GOING_AWAY, "server shutting down".into()),
        _ => End::Gone,
    }
}

pub(super) async fn flush_out(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    out: Vec<Message>,
) -> Result<(), ws_io::WsError> {
    // Publications written before these go first.
    write_raw(socket, raw).await?;
    // Taken from the session, not drained: replies are rare, and an idle connection should
    // not keep the capacity of its last burst of them.
    for message in out {
        socket.feed(message).await?;
    }
    socket.flush().await
}

/// Publications at least this big go out compressed (permessage-deflate agreed with a
/// 15-bit server window and no context takeover); `None`: never. Four bytes: it sits in
/// every connection's task.
pub(super) type Compress = Option<std::num::NonZeroU32>;

/// Frames gathered before one vectored write of publications.
pub(super) const RAW_BATCH: usize = 64;

/// Queue one outbound item as the shared pre-built frame of the codec (publications
/// compressed where agreed and big enough, JSON only).
pub(super) fn queue_item(raw: &mut RawFrames, item: Outbound, compress: Compress, codec: Codec) {
    let frame = match &item {
        Outbound::Publication(d) => match compress {
            Some(min)
                if codec == Codec::Json
                    && d.compressible()
                    && d.ws_frame().len() >= min.get() as usize =>
            {
                d.ws_wire_deflated()
            }
            _ => d.ws_wire(codec),
        },
        Outbound::Push(push) => push.ws_wire(codec),
        Outbound::Reply(frame) => frame,
    };
    raw.push(frame.clone());
}

/// Move queued items into `raw` until it holds a batch; whether items may remain.
fn fill(raw: &mut RawFrames, rx: &mut Receiver, compress: Compress, codec: Codec) -> bool {
    while raw.len() < RAW_BATCH {
        match rx.try_recv() {
            Ok(item) => queue_item(raw, item, compress, codec),
            Err(_) => return false,
        }
    }
    true
}

/// Write `first` (if any) and everything queued behind it, a batch of frames per vectored
/// write. Items are moved into the batch without awaiting, so this future holds one write
/// at a time (it sits in the connection's task while a write is pending).
pub(super) async fn write_queued(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    first: Option<Outbound>,
    rx: &mut Receiver,
    compress: Compress,
    codec: Codec,
) -> Result<(), ws_io::WsError> {
    if let Some(first) = first {
        queue_item(raw, first, compress, codec);
    }
    loop {
        let more = fill(raw, rx, compress, codec);
        write_raw(socket, raw).await?;
        if !more {
            break;
        }
    }
    socket.flush().await
}
