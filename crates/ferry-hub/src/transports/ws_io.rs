//! The hub's WebSocket layer: the upgrade handshake, the server socket, and pre-built
//! frames. The rest of the hub uses the names defined or re-exported here.
//!
//! The socket reads with ferry-proto's sans-IO [`ws_frame::Decoder`] into a buffer on
//! the stack, and keeps only the unread rest of a frame, so an idle connection holds no
//! read buffer (a library's buffered stream kept 512 bytes to 4 KiB per connection, the
//! largest piece of an idle connection's memory). Writes are either frames it encodes
//! itself (replies, control frames) or shared pre-built frames ([`RawFrames`]). The
//! message type is tungstenite's, which the client side uses too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use ferry_proto::CloseCode;
use ferry_proto::ws_frame::{self, Decoded, opcode};
use futures_util::{Sink, Stream};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TungCloseCode;

pub use tokio_tungstenite::tungstenite::Message;
/// Shared, immutable UTF-8 text: cloning it shares the bytes.
pub use tokio_tungstenite::tungstenite::Utf8Bytes as WsText;

/// permessage-deflate's parameters as agreed on one connection.
pub use ferry_proto::deflate::Agreed as Deflate;
use ferry_proto::deflate::io::Inflating;

/// The byte stream under a socket: the upgraded HTTP connection, with the client's
/// compressed messages inflated where permessage-deflate was agreed.
type Io = Inflating<TokioIo<hyper::upgrade::Upgraded>>;

/// Errors from reading or writing a socket.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The transport failed (reset, timeout, EOF while writing).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer broke the WebSocket rules.
    #[error(transparent)]
    Frame(#[from] ws_frame::FrameError),
    /// A frame was to be sent after the close frame.
    #[error("the close frame was already sent")]
    Closed,
    /// A raw frame was given to send; only messages are.
    #[error("raw frames are not sent through the socket; use RawFrames")]
    Unsupported,
}

/// A complete server-to-client data frame around `payload`, text for `ferry.json` and
/// binary for `ferry.msgpack`: FIN + opcode, the length, no mask (servers never mask).
/// The same bytes suit every subscriber of the codec, so a publication's frame is built
/// once and written to each socket as it is.
pub fn data_frame(codec: ferry_proto::Codec, payload: &[u8]) -> bytes::Bytes {
    let op = if codec.is_binary() {
        opcode::BINARY
    } else {
        opcode::TEXT
    };
    ws_frame::server_frame(op, payload).into()
}

/// A ping frame without payload (the session's keep-alive).
pub fn ping_frame() -> bytes::Bytes {
    ws_frame::server_frame(opcode::PING, &[]).into()
}

/// Frames written to the socket directly, after the socket's own frames: shared,
/// pre-built frames go out with vectored writes and are never copied into a
/// per-connection buffer (which would keep the capacity of the largest frame a connection
/// ever got). What a write left unwritten stays here, so an interrupted write resumes
/// where it stopped and nothing else reaches the socket in between.
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

    /// Write queued frames until none is left (then flush) or the socket is full. The
    /// socket's own frames must be written first: [`poll_write_raw`] makes sure of it.
    fn poll_write(&mut self, cx: &mut Context<'_>, io: &mut Io) -> Poll<std::io::Result<()>> {
        while !self.frames.is_empty() {
            let mut slices = [std::io::IoSlice::new(&[]); RAW_SLICES];
            let mut count = 0;
            for (i, frame) in self.frames.iter().take(RAW_SLICES).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                slices[i] = std::io::IoSlice::new(&frame[from..]);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
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
        Pin::new(io).poll_flush(cx)
    }
}

