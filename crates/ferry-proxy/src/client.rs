//! Kept-alive HTTP/1.1 connections to the backends, one pool per worker thread.
//!
//! Two kinds: [`RawPool`] holds plain sockets for the fast path ([`crate::h1`]), which
//! writes and reads HTTP/1.1 itself; [`BackendClient`] holds hyper connections for
//! everything else (HTTP/2 clients, upgrades, unusual requests).
//!
//! Each worker owns a [`BackendClient`]: a request checks an idle connection out of it
//! (or opens one), and the response body gives it back when it ends ([`Lease`]). Nothing
//! here is shared between threads, so the lock is never contended and no task is spawned
//! per request: hyper-util's pooled client, used before, spawned one to watch each
//! connection become idle again and locked a pool shared by every thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::balancer::Backend;
use crate::config::ProxyConfig;
use crate::forward::Body;

/// Idle connections kept per backend and worker; more are closed when they come back.
const MAX_IDLE: usize = 128;
/// An idle connection unused this long is closed instead of reused (backends close theirs
/// after their own keep-alive timeout; reusing one they just closed fails the request).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a checked-out connection may take to become ready again before another is
/// used (it is normally ready at once, or closing).
const READY_WAIT: Duration = Duration::from_millis(100);

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out).
    Connect(std::io::Error),
    /// The connection failed while the request was sent or the response read.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Http(e) => write!(f, "{e}"),
        }
    }
}

/// A hyper connection to a backend: the handle requests are sent with, and its connection
/// task, which is aborted when this is dropped. An exchange that fails or is given up
/// (a timeout, a stalled upload) drops its connection, so the task never outlives it:
/// hyper's task would otherwise go on writing a request body to a backend that stopped
/// reading, for ever.
struct Conn {
    sender: SendRequest<Body>,
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker's connections to the backends.
pub struct BackendClient {
    /// Idle connections by backend index, the most recently used last.
    idle: Mutex<Vec<Vec<Idle>>>,
    connect_timeout: Duration,
}

/// A connection checked out for one request; dropping it (when the response body ends or
/// is dropped) gives the connection back to the pool unless it is closed.
pub struct Lease {
    client: Arc<BackendClient>,
    backend: usize,
    conn: Option<Conn>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.client.idle.lock();
        if let Some(list) = idle.get_mut(self.backend)
            && list.len() < MAX_IDLE
        {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

impl BackendClient {
    /// A client for the backends of `config`.
    pub fn new(config: &ProxyConfig) -> BackendClient {
        BackendClient {
            idle: Mutex::new(config.backends.iter().map(|_| Vec::new()).collect()),
            connect_timeout: Duration::from_millis(config.limits.connect_timeout_ms),
        }
    }

    /// Send `req` (origin-form URI; without a `Host` header it gets the backend's
    /// address) to `backend` on an idle connection, or a new one when none is idle or the
    /// idle one turns out closed before the request left. The connection stays leased to
    /// the returned response until its body ends.
    pub async fn send(
        self: &Arc<Self>,
        backend: &Backend,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        if !req.headers().contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(&backend.address)
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        while let Some(mut conn) = self.checkout(backend.index) {
            // Given back as its last response ended; its connection task may not have
            // marked it ready yet. One that is closing fails here and is dropped.
            if !conn.sender.is_ready()
                && !matches!(
                    tokio::time::timeout(READY_WAIT, conn.sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(backend.index, conn))),
                Err(mut e) => match e.take_message() {
                    // Closed before anything was sent: try the next one.
                    Some(back) => req = back,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        // Boxed: opening a connection is rare once the pool is warm, and its state would
        // otherwise be part of every request's future.
        let mut conn = Box::pin(self.connect(backend)).await?;
        match conn.sender.send_request(req).await {
            Ok(resp) => Ok((resp, self.lease(backend.index, conn))),
            Err(e) => Err(SendError::Http(e)),
        }
    }

    fn lease(self: &Arc<Self>, backend: usize, conn: Conn) -> Lease {
        Lease {
            client: Arc::clone(self),
            backend,
            conn: Some(conn),
        }
    }

    /// The most recently used idle connection, dropping closed and stale ones.
    fn checkout(&self, backend: usize) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(backend)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            if !entry.conn.sender.is_closed() && now.duration_since(entry.since) < IDLE_TIMEOUT {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(&self, backend: &Backend) -> Result<Conn, SendError> {
        let stream = open(&backend.address, self.connect_timeout)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }

    #[cfg(test)]
    fn idle_count(&self, backend: usize) -> usize {
        self.idle.lock().get(backend).map_or(0, Vec::len)
    }
}

/// A TCP connection to `address` (no Nagle delay) within `timeout`.
///
/// Errors: refused, unreachable, or `TimedOut` after `timeout`.
pub async fn open(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        )),
    }
}

/// A backend connection of the fast path, with what was read from it and not yet used.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the backend; empty whenever the connection is idle in the pool.
    pub buf: BytesMut,
    since: Instant,
}

impl RawConn {
    /// A fresh connection.
    pub fn new(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: BytesMut::with_capacity(RAW_BUFFER),
            since: Instant::now(),
        }
    }
}

/// What a fast-path backend connection reads at a time.
pub const RAW_BUFFER: usize = 16 * 1024;

/// One worker's idle fast-path connections to the backends.
pub struct RawPool {
    /// Idle connections by backend index, the most recently used last.
    idle: Mutex<Vec<Vec<RawConn>>>,
}

impl RawPool {
    /// An empty pool for the backends of `config`.
    pub fn new(config: &ProxyConfig) -> RawPool {
        RawPool {
            idle: Mutex::new(config.backends.iter().map(|_| Vec::new()).collect()),
        }
    }

