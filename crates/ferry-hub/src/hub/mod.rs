//! The hub core: channels, subscriptions, publication fan-out, presence and the
//! connection registry. Transport-agnostic: WebSocket, SSE and the HTTP API all call in
//! here, and nothing in here knows about sockets or encodings.
//!
//! `mod.rs`: the `Hub` handle, its construction and the channel API (subscribe with
//! recovery, history, presence); `fanout.rs`: publish, the per-stripe order and delivery
//! to local queues; `registry.rs`: connections by id, user and client, direct sends,
//! disconnects, stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::HistoryOp;

use ferry_proto::envelope::ClientInfo;
use ferry_proto::{Data, ErrorCode};
use parking_lot::RwLock;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Capability, Identity};
use crate::broker::{Broker, BrokerMessage, DeliverySink, MemoryBroker};
use crate::channel::ChannelName;
use crate::config::HistoryBackend;
use crate::config::{Config, NamespaceConfig};
use crate::conn::ConnHandle;
use crate::error::{HubError, HubResult, SetupError};
use crate::presence::{MemoryPresence, PresenceStore};
use crate::publication::{Publication, StreamPosition};
use crate::sharded::Sharded;
use crate::store::{HistoryPage, HistoryQuery, HistoryStore, MemoryStore, Retention, SqliteStore};

mod fanout;
pub use fanout::Publishing;
mod registry;

use fanout::{ORDER_STRIPES, Stripe};

/// The most publications one history read or recovery returns.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// An odd constant and its inverse modulo 2^64, for [`Hub::client_id`].
const CLIENT_ID_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
const CLIENT_ID_INVERSE: u64 = 0xF1DE_83E1_9937_733D;

#[derive(Default)]
struct Channel {
    subscribers: RwLock<HashMap<u64, Subscriber>>,
}

/// A connection subscribed to a channel, and the offset its subscribe read history up to:
/// only later publications reach it live. With a broker that delivers from another
/// process (Redis), a publication read from history may still be on its way; this is what
/// keeps it from arriving twice.
struct Subscriber {
    conn: Arc<ConnHandle>,
    after: u64,
}

/// What a client asked to recover on subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The last offset the client saw.
    pub offset: u64,
    /// The epoch it belongs to.
    pub epoch: String,
}

/// The outcome of a subscribe.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The channel's position at subscribe time.
    pub position: StreamPosition,
    /// With recovery: whether every missed publication is in `publications`.
    pub recovered: Option<bool>,
    /// Missed publications, oldest first (with recovery).
    pub publications: Vec<Arc<Publication>>,
}

/// Counters exposed at `/api/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Open connections (WebSocket and SSE).
    pub connections: usize,
    /// Channels with at least one local subscriber.
    pub channels: usize,
    /// Subscriptions over all connections.
    pub subscriptions: usize,
    /// Publications accepted since start.
    pub publications: u64,
    /// Frames queued to subscribers since start.
    pub deliveries: u64,
    /// Connections closed because their send queue overflowed (each counted once).
    pub slow_consumers: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// A cheaply cloneable handle on the hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: Arc<Config>,
    auth: Authenticator,
    channels: Sharded<HashMap<Arc<str>, Arc<Channel>>>,
    connections: Sharded<HashMap<u64, Arc<ConnHandle>>>,
    users: Sharded<HashMap<Arc<str>, Vec<u64>>>,
    /// Key of the bijection between numeric connection ids and client ids.
    client_key: u64,
    order: Box<[tokio::sync::Mutex<Stripe>]>,
    store: Arc<dyn HistoryStore>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
    next_id: AtomicU64,
    connection_count: AtomicUsize,
    publications: AtomicU64,
    deliveries: AtomicU64,
    slow_consumers: AtomicU64,
    metrics: crate::metrics::Metrics,
    started: Instant,
    shutdown: CancellationToken,
}

/// How many of `publications`, from the first, fit in `budget` bytes (at least one).
pub(crate) fn fit_in_budget(publications: &[Arc<Publication>], budget: usize) -> usize {
    let mut used = 0usize;
    for (i, p) in publications.iter().enumerate() {
        used = used.saturating_add(p.encoded_size());
        if used > budget && i > 0 {
            return i;
        }
    }
    publications.len()
}