/// Poll the write of the queued raw frames after whatever the socket holds (so the order
/// on the wire is the order of the calls). Polling again after `Pending` goes on where it
/// stopped. Without a future of its own, so a write in flight adds nothing to the
/// connection's task beyond the caller's state.
pub fn poll_write_raw(
    socket: &mut ServerSocket,
    raw: &mut RawFrames,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WsError>> {
    if raw.is_empty() {
        return Poll::Ready(Ok(()));
    }
    ready!(socket.poll_write_out(cx))?;
    raw.poll_write(cx, &mut socket.io).map_err(WsError::Io)
}

/// Write the queued raw frames after whatever the socket holds (so the order on the wire
/// is the order of the calls).
pub async fn write_raw(socket: &mut ServerSocket, raw: &mut RawFrames) -> Result<(), WsError> {
    std::future::poll_fn(|cx| poll_write_raw(socket, raw, cx)).await
}

/// Bytes read from the socket at once into a buffer on the stack (the same step as the
/// inflating layer's). Only what is left of an incomplete frame is kept, in a buffer of
/// the connection's that exists while that frame is arriving.
const READ_CHUNK: usize = 4096;
/// The most one read adds to a connection's buffer while a long frame arrives (the
/// buffer's capacity is the frame's length, reserved once; this bounds the zeroing).
const READ_STEP: usize = 64 * 1024;
/// Frames the socket encodes (replies, control frames) are collected up to this size
/// before `poll_ready` writes them.
const WRITE_BUFFER: usize = 16 * 1024;

/// A server-side WebSocket over an upgraded HTTP connection: a `Stream` of the client's
/// messages and a `Sink` of the server's. It answers pings with pongs and a close frame
/// with a close frame by itself, as RFC 6455 asks; after a close frame in either
/// direction the stream ends once that handshake's frames are written.
pub struct ServerSocket {
    io: Io,
    decoder: ws_frame::Decoder,
    /// Bytes read and not yet decoded: the start of a frame. Unallocated between frames.
    read: Vec<u8>,
    /// Frames encoded here and not yet written, from `out_at`. Unallocated when empty.
    out: Vec<u8>,
    out_at: usize,
    /// Nothing more is read: the peer's close frame came, the stream broke the rules, or
    /// it ended.
    read_done: bool,
    /// Our close frame is queued or written: nothing else is sent.
    close_sent: bool,
}

/// What decoding a piece of input came to.
enum Step {
    /// Give this to the reader.
    Yield(Result<Message, WsError>),
    /// The next frame needs this many bytes in `read`.
    More(usize),
}

impl ServerSocket {
    fn new(io: Io, max_message: usize) -> ServerSocket {
        ServerSocket {
            io,
            decoder: ws_frame::Decoder::new(max_message),
            read: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            read_done: false,
            close_sent: false,
        }
    }

    /// Encode a server frame into the write buffer.
    fn queue(&mut self, op: u8, payload: &[u8]) {
        ws_frame::push_server_frame(&mut self.out, op, payload);
    }

    /// Write the frames encoded here (not flushed).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                ));
            }
            self.out_at += n;
        }
        // Given back: an idle connection keeps no write buffer.
        self.out = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Decode from `input`; how many bytes were taken, and what that came to. Pings are
    /// answered and a close frame is answered here.
    fn decode(&mut self, input: &mut [u8]) -> (usize, Step) {
        let (message, used) = match self.decoder.decode(input) {
            Ok(Decoded::Message(message, used)) => (message, used),
            Ok(Decoded::Incomplete { consumed, need }) => return (consumed, Step::More(need)),
            Err(e) => {
                self.read_done = true;
                return (input.len(), Step::Yield(Err(e.into())));
            }
        };
        let message = match message {
            ws_frame::Message::Text(text) => Message::Text(text.into()),
            ws_frame::Message::Binary(data) => Message::Binary(data.into()),
            ws_frame::Message::Ping(data) => {
                if !self.close_sent {
                    self.queue(opcode::PONG, &data);
                }
                Message::Ping(data.into())
            }
            ws_frame::Message::Pong(data) => Message::Pong(data.into()),
            ws_frame::Message::Close(frame) => {
                self.read_done = true;
                if !self.close_sent {
                    self.close_sent = true;
                    // The peer's code echoed (RFC 6455 §5.5.1); one it may not send is a
                    // protocol error.
                    let payload = match &frame {
                        None => Vec::new(),
                        Some((code, reason)) if ws_frame::close_code_allowed(*code) => {
                            ws_frame::close_payload(*code, reason)
                        }
                        Some(_) => {
                            ws_frame::close_payload(CloseCode::PROTOCOL_ERROR.0, "protocol error")
                        }
                    };
                    self.queue(opcode::CLOSE, &payload);
                }
                Message::Close(frame.map(|(code, reason)| CloseFrame {
                    code: TungCloseCode::from(code),
                    reason: reason.into(),
                }))
            }
        };
        (used, Step::Yield(Ok(message)))
    }

    /// Stop reading: with an error for the reader, or at the end of the stream.
    fn stop(&mut self, error: Option<WsError>) -> Poll<Option<Result<Message, WsError>>> {
        self.read_done = true;
        self.read = Vec::new();
        Poll::Ready(error.map(Err))
    }

    /// Decode what `read` holds and keep what was not taken (nothing is kept once the
    /// buffer is empty, so it is given back between frames).
    fn decode_buffered(&mut self) -> Step {
        let mut read = std::mem::take(&mut self.read);
        let (used, step) = self.decode(&mut read);
        read.drain(..used);
        if !self.read_done && !read.is_empty() {
            self.read = read;
        }
        step
    }

    /// Read more of the frame that `read` begins, into `read`: its capacity is the frame's
    /// length (`need`, which the decoder has checked against the limit), reserved once.
    /// How many bytes came; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<std::io::Result<usize>> {
        let len = self.read.len();
        self.read.reserve(need.saturating_sub(len).max(READ_CHUNK));
        let step = (self.read.capacity() - len).min(READ_STEP);
        self.read.resize(len + step, 0);
        let mut buf = ReadBuf::new(&mut self.read[len..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.read.truncate(len + n);
        polled.map_ok(|()| n)
    }
}

