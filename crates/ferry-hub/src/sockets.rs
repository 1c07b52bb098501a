//! Every accepted TCP socket, whatever it carries (an HTTP request, an SSE stream, a
//! WebSocket after its upgrade): counted, capped, and watched for writes that stall.
//!
//! One rule for every connection: a socket whose pending write makes no progress for
//! `limits.write_timeout_ms` is closed. The check needs no timer per connection: each
//! socket is a [`TrackedStream`] that notes when a write first returned `Pending` and
//! clears it when bytes move; one sweeper task per server walks the registry a few times
//! per timeout and kills what stalled. Killing sets a flag and wakes the tasks that wait on
//! the socket, whose next read or write then fails, so the owner (hyper, the WebSocket
//! session) ends the connection through its ordinary error path and frees everything.
//!
//! Silent sockets, headers dribbled a byte at a time and idle keep-alive connections are
//! hyper's header read timeout (`limits.header_timeout_ms`), which runs whenever a
//! connection waits for a request head.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::sharded::Sharded;

/// Milliseconds since the first call, never 0 (0 means "not blocked").
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    (base.elapsed().as_millis() as u64).saturating_add(1)
}

/// What the sweeper knows of one socket.
#[derive(Debug, Default)]
struct SocketState {
    /// When a write first returned `Pending` without progress since (`now_ms`), or 0.
    blocked_since: AtomicU64,
    /// Bytes read from and written to the socket (only its own task adds to them, so the
    /// counters live on the socket, not in one contended global).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl SocketState {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

fn stalled_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "write stalled: the peer stopped reading",
    )
}

/// The registry of open sockets of one server.
pub struct Sockets {
    map: Sharded<HashMap<u64, Arc<SocketState>>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    stalled: AtomicU64,
    /// Bytes of sockets already closed (the open ones count on their own state).
    closed_in: AtomicU64,
    closed_out: AtomicU64,
}

impl Sockets {
    /// An empty registry.
    pub fn new() -> Arc<Sockets> {
        Arc::new(Sockets {
            map: Sharded::new(64),
            next_id: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            stalled: AtomicU64::new(0),
            closed_in: AtomicU64::new(0),
            closed_out: AtomicU64::new(0),
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sockets closed since start because a write stalled.
    pub fn stalled(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Bytes read and written on every socket since start, TCP payload (headers and frames
    /// of every transport included): `(in, out)`.
    pub fn bytes(&self) -> (u64, u64) {
        let mut bytes_in = self.closed_in.load(Ordering::Relaxed);
        let mut bytes_out = self.closed_out.load(Ordering::Relaxed);
        for shard in self.map.iter() {
            for state in shard.lock().values() {
                bytes_in += state.bytes_in.load(Ordering::Relaxed);
                bytes_out += state.bytes_out.load(Ordering::Relaxed);
            }
        }
        (bytes_in, bytes_out)
    }

    /// Register an accepted socket; it leaves the registry when the stream is dropped.
    pub fn track(self: &Arc<Self>, tcp: TcpStream) -> TrackedStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(SocketState::default());
        self.map.shard(&id).lock().insert(id, state.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        TrackedStream {
            inner: tcp,
            state,
            id,
            sockets: self.clone(),
        }
    }

    /// Kill every socket whose pending write made no progress for `timeout`; returns how
    /// many.
    pub fn sweep(&self, timeout: Duration) -> usize {
        let now = now_ms();
        let limit = timeout.as_millis() as u64;
        let mut killed = 0;
        for shard in self.map.iter() {
            for state in shard.lock().values() {
                let since = state.blocked_since.load(Ordering::Relaxed);
                if since != 0 && now.saturating_sub(since) >= limit && !state.killed() {
                    state.kill();
                    killed += 1;
                }
            }
        }
        if killed > 0 {
            self.stalled.fetch_add(killed as u64, Ordering::Relaxed);
            tracing::info!(
                count = killed,
                timeout_ms = limit,
                "closed connections whose writes stalled (peers stopped reading)"
            );
        }
        killed
    }

    /// Sweep every `timeout / 4` until `stop` is cancelled.
    pub async fn run_sweeper(
        self: Arc<Self>,
        timeout: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let every = (timeout / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.sweep(timeout); }
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// A TCP stream that reports write progress to its [`Sockets`] registry and fails every
/// read and write once the sweeper killed it.
pub struct TrackedStream {
    inner: TcpStream,
    state: Arc<SocketState>,
    id: u64,
    sockets: Arc<Sockets>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Counted as closed before leaving the map, so a concurrent `bytes` may count this
        // socket twice for an instant but never drops its bytes.
        let sockets = &self.sockets;
        sockets.closed_in.fetch_add(
            self.state.bytes_in.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        sockets.closed_out.fetch_add(
            self.state.bytes_out.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        sockets.map.shard(&self.id).lock().remove(&self.id);
        sockets.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TrackedStream {
    /// Look at the first bytes without taking them (to tell TLS from plain HTTP).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.killed() {
            return Err(stalled_error());
        }
        self.inner.peek(buf).await
    }

    /// A write on a killed socket fails at once; otherwise `write` runs on the stream.
    fn fail_if_killed(
        &mut self,
        write: impl FnOnce(&mut TcpStream) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.state.killed() {
            return Poll::Ready(Err(stalled_error()));
        }
        write(&mut self.inner)
    }

    fn after_write(
        &self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.state.blocked_since.store(0, Ordering::Relaxed);
                    self.state.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if self.state.blocked_since.load(Ordering::Relaxed) == 0 {
                    self.state.blocked_since.store(now_ms(), Ordering::Relaxed);
                }
                self.state.write_waker.register(cx.waker());
                // A kill between the write attempt and the registration woke nobody.
                if self.state.killed() {
                    return Poll::Ready(Err(stalled_error()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.killed() {
            return Poll::Ready(Err(stalled_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                self.state.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.state.read_waker.register(cx.waker());
                if self.state.killed() {
                    return Poll::Ready(Err(stalled_error()));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = self.fail_if_killed(|inner| Pin::new(inner).poll_write(cx, buf));
        self.after_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = self.fail_if_killed(|inner| Pin::new(inner).poll_write_vectored(cx, bufs));
        self.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_that_stalls_is_killed_and_a_slow_one_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sockets = Sockets::new();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut peer = client.expect("connect");
        let mut stream = sockets.track(accepted.expect("accept").0);
        assert_eq!(sockets.open(), 1);

        // The peer never reads: the kernel buffers fill and the write parks.
        let chunk = vec![7u8; 1 << 20];
        let writer = tokio::spawn(async move {
            loop {
                if let Err(e) = stream.write_all(&chunk).await {
                    return e;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let timeout = Duration::from_millis(200);
        while sockets.sweep(timeout) == 0 {
            assert!(
                Instant::now() < deadline,
                "the stalled write was never killed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let error = writer.await.expect("join");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(sockets.open(), 0, "the dropped stream left the registry");
        assert_eq!(sockets.stalled(), 1);
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink).await;
    }
}
