//! One client request → one backend: forwarding headers, retries, WebSocket upgrades.
//!
//! Bodies are streamed both ways, frame by frame: an SSE stream reaches the client event by
//! event, never buffered. An upgrade (WebSocket) is forwarded as an HTTP/1.1 request on a
//! connection of its own; after the backend's `101` both upgraded connections are spliced
//! with `copy_bidirectional`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::balancer::{Backend, InFlight, Pool};
use crate::client::{BackendClient, Lease, RawPool};
use crate::config::{HashKey, Policy, ProxyConfig};

/// The body type of everything the proxy sends and answers.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// What every worker thread shares: the configuration, the backends and their counters.
pub struct Shared {
    /// The configuration it runs with.
    pub config: ProxyConfig,
    /// The backends.
    pub pool: Pool,
    /// Requests answered by the proxy itself because no backend could (502/503/504).
    pub proxy_errors: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Shared state for `config`.
    pub fn new(config: ProxyConfig) -> Shared {
        Shared {
            pool: Pool::new(&config.backends, config.policy),
            config,
            proxy_errors: Default::default(),
        }
    }
}

/// One worker thread's view: the shared state and the thread's own backend connections.
pub struct Worker {
    /// What every worker shares.
    pub shared: Arc<Shared>,
    client: Arc<BackendClient>,
    /// The fast path's idle backend sockets ([`crate::h1`]).
    pub(crate) raw: RawPool,
}