impl Stream for ServerSocket {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Pongs and the close answer go out before anything more is read: a peer that
            // pings without reading cannot grow the write buffer.
            if let Err(e) = ready!(this.poll_write_out(cx)) {
                return this.stop(Some(e));
            }
            if this.read_done {
                return Poll::Ready(None);
            }
            let step = if this.read.is_empty() {
                // Nothing pending: read onto the stack, decode there, keep only the rest.
                let mut chunk = [0u8; READ_CHUNK];
                let mut buf = ReadBuf::new(&mut chunk);
                if let Err(e) = ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                    return this.stop(Some(e.into()));
                }
                let n = buf.filled().len();
                if n == 0 {
                    return this.stop(None);
                }
                let (used, step) = this.decode(&mut chunk[..n]);
                if !this.read_done {
                    this.read.extend_from_slice(&chunk[used..n]);
                }
                step
            } else {
                this.decode_buffered()
            };
            let need = match step {
                Step::Yield(item) => return Poll::Ready(Some(item)),
                Step::More(need) => need,
            };
            if this.read.is_empty() {
                // Only whole fragments came: the decoder holds them.
                continue;
            }
            match ready!(this.poll_fill(cx, need)) {
                Err(e) => return this.stop(Some(e.into())),
                // The stream ended inside a frame.
                Ok(0) => return this.stop(None),
                Ok(_) => {}
            }
        }
    }
}

impl Sink<Message> for ServerSocket {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.out.len() - this.out_at >= WRITE_BUFFER {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        if this.close_sent {
            return Err(WsError::Closed);
        }
        match message {
            Message::Text(text) => this.queue(opcode::TEXT, text.as_bytes()),
            Message::Binary(data) => this.queue(opcode::BINARY, &data),
            Message::Ping(data) => this.queue(opcode::PING, &data),
            Message::Pong(data) => this.queue(opcode::PONG, &data),
            Message::Close(frame) => {
                this.close_sent = true;
                let payload = frame
                    .map(|f| ws_frame::close_payload(f.code.into(), &f.reason))
                    .unwrap_or_default();
                this.queue(opcode::CLOSE, &payload);
            }
            Message::Frame(_) => return Err(WsError::Unsupported),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(WsError::Io)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io)
            .poll_shutdown(cx)
            .map_err(WsError::Io)
    }
}

/// A close frame with a code and a reason (cut to fit a control frame when sent).
pub fn close_message(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: TungCloseCode::from(code.0),
        reason: reason.into(),
    }))
}

/// The close code a read error deserves, and a reason; `None` when the transport itself
/// failed (reset, EOF) and there is nobody left to tell.
pub fn close_for_error(error: &WsError) -> Option<(CloseCode, &'static str)> {
    match error {
        WsError::Frame(e) => Some((e.close_code(), e.close_reason())),
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
                let socket = ServerSocket::new(
                    Inflating::server(TokioIo::new(upgraded), inflater),
                    max_message_size,
                );
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
