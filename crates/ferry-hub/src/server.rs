//! Assembles the router and runs the server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use governor::{Quota, RateLimiter};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::SetupError;
use crate::hub::Hub;
use crate::limits::ConnectionLimiter;
use crate::login_pool::LoginPool;
use crate::sockets::Sockets;
use crate::tls::Tls;
use crate::transports::{AppState, api, scrape, sse, sync, testbed, tus, ws};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another server running there? Use --listen to pick another address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hub could not be set up from the configuration (a JWT key file cannot be
    /// read, the history file is in use, ...).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// TLS is configured but unusable (a missing key, an unreadable or mismatched pair).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// `limits.max_sockets`, lowered to fit the open-files limit.
    max_sockets: usize,
    /// HTTPS/WSS when `[tls]` is configured.
    tls: Option<Tls>,
    /// The plain-HTTP listener that redirects to https (`tls.redirect_from`).
    redirect: Option<TcpListener>,
}

fn cors(config: &Config) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .max_age(Duration::from_secs(600));
    if config.allowed_origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let origins: Vec<HeaderValue> = config
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.hub.shutdown_token().is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
    } else if !state.hub.broker_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "no broker: the node cannot reach Redis"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    }
}

/// The full router for a hub.
pub fn router(state: AppState) -> Router {
    let config = state.hub.config().clone();
    let mut app = Router::new()
        .route("/ws", get(ws::handler))
        .route("/sse", get(sse::handler))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(scrape::routes())
        .merge(api::routes().layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.limits.request_timeout_ms),
        )));
    if config.testbed {
        app = app.merge(testbed::routes());
    }
    // The browser SDK bundle, /sdk/ferry.js (clients/js).
    app = app.merge(crate::transports::sdk::routes());
    if let Some(dir) = &config.static_dir {
        // Symlinks that resolve outside `dir` are refused (static_files.rs).
        app = app.fallback_service(crate::static_files::confined(
            dir.clone(),
            ServeDir::new(dir).append_index_html_on_directories(true),
        ));
    }
    let upload_store = tus::open_store(&state.hub);
    let uploads = upload_store
        .clone()
        .map(|store| tus::routes(&state.hub, store, cors(&config)));
    let sync_routes = sync::routes(&state.hub, state.sync.clone(), upload_store, cors(&config));
    let hsts = config.tls.enabled().then(|| config.tls.hsts_max_age());
    let app = app
        .layer(DefaultBodyLimit::max(config.limits.max_body_size))
        .layer(CompressionLayer::new())
        .layer(cors(&config))
        // Request URIs may carry `?token=`: the span logs them redacted, without headers.
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &http::Request<axum::body::Body>| crate::redact::request_span(request),
        ))
        .with_state(state);
    // Uploads and downloads sit outside the global body limit and compression, with
    // layers of their own (see transports/tus.rs).
    let app = match uploads {
        Some(uploads) => app.merge(uploads),
        None => app,
    };
    // So do the sync routes (transports/sync.rs): PUT bodies are streamed with each
    // root's limits, downloads keep Range/ETag byte-exact.
    let app = match sync_routes {
        Some(routes) => app.merge(routes),
        None => app,
    };
    match hsts {
        Some(max_age) if max_age > 0 => {
            let value = HeaderValue::from_str(&format!("max-age={max_age}"))
                .unwrap_or(HeaderValue::from_static("max-age=31536000"));
            app.layer(axum::middleware::map_response(
                move |mut response: axum::response::Response| {
                    let value = value.clone();
                    async move {
                        response
                            .headers_mut()
                            .insert(http::header::STRICT_TRANSPORT_SECURITY, value);
                        response
                    }
                },
            ))
        }
        _ => app,
    }
}

