//! The one place that knows the WebSocket library (tokio-tungstenite). Everything else
//! uses the names re-exported here, so the library can be swapped in one file.
//!
//! Buffers are small on purpose: tungstenite's default 128 KiB read buffer would cost
//! ~135 KiB per idle connection; 4 KiB keeps an idle connection at a few KiB.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use ferry_proto::CloseCode;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TungCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, error::CapacityError};

pub use tokio_tungstenite::tungstenite::Message;
/// Shared, immutable UTF-8 text: cloning it shares the bytes.
pub use tokio_tungstenite::tungstenite::Utf8Bytes as WsText;

/// A server-side WebSocket over an upgraded HTTP connection (inflating the client's
/// compressed messages where permessage-deflate was agreed).
pub type ServerSocket = WebSocketStream<Inflating<TokioIo<hyper::upgrade::Upgraded>>>;

/// permessage-deflate's parameters as agreed on one connection.
pub use ferry_proto::deflate::Agreed as Deflate;
use ferry_proto::deflate::io::Inflating;

/// Errors from reading or writing a socket.
pub type WsError = tungstenite::Error;

/// A complete server-to-client data frame around `payload`, text for `ferry.json` and
/// binary for `ferry.msgpack`: FIN + opcode, the length, no mask (servers never mask).
/// The same bytes suit every subscriber of the codec, so a publication's frame is built
/// once and written to each socket as it is.
pub fn data_frame(codec: ferry_proto::Codec, payload: &[u8]) -> bytes::Bytes {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(if codec.is_binary() { 0x82 } else { 0x81 });
    if len < 126 {
        frame.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        frame.push(126);
        frame.extend_from_slice(&short.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame.into()
}

/// Frames written to the socket directly, beside tungstenite: shared, pre-built frames go
/// out with vectored writes and are never copied into a per-connection buffer (which
/// would keep the capacity of the largest frame a connection ever got). What a write
/// left unwritten stays here, so an interrupted write resumes where it stopped and
/// nothing else reaches the socket in between.
#[derive(Default)]
pub struct RawFrames {
    frames: std::collections::VecDeque<bytes::Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
}

/// Frames gathered into one vectored write.
const RAW_SLICES: usize = 64;

impl RawFrames {
    /// Queue a frame (written by the next [`RawFrames::write`]).
    pub fn push(&mut self, frame: bytes::Bytes) {
        self.frames.push_back(frame);
    }

    /// Frames queued and not yet written.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Write queued frames until none is left (then flush) or the socket is full.
    /// tungstenite's own buffer must be empty (flushed) first: [`poll_write_raw`] makes
    /// sure of it.
    fn poll_write(
        &mut self,
        cx: &mut std::task::Context<'_>,
        io: &mut Inflating<TokioIo<hyper::upgrade::Upgraded>>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::{Poll, ready};
        while !self.frames.is_empty() {
            let mut slices = [std::io::IoSlice::new(&[]); RAW_SLICES];
            let mut count = 0;
            for (i, frame) in self.frames.iter().take(RAW_SLICES).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                slices[i] = std::io::IoSlice::new(&frame[from..]);
                count += 1;
            }
            let n = ready!(tokio::io::AsyncWrite::poll_write_vectored(
                std::pin::Pin::new(&mut *io),
                cx,
                &slices[..count],
            ))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            let mut left = n;
            while left > 0 {
                let Some(front) = self.frames.front() else {
                    break;
                };
                let rest = front.len() - self.written;
                if left >= rest {
                    left -= rest;
                    self.written = 0;
                    self.frames.pop_front();
                } else {
                    self.written += left;
                    left = 0;
                }
            }
        }
        if self.frames.capacity() > RAW_SLICES * 4 {
            self.frames.shrink_to(RAW_SLICES);
        }
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(io), cx)
    }
}

