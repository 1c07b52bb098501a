//! The HTTP/1.1 fast path: plain HTTP/1.1 requests forwarded by the proxy itself.
//!
//! Most traffic through a reverse proxy is HTTP/1.1 requests with a `Host`, an origin-form
//! target and a body of known framing. For those, one task per client connection parses
//! the head in place (`httparse`, hyper's own parser), writes the backend's head straight
//! into a buffer (hop-by-hop headers dropped, forwarding headers added), sends it on a
//! pooled backend socket, and passes the answer back with its body streamed unchanged
//! (length-delimited, chunked, or until close). Nothing is copied into header maps, no
//! task or channel stands between the two sockets: as in nginx, each request costs the
//! system calls it needs and little else.
//!
//! Anything else is handed to hyper ([`Served::HandOff`]) with the bytes already read put
//! back in front ([`Rewind`]): HTTP/2 (prior knowledge or ALPN `h2`), HTTP/1.0, upgrades
//! (WebSocket), `Expect`, a missing or repeated `Host`, an absolute-form target, a
//! transfer coding other than `chunked`, conflicting lengths, a head that does not parse
//! or is larger than [`MAX_HEAD`]. hyper then serves the rest of that connection exactly
//! as it serves every connection of a proxy without this path, errors included. A hand-off
//! happens only between requests, before anything of the request was forwarded.

mod chunked;
mod request;
mod rewind;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub use chunked::{ChunkedEnd, Malformed};
pub use rewind::Rewind;

use request::{Parsed, Plan, parse_length, plan};

use crate::balancer::Backend;
use crate::client::{self, RAW_BUFFER, RawConn};
use crate::forward::{self, ClientAddr, Worker};

/// Header fields in one head; a request with more goes to hyper, a response with more is
/// a 502.
const MAX_HEADERS: usize = 100;
/// Bytes in one head (request line or status line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Interim (1xx) answers passed on before a final one; a backend sending more is a 502.
const MAX_INTERIM: usize = 8;

/// What the fast path did with a client connection.
pub enum Served<S> {
    /// The connection ended: either side closed it, it sat idle past the header timeout,
    /// a request or answer was broken, or the proxy is draining.
    Closed,
    /// A request the fast path does not forward itself: the connection, with the bytes
    /// already read from it in front, for hyper to serve from there on.
    HandOff(Rewind<S>),
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes (answers only).
    UntilClose,
}

/// Serve HTTP/1.1 requests on `io` until the connection ends or a request needs hyper.
pub async fn serve<S>(
    mut io: S,
    worker: &Worker,
    peer: SocketAddr,
    drain: &CancellationToken,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &worker.shared.config.limits;
    let idle = Duration::from_millis(limits.header_read_timeout_ms);
    let stall = Duration::from_millis(limits.response_timeout_ms);
    let mut buf = BytesMut::new();
    // The backend's head, then the client's: kept across requests, so written without
    // allocating once the connection is warm.
    let mut head = Vec::new();
    let mut answer = Vec::new();
    let client = ClientAddr::new(peer);
    loop {
        // A whole head within the header timeout; the wait between requests counts.
        let deadline = tokio::time::Instant::now() + idle;
        let plan = loop {
            if !buf.is_empty() {
                match plan(&buf, &mut head, &client, worker) {
                    Parsed::Request(plan) => break Some(plan),
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    _ => return Served::HandOff(Rewind::new(io, buf.freeze())),
                }
            }
            buf.reserve(4096);
            let read = if buf.is_empty() {
                tokio::select! {
                    biased;
                    _ = drain.cancelled() => break None,
                    r = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)) => r,
                }
            } else {
                tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or silent past the timeout.
                _ => break None,
            }
        };
        let Some(plan) = plan else { break };
        buf.advance(plan.head_len);
        let exchange = Exchange {
            worker,
            plan: &plan,
            head: &head,
            drain,
            idle,
            stall,
        };
        if !exchange.run(&mut io, &mut buf, &mut answer).await {
            break;
        }
        // A body grew the buffer; an idle connection keeps only a small one.
        if buf.is_empty() && buf.capacity() > 4 * 4096 {
            buf = BytesMut::new();
        }
    }
    linger(&mut io, &mut buf).await;
    Served::Closed
}

