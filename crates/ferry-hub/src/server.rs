//! Assembles the router and runs the server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use governor::{Quota, RateLimiter};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::hub::Hub;
use crate::limits::ConnectionLimiter;
use crate::transports::{AppState, api, sse, testbed, ws};

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
    /// The configuration is unusable (e.g. a JWT key file cannot be read).
    #[error("{0}")]
    Config(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    router: Router,
    state: AppState,
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
        .merge(api::routes());
    if config.testbed {
        app = app.merge(testbed::routes());
    }
    if let Some(dir) = &config.static_dir {
        app = app.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true));
    }
    app.layer(DefaultBodyLimit::max(config.limits.max_body_size))
        .layer(CompressionLayer::new())
        .layer(cors(&config))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

impl Server {
    /// Build the hub and bind the listen address.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let config = Arc::new(config);
        let hub = Hub::new(config.clone()).map_err(ServeError::Config)?;
        Server::bind_hub(hub).await
    }

    /// Bind a server around an existing hub.
    pub async fn bind_hub(hub: Hub) -> Result<Server, ServeError> {
        let config = hub.config().clone();
        crate::announce::check_config(&config).map_err(ServeError::Config)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let login_quota = Quota::per_second(NonZeroU32::MIN.saturating_add(4))
            .allow_burst(NonZeroU32::MIN.saturating_add(9));
        let state = AppState {
            hub,
            limiter: ConnectionLimiter::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            login_limiter: Arc::new(RateLimiter::keyed(login_quota)),
        };
        Ok(Server {
            listener,
            router: router(state.clone()),
            state,
        })
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
        let grace = Duration::from_millis(hub.config().limits.shutdown_grace_ms);
        let stop = hub.clone();
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        // TCP_NODELAY: a push is a small frame that must leave at once; with Nagle's
        // algorithm it can wait for the peer's delayed ACK (up to 40 ms on Linux).
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
            // Either the caller's trigger (a signal) or `Hub::shutdown` stops accepting.
            let token = stop.shutdown_token().clone();
            tokio::select! {
                _ = shutdown => {}
                _ = token.cancelled() => {}
            }
            tracing::info!("shutting down: closing connections with 1001");
            stop.shutdown();
        });
        let serve = tokio::spawn(async move { serve.await });
        hub.shutdown_token().cancelled().await;
        // Stop being found before the connections drain (mDNS goodbye).
        drop(announcer);
        let drained = async {
            limiter.drained().await;
            let _ = serve.await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = limiter.open(),
                "shutdown grace elapsed with connections still open"
            );
        }
        Ok(())
    }
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