/// `INVALID_MESSAGE` when publication `data` nests deeper than `limits.max_data_depth`.
fn check_data_depth(data: &Data, max: usize) -> HubResult<()> {
    if data.depth(max) > max {
        return Err(HubError::new(
            ErrorCode::InvalidMessage,
            format!("`data` nests arrays and objects more than {max} deep (limits.max_data_depth)"),
        ));
    }
    Ok(())
}

impl Hub {
    /// A hub with the embedded defaults: the history `config.history` names (SQLite in
    /// the data dir unless configured otherwise), memory broker, memory presence.
    pub fn new(config: Arc<Config>) -> Result<Hub, SetupError> {
        let broker = config.broker.trim();
        if broker.starts_with("redis://") || broker.starts_with("rediss://") {
            return Self::with_redis(config.clone(), broker);
        }
        if broker != "memory" {
            return Err(SetupError::Config(format!(
                "broker = {broker:?} is not a broker: use \"memory\" or a Redis URL such as \"redis://127.0.0.1:6379\""
            )));
        }
        let store: Arc<dyn HistoryStore> = match config.history {
            HistoryBackend::Sqlite => Arc::new(SqliteStore::open(
                &config.data_dir,
                config.history_durability,
            )?),
            HistoryBackend::Memory => Arc::new(MemoryStore::new()),
        };
        Hub::with_backends(
            config,
            store,
            Arc::new(MemoryBroker::new()),
            Arc::new(MemoryPresence::default()),
        )
    }

    #[cfg(feature = "redis")]
    fn with_redis(config: Arc<Config>, url: &str) -> Result<Hub, SetupError> {
        let engine = Arc::new(crate::redis_engine::RedisEngine::new(url, &config.redis)?);
        let hub = Hub::with_backends(config, engine.clone(), engine.clone(), engine.clone())?;
        crate::redis_engine::start(&engine);
        Ok(hub)
    }

    #[cfg(not(feature = "redis"))]
    fn with_redis(_config: Arc<Config>, url: &str) -> Result<Hub, SetupError> {
        Err(SetupError::Config(format!(
            "broker {}: this build of ferry has no Redis support (feature `redis`)",
            crate::config::redact_credentials(url)
        )))
    }

    /// Whether the broker can take messages (`/ready`).
    pub fn broker_ready(&self) -> bool {
        self.inner.broker.is_ready()
    }