/// How long a closing connection is read from, what is read thrown away, after the
/// proxy's last answer (nginx's `lingering_time` has the same purpose).
const LINGER: Duration = Duration::from_secs(2);

/// Close `io` gracefully: end the sending side (a TLS client gets its close_notify),
/// then read until the client closes too, within [`LINGER`]. Closing a socket with unread
/// bytes in it (the rest of a body the proxy refused, a pipelined request after
/// `Connection: close`) makes the kernel send a reset, which can destroy the last answer
/// before the client has read it.
/// `scratch` is the connection's read buffer, reused.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, scratch: &mut BytesMut) {
    let _ = tokio::time::timeout(LINGER, async {
        if io.shutdown().await.is_err() {
            return;
        }
        loop {
            scratch.clear();
            scratch.reserve(4096);
            if !matches!(io.read_buf(scratch).await, Ok(n) if n > 0) {
                return;
            }
        }
    })
    .await;
}

/// Why an attempt at one backend gave no answer to pass on.
enum Failure {
    /// The client side broke (closed, silent, a malformed body): close without an answer.
    Client,
    /// The backend did not answer: a 502 or 504 unless another backend may be tried.
    /// `stale`: a reused connection closed before answering anything, so it may be tried
    /// again on a new connection.
    Backend {
        status: StatusCode,
        why: &'static str,
        stale: bool,
    },
}

impl Failure {
    fn backend(status: StatusCode, why: &'static str) -> Failure {
        Failure::Backend {
            status,
            why,
            stale: false,
        }
    }
}

/// A backend's answer head, parsed; the client's version of it is in the answer buffer.
struct Answer {
    /// Bytes of the backend's head in its connection's buffer.
    head_len: usize,
    status: u16,
    body: Framing,
    /// The backend keeps the connection open after this answer.
    reusable: bool,
}

/// One request's way through the proxy.
struct Exchange<'a> {
    worker: &'a Worker,
    plan: &'a Plan,
    /// The head for the backend.
    head: &'a [u8],
    drain: &'a CancellationToken,
    /// How long a client may stay silent in the middle of a request body.
    idle: Duration,
    /// How long a write may wait for its peer to take any of it
    /// (`limits.response_timeout_ms`): a client that stopped reading its answer, a
    /// backend that stopped reading its request.
    stall: Duration,
}

