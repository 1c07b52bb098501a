//! Writing a `/ws` session's frames: shared pre-built frames with vectored writes,
//! the drain on shutdown, and the close.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ferry_proto::{CloseCode, Codec};
use futures_util::Sink;

use crate::conn::{Outbound, Receiver};
use crate::transports::ws_io::{self, Message, RawFrames, ServerSocket};

use super::session::End;

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

/// Write the raw frames queued before (publications), then `out` (replies, pings: complete
/// frames), then flush. `out` is taken from the session, not drained: replies are rare,
/// and an idle connection should not keep the capacity of its last burst of them.
pub(super) fn flush_out<'a>(
    socket: &'a mut ServerSocket,
    raw: &'a mut RawFrames,
    out: Vec<bytes::Bytes>,
) -> impl Future<Output = Result<(), ws_io::WsError>> + 'a {
    for frame in out {
        raw.push(frame);
    }
    std::future::poll_fn(move |cx| ws_io::poll_write_raw(socket, raw, cx))
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
/// write. Items are moved into the batch without awaiting, so the future holds one write
/// at a time.
pub(super) fn write_queued<'a>(
    socket: &'a mut ServerSocket,
    raw: &'a mut RawFrames,
    first: Option<Outbound>,
    rx: &'a mut Receiver,
    compress: Compress,
    codec: Codec,
) -> WriteQueued<'a> {
    if let Some(first) = first {
        queue_item(raw, first, compress, codec);
    }
    WriteQueued {
        socket,
        raw,
        rx,
        compress,
        codec,
        stage: Stage::Fill,
    }
}

/// The future of [`write_queued`], written by hand: it sits in every connection's task (in
/// the serve loop's largest state) while a write is pending; as an `async fn` it kept its
/// arguments twice and the write's own future (216 bytes; this is 32).
pub(super) struct WriteQueued<'a> {
    socket: &'a mut ServerSocket,
    raw: &'a mut RawFrames,
    rx: &'a mut Receiver,
    compress: Compress,
    codec: Codec,
    stage: Stage,
}

enum Stage {
    /// Move queued items into the batch.
    Fill,
    /// Writing the batch; `more`: the batch was full, so items may remain queued.
    Write { more: bool },
    /// Everything is written: flush the socket.
    Flush,
}

impl Future for WriteQueued<'_> {
    type Output = Result<(), ws_io::WsError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.stage {
                Stage::Fill => {
                    let more = fill(this.raw, this.rx, this.compress, this.codec);
                    this.stage = Stage::Write { more };
                }
                Stage::Write { more } => {
                    ready!(ws_io::poll_write_raw(this.socket, this.raw, cx))?;
                    this.stage = if more { Stage::Fill } else { Stage::Flush };
                }
                Stage::Flush => {
                    return Sink::<Message>::poll_flush(Pin::new(&mut *this.socket), cx);
                }
            }
        }
    }
}