/// Poll the write of the queued raw frames after whatever tungstenite holds (so the order
/// on the wire is the order of the calls). Polling again after `Pending` goes on where it
/// stopped. Without a future of its own, so a write in flight adds nothing to the
/// connection's task beyond the caller's state.
pub fn poll_write_raw(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<(), WsError>> {
    use futures_util::Sink;
    use std::task::{Poll, ready};
    if raw.is_empty() {
        return Poll::Ready(Ok(()));
    }
    ready!(Sink::<Message>::poll_flush(
        std::pin::Pin::new(&mut *socket),
        cx
    ))?;
    raw.poll_write(cx, socket.get_mut()).map_err(WsError::Io)
}

/// Write the queued raw frames after whatever tungstenite holds (so the order on the wire
/// is the order of the calls).
pub async fn write_raw(socket: &mut ServerSocket, raw: &mut RawFrames) -> Result<(), WsError> {
    std::future::poll_fn(|cx| poll_write_raw(socket, raw, cx)).await
}

/// Read buffer per connection, allocated up front by tungstenite and kept for the life
/// of the connection. It is also the most one read takes from the socket, except that the
/// rest of a frame whose header says it is longer is read in pieces of this size. Hub
/// clients send small commands, and an idle connection's budget is 4 KiB in all, so
/// 512 bytes: a 4 KiB buffer alone would spend it (measured in ARCHITECTURE.md).
const READ_BUFFER: usize = 512;
/// Frames are collected up to this size before they are written in one go.
const WRITE_BUFFER: usize = 16 * 1024;

/// A close frame with a code and a reason (truncated to fit the 123-byte limit).
pub fn close_message(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: TungCloseCode::from(code.0),
        reason: reason[..end].to_string().into(),
    }))
}

/// The close code a read error deserves, and a reason; `None` when the transport itself
/// failed (reset, EOF) and there is nobody left to tell.
pub fn close_for_error(error: &WsError) -> Option<(CloseCode, &'static str)> {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::MESSAGE_TOO_BIG, "message too big"))
        }
        WsError::Capacity(_) => Some((CloseCode::MESSAGE_TOO_BIG, "frame too big")),
        WsError::Utf8(_) => Some((CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text frame")),
        WsError::Protocol(_) => Some((CloseCode::PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade_request(req: &Request) -> bool {
    header_has_token(req.headers(), header::CONNECTION, "upgrade")
        && header_has_token(req.headers(), header::UPGRADE, "websocket")
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

/// Complete the WebSocket handshake (RFC 6455 §4.2) and run `handler` on the socket once
/// the connection is upgraded. `protocols` are the subprotocols this endpoint speaks; the
/// handler gets the client's first offer among them (`None` when the client offered none).
pub fn upgrade<F, Fut>(
    mut req: Request,
    max_message_size: usize,
    protocols: &'static [&'static str],
    deflate: Option<ferry_proto::deflate::ServerPolicy>,
    handler: F,
) -> Response
where
    F: FnOnce(ServerSocket, Option<&'static str>, Option<Deflate>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !is_upgrade_request(&req) {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = plain(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    // The client's first offer that this endpoint speaks.
    let chosen = offered
        .iter()
        .find_map(|o| protocols.iter().copied().find(|p| p == o));
    if !offered.is_empty() && chosen.is_none() {
        return plain(
            StatusCode::BAD_REQUEST,
            &format!(
                "unsupported subprotocol; this endpoint speaks {}",
                protocols.join(", ")
            ),
        );
    }
    // permessage-deflate: the first offer this endpoint can accept, if it compresses.
    let agreed = deflate.and_then(|policy| {
        ferry_proto::deflate::negotiate(
            req.headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            policy,
        )
    });
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded",
        );
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // No cap of its own: a frame is copied in whole before it is written, so the
        // buffer holds at most one frame (a message or a reply, both bounded by the
        // limits) plus WRITE_BUFFER; a cap below a frame's size would fail that write.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let inflater = agreed.map(|agreed| {
                    ferry_proto::deflate::Inflater::new(
                        ferry_proto::deflate::Reader::Server,
                        &agreed,
                        max_message_size,
                    )
                });
                let socket = WebSocketStream::from_raw_socket(
                    Inflating::server(TokioIo::new(upgraded), inflater),
                    Role::Server,
                    Some(config),
                )
                .await;
                // The connection gets a task of its own, sized to the handler's future
                // alone; this one, which also held the upgrade, ends here.
                tokio::spawn(handler(socket, chosen, agreed));
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = chosen {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(agreed) = &agreed
        && let Ok(v) = HeaderValue::from_str(&agreed.response_header())
    {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    response
}