    /// A hub with the given store, broker and presence implementations.
    pub fn with_backends(
        config: Arc<Config>,
        store: Arc<dyn HistoryStore>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
    ) -> Result<Hub, SetupError> {
        let auth = Authenticator::from_config(&config)?;
        let inner = Arc::new(HubInner {
            config,
            auth,
            channels: Sharded::new(64),
            connections: Sharded::new(64),
            users: Sharded::new(64),
            client_key: rand::random(),
            order: (0..ORDER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(Stripe::default()))
                .collect(),
            store,
            broker,
            presence,
            next_id: AtomicU64::new(1),
            connection_count: AtomicUsize::new(0),
            publications: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            metrics: crate::metrics::Metrics::default(),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
        });
        let sink: Arc<dyn DeliverySink> = inner.clone();
        inner.broker.attach(Arc::downgrade(&sink));
        Ok(Hub { inner })
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Counters and latency histograms (`/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// A connection of `transport` opened (`ferry_connections`); the transport pairs it with
    /// [`Hub::connection_closed`] where its session ends (WebSocket: `Session`'s `Drop`;
    /// SSE: the stream's cleanup).
    pub(crate) fn connection_opened(&self, transport: crate::metrics::Transport) {
        self.inner
            .metrics
            .connections(transport)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`Hub::connection_opened`] closed.
    pub(crate) fn connection_closed(&self, transport: crate::metrics::Transport) {
        self.inner
            .metrics
            .connections(transport)
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Every metric now, the sockets' figures given by the server (`open`, `stalled`,
    /// bytes in and out).
    pub fn metrics_snapshot(
        &self,
        sockets: &crate::sockets::Sockets,
    ) -> crate::metrics::MetricsSnapshot {
        let stats = self.stats();
        let (bytes_in, bytes_out) = sockets.bytes();
        self.inner.metrics.snapshot(crate::metrics::External {
            uptime_secs: stats.uptime_secs,
            sockets: sockets.open(),
            channels: stats.channels,
            subscriptions: stats.subscriptions,
            publications: stats.publications,
            deliveries: stats.deliveries,
            queue_full: stats.slow_consumers,
            write_stalled: sockets.stalled(),
            bytes_in,
            bytes_out,
        })
    }

    /// The token verifier.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Begin shutdown: every connection is told to drain its queue and close with 1001.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Check that `identity` holds `cap` on `channel`. `UNKNOWN_CHANNEL` when the name is
    /// malformed or its namespace is not configured, `PERMISSION_DENIED` otherwise.
    pub fn authorize(&self, identity: &Identity, cap: Capability, channel: &str) -> HubResult<()> {
        let (name, ns) = self.resolve(channel)?;
        if identity.allows(cap, &name, ns) {
            Ok(())
        } else {
            let what = match cap {
                Capability::Subscribe => "subscribe",
                Capability::Publish => "publish",
                Capability::History => "history",
                Capability::Presence => "presence",
            };
            if identity.is_anonymous() && !ns.allow_anonymous {
                let section = match name.namespace {
                    Some(ns) => format!("[namespaces.{ns}]"),
                    None => "[default_namespace]".to_string(),
                };
                return Err(HubError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "anonymous connections may not {what} on `{channel}`: connect with a token (`ferry token --user NAME` mints one), or set allow_anonymous = true in {section} of ferry.toml (the top-level allow_anonymous only lets them connect)"
                    ),
                ));
            }
            Err(HubError::permission_denied(what, channel))
        }
    }

    /// Parse a channel name and find its namespace options.
    pub fn resolve<'a>(
        &'a self,
        channel: &'a str,
    ) -> HubResult<(ChannelName<'a>, &'a NamespaceConfig)> {
        let name = ChannelName::parse(channel)?;
        let ns = self.inner.config.namespace(name.namespace).ok_or_else(|| {
            HubError::new(
                ErrorCode::UnknownChannel,
                format!(
                    "namespace `{}` is not configured; add [namespaces.{}] to ferry.toml",
                    name.namespace.unwrap_or_default(),
                    name.namespace.unwrap_or_default()
                ),
            )
        })?;
        Ok((name, ns))
    }

    fn retention(ns: &NamespaceConfig) -> Retention {
        Retention {
            size: ns.history_size,
            ttl: (ns.history_ttl_secs > 0).then(|| Duration::from_secs(ns.history_ttl_secs)),
        }
    }

    fn order_lock(&self, channel: &str) -> &tokio::sync::Mutex<Stripe> {
        self.inner.order_lock(channel)
    }

    /// Subscribe a connection. With `recover`, the reply carries the publications the
    /// client missed, and live delivery starts right after them: no gap, no duplicate.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        channel: &str,
        recover: Option<RecoveryRequest>,
    ) -> HubResult<Subscribed> {
        let (_, ns) = self.resolve(channel)?;
        {
            let subs = conn.subscriptions.lock();
            if subs.iter().any(|c| &**c == channel) {
                return Err(HubError::new(
                    ErrorCode::AlreadySubscribed,
                    format!("already subscribed to `{channel}`"),
                ));
            }
            let max = self.inner.config.limits.max_subscriptions_per_connection;
            if subs.len() >= max {
                return Err(HubError::new(
                    ErrorCode::SubscriptionLimit,
                    format!(
                        "at most {max} subscriptions per connection; unsubscribe from one first"
                    ),
                ));
            }
        }
        let retention = Self::retention(ns);
        let name: Arc<str> = channel.into();
        // Registration and the history read happen under the channel's order lock, so no
        // publication can fall between "read from history" and "delivered live".
        let result = {
            let stripe = self.order_lock(channel).lock().await;
            // Publications staged before this point fan out first; none can be staged
            // until the lock is released. So history read below and live delivery meet
            // exactly at the channel's position.
            stripe.settle().await;
            // A broker that delivers from elsewhere (Redis) listens to the channel before
            // history is read, so nothing published after the read can be missed.
            let first_here = !self
                .inner
                .channels
                .shard(channel)
                .lock()
                .contains_key(channel);
            if first_here {
                self.inner.broker.subscribe(channel).await?;
            }
            let result = match self.recover(channel, recover, retention).await {
                Ok(r) => r,
                Err(e) => {
                    if first_here {
                        let _ = self.inner.broker.unsubscribe(channel).await;
                    }
                    return Err(e);
                }
            };
            {
                let mut shard = self.inner.channels.shard(channel).lock();
                let entry = shard.entry(name.clone()).or_default();
                entry.subscribers.write().insert(
                    conn.id,
                    Subscriber {
                        conn: conn.clone(),
                        after: result.position.offset,
                    },
                );
            }
            conn.subscriptions.lock().push(name.clone());
            result
        };
        if ns.presence
            && let Err(e) = self.inner.presence.join(channel, conn.info()).await
        {
            // Not subscribed after all: the caller is told, and nothing stays behind.
            self.leave(conn, channel).await;
            return Err(e);
        }
        if ns.join_leave {
            self.inner
                .broker
                .publish(BrokerMessage::Join {
                    channel: name,
                    info: conn.info(),
                })
                .await?;
        }
        Ok(result)
    }

    async fn recover(
        &self,
        channel: &str,
        recover: Option<RecoveryRequest>,
        retention: Retention,
    ) -> HubResult<Subscribed> {
        let store = &self.inner.store;
        let Some(request) = recover else {
            return Ok(Subscribed {
                position: store.position(channel).await?,
                recovered: None,
                publications: Vec::new(),
            });
        };
        let query = HistoryQuery {
            since: Some(request.offset),
            limit: MAX_HISTORY_PAGE,
            reverse: false,
        };
        let page = self.read_history(channel, query, retention).await?;
        let same_epoch = page.position.epoch == request.epoch;
        let contiguous = match page.publications.first() {
            Some(first) => first.offset() == request.offset + 1,
            None => request.offset == page.position.offset,
        };
        let recovered = same_epoch && contiguous && !page.has_more;
        Ok(Subscribed {
            position: page.position,
            recovered: Some(recovered),
            publications: if same_epoch {
                page.publications
            } else {
                Vec::new()
            },
        })
    }

    fn leave_local(&self, conn: &ConnHandle, channel: &str) -> bool {
        conn.subscriptions.lock().retain(|c| &**c != channel);
        let mut shard = self.inner.channels.shard(channel).lock();
        let Some(entry) = shard.get(channel) else {
            return false;
        };
        let (removed, empty) = {
            let mut subs = entry.subscribers.write();
            (subs.remove(&conn.id).is_some(), subs.is_empty())
        };
        if empty {
            shard.remove(channel);
        }
        removed
    }

    async fn leave(&self, conn: &ConnHandle, channel: &str) {
        if !self.leave_local(conn, channel) {
            return;
        }
        {
            // The last local subscriber gone: stop listening, unless a subscribe came back
            // meanwhile (it takes the same lock to start listening).
            if self.inner.broker.listens_per_channel() {
                let _order = self.order_lock(channel).lock().await;
                let empty = !self
                    .inner
                    .channels
                    .shard(channel)
                    .lock()
                    .contains_key(channel);
                if empty && let Err(e) = self.inner.broker.unsubscribe(channel).await {
                    tracing::warn!(channel, error = %e, "broker unsubscribe failed");
                }
            }
        }
        let Ok((_, ns)) = self.resolve(channel) else {
            return;
        };
        if ns.presence
            && let Err(e) = self.inner.presence.leave(channel, &conn.client_id).await
        {
            tracing::warn!(channel, error = %e, "presence leave failed");
        }
        if ns.join_leave {
            let message = BrokerMessage::Leave {
                channel: channel.into(),
                info: conn.info(),
            };
            if let Err(e) = self.inner.broker.publish(message).await {
                tracing::warn!(channel, error = %e, "leave broadcast failed");
            }
        }
    }

    /// Unsubscribe a connection from a channel.
    pub async fn unsubscribe(&self, conn: &ConnHandle, channel: &str) -> HubResult<()> {
        if !conn.subscriptions.lock().iter().any(|c| &**c == channel) {
            return Err(HubError::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to `{channel}`"),
            ));
        }
        self.leave(conn, channel).await;
        Ok(())
    }

    /// Check publication `data` against the payload limits (nesting depth:
    /// `limits.max_data_depth`); `INVALID_MESSAGE` when it breaks one. [`Hub::publish`]
    /// checks every publication; callers publishing one `data` many times check it once.
    pub fn check_data(&self, data: &Data) -> HubResult<()> {
        check_data_depth(data, self.config().limits.max_data_depth)
    }

    /// Read a channel's history. A page also stops at `limits.max_reply_size` bytes of
    /// publications (always holding at least one), with `has_more` set, so one page is
    /// never larger than a reply may be.
    pub async fn history(&self, channel: &str, query: HistoryQuery) -> HubResult<HistoryPage> {
        let (_, ns) = self.resolve(channel)?;
        let query = HistoryQuery {
            limit: query.limit.min(MAX_HISTORY_PAGE),
            ..query
        };
        let mut page = self
            .read_history(channel, query, Self::retention(ns))
            .await?;
        let budget = self.inner.config.limits.reply_budget();
        let fits = fit_in_budget(&page.publications, budget);
        if fits < page.publications.len() {
            page.publications.truncate(fits);
            page.has_more = true;
        }
        Ok(page)
    }

    /// A page of history, timed for `ferry_history_operation_seconds`.
    async fn read_history(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage> {
        let started = Instant::now();
        let page = self.inner.store.read(channel, query, retention).await;
        self.inner
            .metrics
            .history(HistoryOp::Read, started.elapsed(), page.is_ok());
        page
    }

    /// Housekeeping, about once a second: history past its retention is dropped and its
    /// memory given back.
    pub async fn maintain(&self) {
        self.inner.store.maintain().await;
    }

    /// Who is in a channel. `PERMISSION_DENIED`-free: callers check capabilities first.
    pub async fn presence(&self, channel: &str) -> HubResult<HashMap<String, ClientInfo>> {
        let (_, ns) = self.resolve(channel)?;
        if !ns.presence {
            return Err(HubError::new(
                ErrorCode::PermissionDenied,
                format!("presence is off for `{channel}`; set presence = true in its namespace"),
            ));
        }
        self.inner.presence.get(channel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_ids_look_random_and_lead_back_to_their_connection() {
        let hub = Hub::new(Arc::new(Config::default())).expect("hub");
        let (a, _ra) = hub.connect("alice");
        let (b, _rb) = hub.connect("bob");
        assert_ne!(a.client_id, b.client_id);
        assert_eq!(a.client_id.len(), 16);
        let found = hub.find_connections(None, Some(&b.client_id));
        assert_eq!(found.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b.id]);
        for unknown in ["", "zz", "0123456789abcdef", "0123456789abcdef0"] {
            assert!(
                hub.find_connections(None, Some(unknown)).is_empty(),
                "{unknown}"
            );
        }
        hub.disconnect(&b).await;
        assert!(hub.find_connections(None, Some(&b.client_id)).is_empty());
    }

    #[test]
    fn setup_failures_are_typed_and_keep_their_source() {
        let bad_broker = Config {
            broker: "nats://127.0.0.1:4222".into(),
            history: HistoryBackend::Memory,
            ..Config::default()
        };
        match Hub::new(Arc::new(bad_broker)) {
            Err(SetupError::Config(m)) => assert!(m.contains("is not a broker"), "{m}"),
            other => panic!("expected a configuration error, got {:?}", other.err()),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-key.pem");
        let bad_key = Config {
            jwt_public_keys: vec![missing.clone()],
            history: HistoryBackend::Memory,
            ..Config::default()
        };
        match Hub::new(Arc::new(bad_key)) {
            Err(e @ SetupError::File { action: "read", .. }) => {
                assert!(e.to_string().contains(&missing.display().to_string()));
                let source = std::error::Error::source(&e).expect("the OS error");
                assert!(source.to_string().contains("No such file"), "{source}");
            }
            other => panic!("expected a file error, got {:?}", other.err()),
        }
    }
}
