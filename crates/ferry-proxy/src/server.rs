//! Accepting clients, the admin listener, and graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_hub::tls::Tls;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::forward::{self, Shared, Worker};
use crate::{h1, health, metrics};

/// A bound proxy, ready to [`run`](Proxy::run).
///
/// It serves on `workers` threads, each with a single-threaded runtime, a listening socket
/// of its own (`SO_REUSEPORT`: the kernel spreads new connections) and its own pool of
/// backend connections. A request, its backend call and the connection tasks of both stay
/// on one thread, as in nginx's worker processes: no cross-thread wake-ups, no contended
/// pool. Backends, policies, health and counters are shared by all workers.
pub struct Proxy {
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    tls: Option<Tls>,
}

impl Proxy {
    /// Bind the listen (and admin) addresses of `config`, one listening socket per worker
    /// (at least one).
    ///
    /// Errors: the configuration is unusable or an address cannot be bound.
    pub fn bind(config: ProxyConfig, workers: usize) -> std::io::Result<Proxy> {
        config
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        // TLS first: a certificate that does not load is a configuration error, reported
        // before anything is bound. HTTP/2 is offered through ALPN, then HTTP/1.1.
        let tls = Tls::from_options(
            &config.tls,
            // `tls.self_signed` goes into `ferry serve`'s default data directory, so that
            // the proxy and a hub started here share one pair.
            std::path::Path::new(ferry_hub::config::DEFAULT_DATA_DIR),
            config.listen,
            &[b"h2", b"http/1.1"],
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listeners = bind_shared(config.listen, workers.max(1))?;
        let admin = match config.admin_listen {
            Some(a) => {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        Ok(Proxy {
            listeners,
            admin,
            shared: Arc::new(Shared::new(config)),
            tls,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners[0].local_addr()
    }

    /// The admin address (`/metrics`, `/status`), when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// TLS termination, when configured: its certificate store (files, pin, reloads).
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// `https` with TLS termination, `http` without.
    pub fn scheme(&self) -> &'static str {
        crate::forward::scheme(self.tls.is_some())
    }

    /// The shared state (backends and their counters).
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Serve until `shutdown` completes, then stop accepting and give in-flight requests
    /// `limits.drain_timeout_ms` to finish. The first worker, the health checks and the
    /// admin listener run on the calling runtime; every other worker on a thread of its own.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        health::spawn_checks(&self.shared, &stop);
        let acceptor = self.tls.as_ref().map(|tls| {
            let every = Duration::from_millis(self.shared.config.tls.reload_interval_ms);
            tokio::spawn(Arc::clone(tls.store()).watch(every, stop.clone()));
            tls.acceptor().clone()
        });
        if let Some(admin) = self.admin {
            let (shared, stop) = (Arc::clone(&self.shared), stop.clone());
            let admin = TcpListener::from_std(admin)?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve_admin(admin, shared) => {}
                }
            });
        }
        let permits = Arc::new(Semaphore::new(self.shared.config.limits.max_connections));
        let mut listeners = self.listeners.into_iter();
        let first = listeners
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no listener"))?;
        let mut others = Vec::new();
        for (n, listener) in listeners.enumerate() {
            let (shared, permits, drain, acceptor) = (
                Arc::clone(&self.shared),
                Arc::clone(&permits),
                drain.clone(),
                acceptor.clone(),
            );
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("ferry-proxy-{}", n + 1))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|rt| {
                            rt.block_on(serve_worker(listener, shared, permits, drain, acceptor))
                        });
                    let _ = done.send(result);
                })?;
            others.push(finished);
        }
        let first = serve_worker(
            first,
            Arc::clone(&self.shared),
            permits,
            drain.clone(),
            acceptor,
        );
        tokio::pin!(first, shutdown);
        let first_result = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("draining in-flight requests");
                drain.cancel();
                first.await
            }
            // This worker cannot serve (its listener failed): stop the others too.
            ended = &mut first => {
                drain.cancel();
                ended
            }
        };
        let mut result = first_result;
        for finished in others {
            match finished.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => {
                    result = result.and(Err(std::io::Error::other("a worker thread panicked")))
                }
            }
        }
        stop.cancel();
        result
    }
}