    /// The most recently used idle connection to `backend` that is still open, dropping
    /// stale ones and those the backend closed (or wrote to unasked) while idle.
    pub fn checkout(&self, backend: usize) -> Option<RawConn> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(backend)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.since) >= IDLE_TIMEOUT {
                continue;
            }
            // Costs no system call unless the reactor saw the socket become readable,
            // which an idle keep-alive connection only does when it is closed.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
        None
    }

    /// Give `conn` back after a complete exchange (its buffer must be empty).
    pub fn give_back(&self, backend: usize, mut conn: RawConn) {
        if !conn.buf.is_empty() {
            return;
        }
        conn.since = Instant::now();
        let mut idle = self.idle.lock();
        if let Some(list) = idle.get_mut(backend)
            && list.len() < MAX_IDLE
        {
            list.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;

    use super::*;
    use crate::balancer::Pool;
    use crate::config::{BackendConfig, Policy};

    /// A backend on loopback that counts the connections it accepts; `/close` answers
    /// with `Connection: close`, `/big` with 1 MiB.
    async fn backend() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let body = if path == "/big" {
                        Bytes::from(vec![b'x'; 1 << 20])
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    let mut resp = Response::new(Full::new(body));
                    if path == "/close" {
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, "close".parse().expect("value"));
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (address, accepted)
    }

    /// A pool of the one backend at `address`, and a client for it.
    fn one_backend(address: &str) -> (Pool, Arc<BackendClient>) {
        let config = ProxyConfig {
            backends: vec![BackendConfig {
                address: address.to_string(),
                weight: 1,
            }],
            ..ProxyConfig::default()
        };
        let pool = Pool::new(&config.backends, Policy::RoundRobin);
        (pool, Arc::new(BackendClient::new(&config)))
    }

    /// `GET /` through `client`, read to its end: `ok`. The connection goes back to the pool.
    async fn get_ok(client: &Arc<BackendClient>, target: &Backend) {
        let (resp, _lease) = client.send(target, get("/")).await.expect("sent");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .body(crate::forward::empty_body())
            .expect("request")
    }

    #[tokio::test]
    async fn connections_are_reused_and_closed_ones_replaced() {
        let (address, accepted) = backend().await;
        let (pool, client) = one_backend(&address);
        let target = &pool.backends()[0];

        // Three requests in a row, each body read to its end: one connection.
        for _ in 0..3 {
            get_ok(&client, target).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.idle_count(0), 1);

        // The backend closes after this answer: the next request opens a new connection.
        let (resp, lease) = client.send(target, get("/close")).await.expect("sent");
        resp.into_body().collect().await.expect("body");
        drop(lease);
        get_ok(&client, target).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // A body dropped half-way leaves its connection unusable: it is not handed out again.
        let (resp, lease) = client.send(target, get("/big")).await.expect("sent");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(body);
        drop(lease);
        get_ok(&client, target).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let (pool, client) = one_backend(&address);
        let err = client
            .send(&pool.backends()[0], get("/"))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, SendError::Connect(_)), "{err}");
    }
}