impl Exchange<'_> {
    /// Forward the request (its head is `self.head`; its body follows in `buf` and on
    /// `io`) and pass the answer back into `io`. Returns whether the client connection
    /// may carry another request.
    async fn run<S>(&self, io: &mut S, buf: &mut BytesMut, out: &mut Vec<u8>) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let shared = &*self.worker.shared;
        let passive = &shared.config.passive_health;
        let mut tried = Vec::new();
        loop {
            let Some(claim) = shared.pool.pick(&self.plan.key, &tried, Instant::now()) else {
                let (status, why) = if tried.is_empty() {
                    (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend")
                } else {
                    (StatusCode::BAD_GATEWAY, "no backend answered")
                };
                return self.proxy_error(io, out, status, why).await;
            };
            let backend = Arc::clone(claim.backend());
            tried.push(backend.index);
            let started = Instant::now();
            let (mut conn, answer) = match self.attempt(io, buf, out, &backend).await {
                Ok(ok) => ok,
                Err(Failure::Client) => return false,
                Err(Failure::Backend { status, why, .. }) => {
                    tracing::debug!(backend = %backend.address, why, "backend failed");
                    if backend.record_failure(passive, Instant::now()) {
                        tracing::warn!(backend = %backend.address, "ejected after repeated failures");
                    }
                    if self.plan.retryable && tried.len() <= shared.config.retries as usize {
                        continue;
                    }
                    return self.proxy_error(io, out, status, why).await;
                }
            };
            backend.record_latency(started.elapsed());
            if (502..=504).contains(&answer.status) {
                backend.record_failure(passive, Instant::now());
            }
            let keep_client = self.plan.keep_alive
                && answer.body != Framing::UntilClose
                && !self.drain.is_cancelled();
            let passed = self.pass_answer(io, buf, &mut conn, out, &answer).await;
            if passed && answer.reusable {
                self.worker.raw.give_back(backend.index, conn);
            }
            // The backend's in-flight claim ends with the answer's body.
            drop(claim);
            return passed && keep_client;
        }
    }

    /// One backend: a connection (an idle one, else a new one; a reused one that turns
    /// out closed is replaced once for a retryable request), the request, the answer's
    /// head. Interim (1xx) answers are passed on to the client on the way.
    async fn attempt<S>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        backend: &Backend,
    ) -> Result<(RawConn, Answer), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = &self.worker.shared.config.limits;
        let mut reuse = true;
        loop {
            let pooled = if reuse {
                self.worker.raw.checkout(backend.index)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let timeout = Duration::from_millis(limits.connect_timeout_ms);
                    match client::open(&backend.address, timeout).await {
                        Ok(stream) => RawConn::new(stream),
                        // Refused, unreachable or timed out: as on hyper's path, a 502.
                        Err(_) => {
                            return Err(Failure::backend(
                                StatusCode::BAD_GATEWAY,
                                "backend failed",
                            ));
                        }
                    }
                }
            };
            let answer = match self.send_request(io, buf, out, &mut conn).await {
                Ok(()) => self.read_answer(io, buf, &mut conn, out).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => return Ok((conn, answer)),
                Err(Failure::Backend { stale: true, .. }) if reused && self.plan.retryable => {
                    // The backend most likely closed this idle connection as the request
                    // left; an idempotent request may go again on a new connection.
                    reuse = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write the head and the body (from `buf`, then from `io`) to the backend.
    async fn send_request<S>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        scratch: &mut Vec<u8>,
        conn: &mut RawConn,
    ) -> Result<(), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let backend_failed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut => Failure::backend(
                StatusCode::GATEWAY_TIMEOUT,
                "backend stopped reading the request",
            ),
            // A reused connection that fails here was closed while idle: see `attempt`.
            _ => Failure::Backend {
                status: StatusCode::BAD_GATEWAY,
                why: "backend failed",
                stale: true,
            },
        };
        let mut body = match self.plan.body {
            Framing::Empty | Framing::UntilClose => {
                return write_all(&mut conn.stream, self.head, self.stall)
                    .await
                    .map_err(backend_failed);
            }
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedEnd::new()),
        };
        // The head and the body's first bytes in one write.
        scratch.clear();
        scratch.extend_from_slice(self.head);
        loop {
            let take = body.take(buf).map_err(|_| Failure::Client)?;
            scratch.extend_from_slice(&buf[..take]);
            buf.advance(take);
            if !scratch.is_empty() {
                write_all(&mut conn.stream, scratch, self.stall)
                    .await
                    .map_err(backend_failed)?;
                scratch.clear();
            }
            if body.is_done() {
                return Ok(());
            }
            buf.reserve(RAW_BUFFER);
            match tokio::time::timeout(self.idle, io.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(Failure::Client),
            }
        }
    }

    /// Read the backend's answer head (within `limits.response_timeout_ms`) and write the
    /// client's version of it into `out`.
    async fn read_answer<S>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        conn: &mut RawConn,
        out: &mut Vec<u8>,
    ) -> Result<Answer, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = &self.worker.shared.config.limits;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(limits.response_timeout_ms);
        let invalid =
            || Failure::backend(StatusCode::BAD_GATEWAY, "backend sent an invalid answer");
        let mut interim = 0;
        loop {
            if !conn.buf.is_empty() {
                match self.parse_answer(&conn.buf, out) {
                    Ok(Some(answer)) if (100..200).contains(&answer.status) => {
                        // 101 was never asked for; 100 and 103 are passed on.
                        if answer.status == 101 || interim == MAX_INTERIM {
                            return Err(invalid());
                        }
                        interim += 1;
                        write_all(io, out, self.stall)
                            .await
                            .map_err(|_| Failure::Client)?;
                        conn.buf.advance(answer.head_len);
                        continue;
                    }
                    Ok(Some(answer)) => return Ok(answer),
                    Ok(None) if conn.buf.len() < MAX_HEAD => {}
                    _ => return Err(invalid()),
                }
            }
            match tokio::time::timeout_at(deadline, read_backend(io, buf, conn)).await {
                Ok(Ok(Ok(n))) if n > 0 => {}
                Ok(Err(ClientGone)) => return Err(Failure::Client),
                Ok(Ok(_)) if conn.buf.is_empty() && interim == 0 => {
                    return Err(Failure::Backend {
                        status: StatusCode::BAD_GATEWAY,
                        why: "backend closed the connection without answering",
                        stale: true,
                    });
                }
                Ok(Ok(_)) => return Err(invalid()),
                Err(_) => {
                    return Err(Failure::backend(
                        StatusCode::GATEWAY_TIMEOUT,
                        "backend did not answer in time",
                    ));
                }
            }
        }
    }

    /// Parse an answer head at the start of `buf`: `None` while incomplete. Writes the
    /// client's head into `out`: the status line, the backend's fields without hop-by-hop
    /// ones (a transfer coding is kept: the body passes unchanged), and `connection: close`
    /// when the client connection ends after this answer.
    fn parse_answer(&self, buf: &[u8], out: &mut Vec<u8>) -> Result<Option<Answer>, ()> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let (Some(version), Some(status)) = (resp.version, resp.code) else {
            return Err(());
        };
        let headers: &[httparse::Header<'_>] = resp.headers;
        let mut length = None;
        let mut coding = None;
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                match parse_length(h.value) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return Err(()),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // The last coding of the last field decides (RFC 9112 §6.3).
                coding = Some(h.value);
            }
        }
        let chunked_last = |v: &[u8]| {
            v.rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        };
        let body = if self.plan.head_only || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else {
            match (coding, length) {
                (Some(c), _) if chunked_last(c) => Framing::Chunked,
                (Some(_), _) | (None, None) => Framing::UntilClose,
                (None, Some(n)) => Framing::Length(n),
            }
        };
        let reusable = version == 1
            && !forward::named_in_connection(headers, "close")
            && body != Framing::UntilClose;
        let close =
            !self.plan.keep_alive || body == Framing::UntilClose || self.drain.is_cancelled();

        out.clear();
        // httparse checked that the code is three digits.
        let code = [status / 100, status / 10 % 10, status % 10].map(|d| b'0' + d as u8);
        for part in [b"HTTP/1.1 ".as_slice(), &code, b" "] {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in headers {
            // The framing fields stay as the body passes unchanged; a length beside a
            // coding is dropped (the coding decides).
            let skip = if h.name.eq_ignore_ascii_case("transfer-encoding") {
                status < 200
            } else if h.name.eq_ignore_ascii_case("content-length") {
                coding.is_some()
            } else {
                forward::is_hop_by_hop(h.name) || forward::named_in_connection(headers, h.name)
            };
            if skip {
                continue;
            }
            for part in [h.name.as_bytes(), b": ", h.value, b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        if close && status >= 200 {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(Some(Answer {
            head_len,
            status,
            body,
            reusable,
        }))
    }

    /// Write the answer's head (in `out`) and its body, streamed as it arrives, to the
    /// client. Returns whether all of it went out and the backend connection is at the
    /// end of the answer.
    async fn pass_answer<S>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        conn: &mut RawConn,
        out: &mut Vec<u8>,
        answer: &Answer,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        conn.buf.advance(answer.head_len);
        let mut body = match answer.body {
            Framing::Empty => Body::Length(0),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedEnd::new()),
            Framing::UntilClose => Body::UntilClose,
        };
        // The head and the body's first bytes in one write.
        loop {
            let Ok(take) = body.take(&conn.buf) else {
                tracing::debug!("backend sent a malformed chunked body");
                return false;
            };
            out.extend_from_slice(&conn.buf[..take]);
            conn.buf.advance(take);
            if !out.is_empty() {
                if write_all(io, out, self.stall).await.is_err() {
                    return false;
                }
                out.clear();
            }
            if body.is_done() {
                // Bytes after the answer's end were never asked for: the connection is
                // not reused (the pool drops a connection with a non-empty buffer).
                return true;
            }
            match read_backend(io, buf, conn).await {
                Ok(Ok(n)) if n > 0 => {}
                // The end of an answer delimited by the close (all of it went out), else
                // a cut answer.
                _ => return matches!(body, Body::UntilClose),
            }
        }
    }

    /// An answer from the proxy itself: 502, 503 or 504 with a line of text.
    async fn proxy_error<S>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        status: StatusCode,
        why: &str,
    ) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        self.worker
            .shared
            .proxy_errors
            .fetch_add(1, Ordering::Relaxed);
        // A body left half-read in the connection ends it.
        let keep =
            self.plan.keep_alive && self.plan.body == Framing::Empty && !self.drain.is_cancelled();
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{why}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            why.len() + 1,
            if keep { "" } else { "connection: close\r\n" },
        );
        write_all(io, out, self.stall).await.is_ok() && keep
    }
}