/// `workers` listening sockets on `addr` (a port of 0 is chosen once), sharing it through
/// `SO_REUSEPORT` where the system has it, else one socket cloned.
///
/// A plain socket is bound first, so an address another process listens on is refused
/// ("address in use") instead of joining that process's group and taking part of its
/// connections.
fn bind_shared(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let probe = listen(addr, false)?;
    if workers == 1 {
        return Ok(vec![probe]);
    }
    if REUSE_PORT {
        let bound = probe.local_addr()?;
        drop(probe);
        return (0..workers).map(|_| listen(bound, true)).collect();
    }
    let mut listeners = (1..workers)
        .map(|_| probe.try_clone())
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.push(probe);
    Ok(listeners)
}

/// Whether this system lets several sockets listen on one port (`SO_REUSEPORT`).
const REUSE_PORT: bool = cfg!(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos"))
));

/// A non-blocking listening socket on `addr`, in a `SO_REUSEPORT` group when `shared`
/// (only asked for where [`REUSE_PORT`]).
fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(shared)?;
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    let _ = shared;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One worker: accept on `listener` with a connection limit shared by all workers until
/// `drain` is cancelled, then stop accepting and let in-flight requests finish. With an
/// `acceptor`, every connection is TLS: the handshake runs in the connection's own task
/// (within `limits.header_read_timeout_ms`), and plain HTTP gets a 400 that says to use
/// https, as on `ferry serve`.
async fn serve_worker(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    drain: CancellationToken,
    acceptor: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let worker = Arc::new(Worker::new(shared));
    let limits = &worker.shared.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Every connection of this worker waits on this worker's own token: each wait
    // registers with it, and a token shared by all workers would be a lock they contend
    // for on every request.
    let connections_drain = drain.child_token();
    loop {
        let permit = tokio::select! {
            _ = drain.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = drain.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            worker: Arc::clone(&worker),
            peer,
            drain: connections_drain.clone(),
            builder: Arc::clone(&builder),
            // Held for the connection's life, so that the drain waits for it.
            watcher: graceful.watcher(),
        };
        let Some(acceptor) = &acceptor else {
            tokio::spawn(async move {
                connection.serve(stream).await;
                drop(permit);
            });
            continue;
        };
        let acceptor = acceptor.clone();
        let handshake = Duration::from_millis(limits.header_read_timeout_ms);
        tokio::spawn(async move {
            if let Some(tls) = ferry_hub::tls::accept(&acceptor, stream, handshake, peer).await {
                connection.serve(tls).await;
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_millis(worker.shared.config.limits.drain_timeout_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed; closing the remaining connections");
    }
    Ok(())
}

/// One accepted client connection and what serving it needs.
struct Connection {
    worker: Arc<Worker>,
    peer: SocketAddr,
    drain: CancellationToken,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
}

impl Connection {
    /// Serve `io` on the HTTP/1.1 fast path; when a request needs more (HTTP/2, an
    /// upgrade, ...), hyper serves the rest of the connection.
    async fn serve<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            worker,
            peer,
            drain,
            builder,
            watcher,
        } = self;
        let h1::Served::HandOff(io) = h1::serve(io, &worker, peer, &drain).await else {
            return;
        };
        let service = service_fn(move |req| forward::handle(Arc::clone(&worker), req, peer));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        // Boxed: hyper's connection state would otherwise be part of every connection's
        // task, handed off or not.
        let _ = Box::pin(watcher.watch(conn)).await;
    }
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let service = service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            async move {
                let (status, kind, body) = match req.uri().path() {
                    "/metrics" => (
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        metrics::render_prometheus(&shared),
                    ),
                    "/status" => (
                        StatusCode::OK,
                        "application/json",
                        metrics::status_json(&shared).to_string(),
                    ),
                    _ => (
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "try /metrics or /status\n".to_string(),
                    ),
                };
                let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
                *r.status_mut() = status;
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port_and_a_taken_port_is_refused() {
        let listeners = bind_shared("127.0.0.1:0".parse().expect("addr"), 3).expect("binds");
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        // A second proxy on the same address must not silently join the first.
        let again = bind_shared(listeners[0].local_addr().expect("addr"), 2)
            .expect_err("the address is taken");
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    }
}