impl Worker {
    /// A worker of `shared` with a pool of backend connections of its own.
    pub fn new(shared: Arc<Shared>) -> Worker {
        let client = Arc::new(BackendClient::new(&shared.config));
        let raw = RawPool::new(&shared.config);
        Worker {
            shared,
            client,
            raw,
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never
/// forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is a hop-by-hop header by itself (not counting those named in
/// `Connection`).
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(name))
        || name.eq_ignore_ascii_case("proxy-connection")
}

/// Header values by name: hyper's map, or the fast path's parsed head ([`crate::h1`]).
pub(crate) trait HeaderSource {
    /// Every value of the header `name` (case-insensitive), in order.
    fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl HeaderSource for HeaderMap {
    fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl HeaderSource for [httparse::Header<'_>] {
    fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// The comma-separated tokens of every `Connection` header, trimmed.
fn connection_tokens<'a>(
    headers: &'a (impl HeaderSource + ?Sized),
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .field_values("connection")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Fields a `Connection` header cannot make hop-by-hop: `Host` and the framing fields.
/// A proxy that dropped them would change what the message means (a body without its
/// length, a request without its host).
const END_TO_END: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Whether a `Connection` field of `headers` names `name` (a token such as `close`, or a
/// header that is then hop-by-hop), never one of [`END_TO_END`].
pub(crate) fn named_in_connection(headers: &(impl HeaderSource + ?Sized), name: &str) -> bool {
    !END_TO_END.iter().any(|f| f.eq_ignore_ascii_case(name))
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|n| !END_TO_END.iter().any(|f| f.eq_ignore_ascii_case(n)))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(HeaderName::from_static("proxy-connection"));
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// `http` or `https`: the scheme the client used.
pub(crate) fn scheme(https: bool) -> &'static str {
    if https { "https" } else { "http" }
}

/// A header value as it came in, with ", " after it, for a proxy to append to: nothing
/// when absent, blank or not visible ASCII.
fn append_to(out: &mut Vec<u8>, came_in: Option<&[u8]>) {
    if let Some(v) = came_in
        && v.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        && !v.trim_ascii().is_empty()
    {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
}

/// A client's address as forwarding headers and hashing write it, formatted once (per
/// connection on the fast path).
pub(crate) struct ClientAddr {
    ip: String,
    v6: bool,
}

impl ClientAddr {
    pub(crate) fn new(peer: SocketAddr) -> ClientAddr {
        ClientAddr {
            ip: peer.ip().to_string(),
            v6: peer.is_ipv6(),
        }
    }
}

/// Appends the value of `X-Forwarded-For` to `out`: what came in, then the client's address.
pub(crate) fn forwarded_for(out: &mut Vec<u8>, client: &ClientAddr, came_in: Option<&[u8]>) {
    append_to(out, came_in);
    out.extend_from_slice(client.ip.as_bytes());
}

/// Appends the value of RFC 7239 `Forwarded` to `out`: what came in, then this hop's
/// `for`, `proto` and (when it is a plain token) `host`.
pub(crate) fn forwarded(
    out: &mut Vec<u8>,
    client: &ClientAddr,
    came_in: Option<&[u8]>,
    host: Option<&[u8]>,
    https: bool,
) {
    append_to(out, came_in);
    let ip = client.ip.as_bytes();
    let parts: [&[u8]; 3] = if client.v6 {
        [b"for=\"[", ip, b"]\";proto="]
    } else {
        [b"for=", ip, b";proto="]
    };
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(scheme(https).as_bytes());
    if let Some(host) = host.filter(|h| h.iter().all(|&b| b.is_ascii_graphic() && b != b'"')) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
}

/// The headers a proxy adds and replaces: `X-Forwarded-For` and RFC 7239 `Forwarded`
/// (appended to), `X-Forwarded-Proto`, `X-Forwarded-Host`. `https`: the client came over
/// TLS.
pub(crate) const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Sets the [`FORWARDING`] headers. Each value is written once into a buffer that becomes
/// the header's bytes (this runs on every request).
fn add_forwarding(
    headers: &mut HeaderMap,
    client: &ClientAddr,
    host: Option<&HeaderValue>,
    https: bool,
) {
    let mut xff = Vec::with_capacity(64);
    forwarded_for(&mut xff, client, headers.field_values(FORWARDING[0]).next());
    let mut fwd = Vec::with_capacity(64);
    forwarded(
        &mut fwd,
        client,
        headers.field_values(FORWARDING[1]).next(),
        host.map(HeaderValue::as_bytes),
        https,
    );
    for (name, value) in [(FORWARDING[0], xff), (FORWARDING[1], fwd)] {
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    headers.insert(
        HeaderName::from_static(FORWARDING[2]),
        HeaderValue::from_static(scheme(https)),
    );
    if let Some(host) = host {
        headers.insert(HeaderName::from_static(FORWARDING[3]), host.clone());
    }
}

/// The key consistent hashing places a request by: the configured header or cookie, else
/// the client's IP address.
pub(crate) fn hash_key(
    key: &HashKey,
    headers: &(impl HeaderSource + ?Sized),
    client: &ClientAddr,
) -> Vec<u8> {
    let from_request = match key {
        HashKey::ClientIp => None,
        HashKey::Header(name) => headers.field_values(name).next().map(<[u8]>::to_vec),
        HashKey::Cookie(name) => headers
            .field_values("cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
    };
    from_request.unwrap_or_else(|| client.ip.as_bytes().to_vec())
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An empty body.
pub fn empty_body() -> Body {
    empty()
}

fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response body that keeps its backend's in-flight claim (and, for a pooled request,
/// its connection) until the body ends.
struct Guarded {
    inner: Incoming,
    _claim: InFlight,
    _lease: Option<Lease>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How far an upload has come: bytes sent to the backend, and whether the body last
/// waited for its client (else for the backend to take more).
#[derive(Default)]
struct UploadProgress {
    bytes: AtomicU64,
    waiting_for_client: std::sync::atomic::AtomicBool,
}

/// A request body that says when it has been sent to its end (dropping it says so too)
/// and how far it has come.
struct Uploading {
    inner: Body,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
    progress: Arc<UploadProgress>,
}

impl HttpBody for Uploading {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.progress
            .waiting_for_client
            .store(polled.is_pending(), Ordering::Relaxed);
        let frame = std::task::ready!(polled);
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let n = data.map_or(0, Bytes::len) as u64;
            self.progress.bytes.fetch_add(n, Ordering::Relaxed);
        }
        if (!matches!(frame, Some(Ok(_))) || self.inner.is_end_stream())
            && let Some(sent) = self.sent.take()
        {
            let _ = sent.send(());
        }
        Poll::Ready(frame)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How one attempt at a backend ended, on hyper's path.
enum Attempt {
    Answered(Result<(Response<Incoming>, Lease), crate::client::SendError>),
    /// No answer within `limits.response_timeout_ms` of the request's end, or an upload
    /// the backend stopped taking for that long.
    TimedOut,
    /// The client sent nothing of its body for `limits.header_read_timeout_ms`.
    ClientSilent,
}

/// Send `out` to `backend` and wait for the answer's head. The response timeout starts
/// once the body is sent: a slow upload is not a slow backend. An upload that stalls
/// fails: for the response timeout when the backend stopped taking it, for the header
/// timeout when the client stopped sending it.
async fn send_with_limits(worker: &Worker, backend: &Backend, mut out: Request<Body>) -> Attempt {
    let limits = &worker.shared.config.limits;
    let response_timeout = Duration::from_millis(limits.response_timeout_ms);
    let client_idle = Duration::from_millis(limits.header_read_timeout_ms);
    if out.body().is_end_stream() {
        return match tokio::time::timeout(response_timeout, worker.client.send(backend, out)).await
        {
            Ok(answered) => Attempt::Answered(answered),
            Err(_) => Attempt::TimedOut,
        };
    }
    let progress = Arc::new(UploadProgress::default());
    let (sent, uploaded) = tokio::sync::oneshot::channel();
    let body = std::mem::replace(out.body_mut(), empty());
    *out.body_mut() = Uploading {
        inner: body,
        sent: Some(sent),
        progress: Arc::clone(&progress),
    }
    .boxed();
    let send = worker.client.send(backend, out);
    tokio::pin!(send, uploaded);
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        tokio::select! {
            // Answered before the upload ended (an early 413, say).
            answered = &mut send => return Attempt::Answered(answered),
            // Sent to its end, or dropped because the exchange failed.
            _ = &mut uploaded => {
                return match tokio::time::timeout(response_timeout, send).await {
                    Ok(answered) => Attempt::Answered(answered),
                    Err(_) => Attempt::TimedOut,
                };
            }
            () = tokio::time::sleep(response_timeout.min(client_idle)) => {
                let now = progress.bytes.load(Ordering::Relaxed);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                } else if progress.waiting_for_client.load(Ordering::Relaxed) {
                    if since.elapsed() >= client_idle {
                        return Attempt::ClientSilent;
                    }
                } else if since.elapsed() >= response_timeout {
                    return Attempt::TimedOut;
                }
            }
        }
    }
}

fn retryable(req: &Request<Incoming>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
    ) && req.body().is_end_stream()
}

/// Answer one client request. Never fails: a backend failure is a 502/503/504 answer.
pub async fn handle(
    worker: Arc<Worker>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let shared = &*worker.shared;
    let client = ClientAddr::new(peer);
    // Only consistent hashing reads the key: the other policies skip building it.
    let key = match shared.config.policy {
        Policy::ConsistentHash => hash_key(&shared.config.hash_key, req.headers(), &client),
        _ => Vec::new(),
    };
    if is_upgrade(&req) {
        // Boxed: rare, and its state would otherwise be part of every request's future
        // (which hyper moves into place per request).
        return Ok(Box::pin(upgrade(shared, req, &client, key)).await);
    }
    let retry = retryable(&req);
    let (parts, body) = req.into_parts();
    // HTTP/2 clients send `:authority` instead of Host; backends speak HTTP/1.1 and want
    // Host.
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    add_forwarding(
        &mut headers,
        &client,
        host.as_ref(),
        shared.config.tls.enabled(),
    );
    if let Some(h) = host {
        headers.insert(header::HOST, h);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut body = Some(body.boxed());
    let mut tried = Vec::new();
    let passive = &shared.config.passive_health;
    loop {
        let Some(claim) = shared.pool.pick(&key, &tried, Instant::now()) else {
            shared
                .proxy_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(if tried.is_empty() {
                text(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend")
            } else {
                text(StatusCode::BAD_GATEWAY, "no backend answered")
            });
        };
        let backend = Arc::clone(claim.backend());
        tried.push(backend.index);
        let mut out = Request::new(if retry {
            empty()
        } else {
            body.take().unwrap_or_else(empty)
        });
        *out.method_mut() = parts.method.clone();
        // A retry needs the headers again; the last possible attempt takes them.
        *out.headers_mut() = if retry && tried.len() <= shared.config.retries as usize {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        *out.uri_mut() = Uri::from(path.clone());
        let started = Instant::now();
        let outcome = send_with_limits(&worker, &backend, out).await;
        let failure = match outcome {
            Attempt::Answered(Ok((mut resp, lease))) => {
                backend.record_latency(started.elapsed());
                if matches!(resp.status().as_u16(), 502..=504) {
                    backend.record_failure(passive, Instant::now());
                }
                strip_hop_by_hop(resp.headers_mut());
                return Ok(resp.map(|inner| {
                    Guarded {
                        inner,
                        _claim: claim,
                        _lease: Some(lease),
                    }
                    .boxed()
                }));
            }
            Attempt::Answered(Err(e)) => {
                tracing::debug!(backend = %backend.address, error = %e, "backend failed");
                (StatusCode::BAD_GATEWAY, "backend failed")
            }
            Attempt::TimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                "backend did not answer in time",
            ),
            // Not the backend's failure: the client's, and never retried (it has a body).
            Attempt::ClientSilent => {
                return Ok(text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stopped arriving",
                ));
            }
        };
        if backend.record_failure(passive, Instant::now()) {
            tracing::warn!(backend = %backend.address, "ejected after repeated failures");
        }
        if !(retry && tried.len() <= shared.config.retries as usize) {
            shared
                .proxy_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(text(failure.0, failure.1));
        }
    }
}

/// Forward an upgrade request (WebSocket) on a connection of its own and splice both
/// upgraded connections together after the backend's `101`.
async fn upgrade(
    shared: &Shared,
    mut req: Request<Incoming>,
    client: &ClientAddr,
    key: Vec<u8>,
) -> Response<Body> {
    let host = req.headers().get(header::HOST).cloned();
    let mut headers = req.headers().clone();
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    add_forwarding(
        &mut headers,
        client,
        host.as_ref(),
        shared.config.tls.enabled(),
    );
    if let Some(u) = upgrade_to {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let client_side = hyper::upgrade::on(&mut req);
    let connect_timeout = Duration::from_millis(shared.config.limits.connect_timeout_ms);
    let response_timeout = Duration::from_millis(shared.config.limits.response_timeout_ms);
    let passive = &shared.config.passive_health;
    let mut tried = Vec::new();
    loop {
        let Some(claim) = shared.pool.pick(&key, &tried, Instant::now()) else {
            shared
                .proxy_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return text(StatusCode::BAD_GATEWAY, "no backend accepted the upgrade");
        };
        let backend = Arc::clone(claim.backend());
        tried.push(backend.index);
        let started = Instant::now();
        // Connecting has not sent anything yet, so a failure here may try another node.
        let stream = match tokio::time::timeout(
            connect_timeout,
            tokio::net::TcpStream::connect(&backend.address),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                backend.record_failure(passive, Instant::now());
                if tried.len() <= shared.config.retries as usize {
                    continue;
                }
                return text(StatusCode::BAD_GATEWAY, "backend unreachable");
            }
        };
        let _ = stream.set_nodelay(true);
        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await?;
            tokio::spawn(conn.with_upgrades());
            let mut out = Request::new(empty());
            *out.method_mut() = req.method().clone();
            *out.uri_mut() = path.parse().unwrap_or_default();
            *out.headers_mut() = headers.clone();
            sender.send_request(out).await
        };
        let mut resp = match tokio::time::timeout(response_timeout, exchange).await {
            Ok(Ok(r)) => r,
            _ => {
                backend.record_failure(passive, Instant::now());
                return text(StatusCode::BAD_GATEWAY, "backend failed the upgrade");
            }
        };
        backend.record_latency(started.elapsed());
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(resp.headers_mut());
            return resp.map(|inner| {
                Guarded {
                    inner,
                    _claim: claim,
                    _lease: None,
                }
                .boxed()
            });
        }
        let backend_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _claim = claim;
            match tokio::try_join!(client_side, backend_side) {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
            }
        });
        let mut answer = Response::new(empty());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = resp.headers().clone();
        return answer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_append_to_what_came_in() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarding(
            &mut h,
            &ClientAddr::new("[::1]:5000".parse().expect("addr")),
            Some(&HeaderValue::from_static("example.test")),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.test\""
        );
        assert_eq!(h["x-forwarded-host"], "example.test");

        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        let local = ClientAddr::new("127.0.0.1:5000".parse().expect("addr"));
        add_forwarding(&mut h, &local, None, false);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["forwarded"], "for=10.0.0.1, for=127.0.0.1;proto=http");
        assert!(!h.contains_key("x-forwarded-host"));

        // Behind TLS termination the scheme the client used is https.
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &local, None, true);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=https");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