/// A body's progress as its bytes pass through.
enum Body {
    /// Bytes left.
    Length(u64),
    Chunked(ChunkedEnd),
    UntilClose,
}

impl Body {
    /// How many bytes at the start of `buf` belong to the body.
    fn take(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        Ok(match self {
            Body::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                // `n` ≤ buf.len().
                n as usize
            }
            Body::Chunked(scanner) => scanner.scan(buf)?,
            Body::UntilClose => buf.len(),
        })
    }

    fn is_done(&self) -> bool {
        match self {
            Body::Length(left) => *left == 0,
            Body::Chunked(scanner) => scanner.is_done(),
            Body::UntilClose => false,
        }
    }
}

/// The client closed its connection (or it failed) while its answer was awaited.
struct ClientGone;

/// Read what the backend sends next into `conn.buf`, while watching the client: an
/// answer nobody waits for any more (a closed SSE stream, an abandoned long poll) is not
/// read to its end. What the client sends meanwhile (a pipelined request) is kept in
/// `client`, up to [`MAX_HEAD`] bytes.
async fn read_backend<S>(
    io: &mut S,
    client: &mut BytesMut,
    conn: &mut RawConn,
) -> Result<std::io::Result<usize>, ClientGone>
where
    S: AsyncRead + Unpin,
{
    conn.buf.reserve(RAW_BUFFER);
    loop {
        let watch = client.len() < MAX_HEAD;
        if watch {
            client.reserve(1024);
        }
        tokio::select! {
            biased;
            read = conn.stream.read_buf(&mut conn.buf) => return Ok(read),
            read = io.read_buf(client), if watch => match read {
                Ok(n) if n > 0 => {}
                _ => return Err(ClientGone),
            },
        }
    }
}