impl Server {
    /// Build the hub and bind the listen address.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let config = Arc::new(config);
        let hub = Hub::new(config.clone())?;
        Server::bind_hub(hub).await
    }

    /// Bind a server around an existing hub.
    pub async fn bind_hub(hub: Hub) -> Result<Server, ServeError> {
        let config = hub.config().clone();
        crate::announce::check_config(&config).map_err(SetupError::Config)?;
        let listener = listen(&config).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let tls = Tls::from_config(&config)?;
        let redirect = match (&tls, config.tls.redirect_from) {
            (Some(_), Some(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            _ => None,
        };
        let max_sockets = fit_open_files(config.limits.max_sockets);
        let login_quota = Quota::per_second(NonZeroU32::MIN.saturating_add(4))
            .allow_burst(NonZeroU32::MIN.saturating_add(9));
        // Sync roots are opened (and scanned) before the server answers, so a client's
        // first manifest already reflects the disk.
        let sync = crate::sync::SyncRoots::open(&hub).await?;
        let state = AppState {
            hub,
            limiter: ConnectionLimiter::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            login_limiter: Arc::new(RateLimiter::keyed(login_quota)),
            sockets: Sockets::new(),
            logins: Arc::new(LoginPool::new(&config).map_err(SetupError::Config)?),
            sync,
        };
        Ok(Server {
            listener,
            router: router(state.clone()),
            state,
            max_sockets,
            tls,
            redirect,
        })
    }

    /// TLS, when the server serves https and wss.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The address of the plain-HTTP redirect listener (`tls.redirect_from`).
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The hub behind this server.
    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// Serve until `shutdown` resolves, then shut down gracefully: stop accepting, tell
    /// every connection to drain and close with 1001, and wait up to
    /// `limits.shutdown_grace_ms` for them.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let hub = self.state.hub.clone();
        let limiter = self.state.limiter.clone();
        // LAN announcement (SPEC L1), withdrawn as soon as shutdown starts.
        let announcer =
            crate::announce::Announcer::start(hub.config(), self.listener.local_addr()?);
        let limits = &hub.config().limits;
        let grace = Duration::from_millis(limits.shutdown_grace_ms);
        let stop = hub.clone();
        tokio::spawn(async move {
            // Either the caller's trigger (a signal) or `Hub::shutdown` stops accepting.
            let token = stop.shutdown_token().clone();
            tokio::select! {
                _ = shutdown => {}
                _ = token.cancelled() => {}
            }
            tracing::info!("shutting down: closing connections with 1001");
            stop.shutdown();
        });
        let sockets = self.state.sockets.clone();
        let sweeper_stop = CancellationToken::new();
        tokio::spawn(sockets.clone().run_sweeper(
            Duration::from_millis(limits.write_timeout_ms.max(1)),
            sweeper_stop.clone(),
        ));
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.store().clone().watch(
                Duration::from_millis(hub.config().tls.reload_interval_ms),
                sweeper_stop.clone(),
            ));
        }
        let housekeeping = hub.clone();
        let housekeeping_stop = sweeper_stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => housekeeping.maintain().await,
                    _ = housekeeping_stop.cancelled() => return,
                }
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.max(1)));
        let http = Arc::new(http);
        let connections = TaskTracker::new();
        if let Some(listener) = self.redirect {
            // The https redirect listener: the same accept loop, so the same socket limit,
            // header timeout and stalled-write reaping as the main one.
            let port = self.listener.local_addr()?.port();
            let redirect = Accept {
                listener,
                router: Router::new().fallback(move |request: Request| async move {
                    crate::tls::redirect_to_https(&request, port)
                }),
                sockets: sockets.clone(),
                max_sockets: self.max_sockets,
                http: http.clone(),
                tls: None,
                header_timeout: Duration::from_millis(limits.header_timeout_ms.max(1)),
                shutdown: hub.shutdown_token().clone(),
            };
            let tracker = connections.clone();
            tokio::spawn(async move { redirect.run(&tracker).await });
        }
        let accept = Accept {
            listener: self.listener,
            router: self.router,
            sockets,
            max_sockets: self.max_sockets,
            http,
            tls: self.tls,
            header_timeout: Duration::from_millis(limits.header_timeout_ms.max(1)),
            shutdown: hub.shutdown_token().clone(),
        };
        accept.run(&connections).await;
        connections.close();
        // Stop being found before the connections drain (mDNS goodbye).
        drop(announcer);
        let drained = async {
            limiter.drained().await;
            connections.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = limiter.open(),
                "shutdown grace elapsed with connections still open"
            );
        }
        sweeper_stop.cancel();
        Ok(())
    }
}

