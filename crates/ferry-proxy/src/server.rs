//! Accepting clients, the admin listener, and graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::forward::{self, Shared};
use crate::{health, metrics};

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Bind the listen (and admin) addresses of `config`.
    ///
    /// Errors: the configuration is unusable or an address cannot be bound.
    pub async fn bind(config: ProxyConfig) -> std::io::Result<Proxy> {
        config
            .check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind(config.listen).await?;
        let admin = match config.admin_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        Ok(Proxy {
            listener,
            admin,
            shared: Arc::new(Shared::new(config)),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin address (`/metrics`, `/status`), when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The shared state (backends and their counters).
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Serve until `shutdown` completes, then stop accepting and give in-flight requests
    /// `limits.drain_timeout_ms` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        health::spawn_checks(&self.shared, &stop);
        if let Some(admin) = self.admin {
            let (shared, stop) = (Arc::clone(&self.shared), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve_admin(admin, shared) => {}
                }
            });
        }
        let limits = &self.shared.config.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
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
            let shared = Arc::clone(&self.shared);
            let service = service_fn(move |req| forward::handle(Arc::clone(&shared), req, peer));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(self.listener);
        tracing::info!("draining in-flight requests");
        let drain = Duration::from_millis(self.shared.config.limits.drain_timeout_ms);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed; closing the remaining connections");
        }
        stop.cancel();
        Ok(())
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