/// Write all of `bytes` and flush (a TLS stream holds records until then), failing with
/// `TimedOut` when the peer takes nothing for `stall`.
async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    bytes: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    tokio::time::timeout(stall, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A worker with the default configuration, for unit tests.
#[cfg(test)]
fn test_worker() -> Worker {
    Worker::new(Arc::new(crate::forward::Shared::new(
        crate::config::ProxyConfig::default(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_heads_keep_their_framing_and_lose_hop_by_hop_fields() {
        let worker = test_worker();
        let drain = CancellationToken::new();
        let plan = Plan {
            head_len: 0,
            body: Framing::Empty,
            retryable: true,
            keep_alive: true,
            head_only: false,
            key: Vec::new(),
        };
        let exchange = Exchange {
            worker: &worker,
            plan: &plan,
            head: b"",
            drain: &drain,
            idle: Duration::from_secs(1),
            stall: Duration::from_secs(1),
        };
        let mut out = Vec::new();
        let answer = exchange
            .parse_answer(
                b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n\
                  Transfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                &mut out,
            )
            .expect("valid")
            .expect("complete");
        assert_eq!(answer.body, Framing::Chunked);
        assert!(answer.reusable);
        // The coding wins over the length, which is not passed on (RFC 9112 §6.3).
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );

        // No length and no coding: delimited by the close, which the client is told.
        let answer = exchange
            .parse_answer(b"HTTP/1.0 200 OK\r\n\r\n", &mut out)
            .expect("valid")
            .expect("complete");
        assert_eq!((answer.body, answer.reusable), (Framing::UntilClose, false));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
        );

        // `Connection` cannot take away the framing the body is passed on with.
        let answer = exchange
            .parse_answer(
                b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n",
                &mut out,
            )
            .expect("valid")
            .expect("complete");
        assert_eq!(answer.body, Framing::Length(2));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        );

        // Two different lengths: refused.
        assert!(
            exchange
                .parse_answer(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    &mut out
                )
                .is_err()
        );
    }
}