/// Bind the listen address with the configured backlog (and `SO_REUSEPORT` if asked).
fn listen(config: &Config) -> std::io::Result<TcpListener> {
    let socket = if config.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if config.reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(config.listen)?;
    socket.listen(config.listen_backlog.max(1))
}

/// Raise the open-files limit to its hard maximum and return how many sockets fit under
/// it, keeping room for files, the listener and the runtime.
fn fit_open_files(wanted: usize) -> usize {
    const RESERVE: u64 = 256;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fits = limit.saturating_sub(RESERVE).max(16) as usize;
    if wanted > fits {
        tracing::warn!(
            max_sockets = wanted,
            open_files_limit = limit,
            using = fits,
            "limits.max_sockets does not fit the open-files limit; raise it (ulimit -n, LimitNOFILE=) to serve more"
        );
        fits
    } else {
        wanted
    }
}

/// The accept loop: every socket counted, capped, tracked for stalled writes, and served
/// by hyper with the header read timeout.
struct Accept {
    listener: TcpListener,
    router: Router,
    sockets: Arc<Sockets>,
    max_sockets: usize,
    http: Arc<hyper::server::conn::http1::Builder>,
    tls: Option<Tls>,
    /// Also the limit for a TLS handshake.
    header_timeout: Duration,
    shutdown: CancellationToken,
}

impl Accept {
    async fn run(self, connections: &TaskTracker) {
        let mut refused_logged: Option<std::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = self.shutdown.cancelled() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) if is_per_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: say so and back off instead of
                    // spinning on a listener that fails at once.
                    tracing::error!(error = %e, open_sockets = self.sockets.open(), "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.sockets.open() >= self.max_sockets {
                drop(tcp);
                if refused_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    refused_logged = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_sockets = self.max_sockets,
                        "socket limit reached: closing new connections (limits.max_sockets)"
                    );
                }
                continue;
            }
            // TCP_NODELAY: a push is a small frame that must leave at once; with Nagle's
            // algorithm it can wait for the peer's delayed ACK (up to 40 ms on Linux).
            let _ = tcp.set_nodelay(true);
            let io = self.sockets.track(tcp);
            let service = self.router.clone();
            let http = self.http.clone();
            let shutdown = self.shutdown.clone();
            match &self.tls {
                None => {
                    connections.spawn(serve_connection(http, io, service, shutdown, addr));
                }
                Some(tls) => {
                    let acceptor = tls.acceptor().clone();
                    let timeout = self.header_timeout;
                    connections.spawn(async move {
                        if let Some(tls) = crate::tls::accept(&acceptor, io, timeout, addr).await {
                            serve_connection(http, tls, service, shutdown, addr).await;
                        }
                    });
                }
            }
        }
    }
}

/// Serve one connection's requests with hyper until it closes or the server shuts down.
async fn serve_connection<I>(
    http: Arc<hyper::server::conn::http1::Builder>,
    io: I,
    router: Router,
    shutdown: CancellationToken,
    addr: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    });
    let conn = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close; idle ones close now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A server running in a background task, from [`Server::spawn`]: for embedding the hub
/// in an application (and for tests). Dropping it without [`shutdown`](Self::shutdown)
/// also shuts the server down gracefully, without waiting.
pub struct RunningServer {
    addr: SocketAddr,
    hub: Hub,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub behind the server.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Shut down gracefully (connections drain and get 1001) and wait until the server
    /// has finished.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    /// Run the server in a background task until [`RunningServer::shutdown`].
    pub fn spawn(self) -> std::io::Result<RunningServer> {
        let addr = self.local_addr()?;
        let hub = self.hub().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
