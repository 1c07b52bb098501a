//! Several `ferry serve` nodes as one hub over Redis (SPEC X1–X3): one object that is the
//! nodes' shared history ([`HistoryStore`]), their fan-out ([`Broker`]) and their presence
//! ([`PresenceStore`]).
//!
//! - **Offsets in order everywhere.** A publish runs one Lua script that assigns the
//!   channel's next offset, appends to its history list and PUBLISHes it, atomically; Redis
//!   delivers one channel's messages to a subscriber connection in that order, so every
//!   node sees offsets 5 then 6, whichever node published them.
//! - **One subscription per channel per node.** A node listens to `PREFIX:pub:CHANNEL`
//!   while it has a local subscriber, on one of `redis.pubsub_connections` connections
//!   chosen by the channel's hash (so one busy node is not one socket, and a channel's
//!   order is kept), and confirms the
//!   SUBSCRIBE before the hub reads history: nothing published after the read is missed,
//!   and the hub's per-subscriber `after` offset drops what the read already returned.
//! - **History** is a list of the last `history_size` entries and a hash with the offset
//!   and epoch. Redis without persistence that restarts loses both: the next use makes a
//!   new epoch, so a client that recovers is told recovery failed instead of getting a gap.
//! - **Presence** entries are leases (`redis.presence_lease_secs`) that the owning node
//!   refreshes; a node that dies leaves no ghost once its leases run out.
//! - **Losing Redis.** Commands fail fast with `INTERNAL_ERROR` ("Redis is unreachable"),
//!   never a silent loss; `/ready` is false; the pub/sub link reconnects with backoff,
//!   resubscribes, and then every local subscriber is sent to reconnect and recover,
//!   since messages may have passed meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ferry_proto::Data;
use ferry_proto::codes::ErrorCode;
use ferry_proto::envelope::ClientInfo;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::{Broker, BrokerMessage, Control, DeliverySink};
use crate::config::RedisConfig;
use crate::error::{HubError, HubResult, SetupError};
use crate::presence::PresenceStore;
use crate::publication::{Publication, StreamPosition};
use crate::store::{HistoryPage, HistoryQuery, HistoryStore, Retention, Staged};

/// Assign the next offset, append, trim, and publish, atomically.
/// KEYS: meta, hist. ARGV: epoch if new, entry tail, history size, ttl ms, topic ('' = do
/// not publish), message head.
const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local entry = '{"o":' .. offset .. ',"e":"' .. epoch .. '"' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], -size, -1)
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
else
  redis.call('DEL', KEYS[2])
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. entry .. '}')
end
return {offset, epoch}
"#;

/// The position (made on first use) and, with ARGV[2] = '1', every retained entry.
/// KEYS: meta, hist. ARGV: epoch if new, whether to read entries.
const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if ARGV[2] == '1' then
  return {offset, epoch, redis.call('LRANGE', KEYS[2], 0, -1)}
end
return {offset, epoch, {}}
"#;

/// History, fan-out and presence in Redis.
pub struct RedisEngine {
    client: redis::Client,
    commands: ConnectionManager,
    /// This node, in the messages it publishes (for `skip_self`).
    node: Arc<str>,
    prefix: Arc<str>,
    lease: Duration,
    sink: OnceLock<Weak<dyn DeliverySink>>,
    /// Channels this node listens to.
    listening: Mutex<HashSet<String>>,
    /// The pub/sub connections; a channel always uses the same one (its order is kept).
    links: Vec<Link>,
    /// This node's presence entries, refreshed every third of the lease.
    local_presence: Mutex<HashMap<(String, String), ClientInfo>>,
    append: redis::Script,
    read: redis::Script,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a publication's pub/sub message carries around its history entry.
#[derive(Deserialize)]
struct Message<'a> {
    /// Publishing node.
    n: Option<&'a str>,
    /// Its connection to skip.
    s: Option<u64>,
    /// The history entry (publications).
    m: Option<&'a RawValue>,
    /// `join` or `leave`.
    k: Option<&'a str>,
    /// Who joined or left.
    i: Option<ClientInfo>,
}

/// One pub/sub connection.
struct Link {
    /// Its command side; `None` while the link is down (the write lock is held while it is
    /// being re-established).
    sink: tokio::sync::RwLock<Option<PubSubSink>>,
    up: AtomicBool,
}

/// A message on the control topic: a forwarded request (`x`) or a question (`r`).
#[derive(Deserialize)]
struct Forwarded<'a> {
    n: &'a str,
    x: Option<Control>,
    #[serde(borrow)]
    r: Option<Ask<'a>>,
}

/// Another node asks for this node's figures, to be pushed to the list `to`.
#[derive(Deserialize)]
struct Ask<'a> {
    what: &'a str,
    to: &'a str,
}

/// One history entry. `data` is `d` (JSON) or `b` (base64 of a MessagePack value).
#[derive(Deserialize)]
struct Entry {
    o: u64,
    e: String,
    t: u64,
    d: Option<Box<RawValue>>,
    b: Option<String>,
    i: Option<ClientInfo>,
}

impl Entry {
    fn data(&mut self) -> Option<Data> {
        use base64::Engine;
        match (self.d.take(), self.b.take()) {
            (Some(json), _) => Some(Data::from(json)),
            (None, Some(packed)) => base64::engine::general_purpose::STANDARD
                .decode(packed)
                .ok()
                .and_then(|bytes| Data::from_msgpack(&bytes).ok()),
            (None, None) => None,
        }
    }
}

/// An entry's data field as JSON text: `"d":<json>` or `"b":"<base64 MessagePack>"`.
fn entry_data_field(data: &Data) -> String {
    use base64::Engine;
    match data {
        Data::Json(raw) => format!(r#""d":{}"#, raw.get()),
        Data::MsgPack(bytes) => format!(
            r#""b":"{}""#,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

#[derive(Serialize, Deserialize)]
struct Lease {
    i: ClientInfo,
    /// Expiry, unix ms.
    x: u64,
}

fn unavailable(e: impl std::fmt::Display) -> HubError {
    HubError::new(
        ErrorCode::InternalError,
        format!("Redis is unreachable ({e}); nothing was stored or sent, try again"),
    )
}

impl RedisEngine {
    /// An engine for `url` (`redis://HOST:PORT[/DB]`, `rediss://` for TLS). Connects lazily;
    /// the pub/sub link starts when the hub attaches.
    pub fn new(url: &str, config: &RedisConfig) -> Result<RedisEngine, SetupError> {
        let broker_error = |e: redis::RedisError| SetupError::Broker {
            url: crate::config::redact_credentials(url),
            source: Box::new(e),
        };
        let client = redis::Client::open(url).map_err(broker_error)?;
        let timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(broker_error)?;
        Ok(RedisEngine {
            client,
            commands,
            node: crate::store::memory::new_epoch().into(),
            prefix: config.key_prefix.as_str().into(),
            lease: Duration::from_secs(config.presence_lease_secs.max(1)),
            sink: OnceLock::new(),
            listening: Mutex::new(HashSet::new()),
            links: (0..config.pubsub_connections.clamp(1, 64))
                .map(|_| Link {
                    sink: tokio::sync::RwLock::new(None),
                    up: AtomicBool::new(false),
                })
                .collect(),
            local_presence: Mutex::new(HashMap::new()),
            append: redis::Script::new(APPEND),
            read: redis::Script::new(READ),
        })
    }

    /// This node's id in the messages it publishes.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn meta_key(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:meta", self.prefix)
    }

    fn hist_key(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:hist", self.prefix)
    }

    fn presence_key(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:presence", self.prefix)
    }

    fn topic(&self, channel: &str) -> String {
        format!("{}:pub:{channel}", self.prefix)
    }

    /// The pub/sub connection `channel` uses (the control topic uses the first).
    fn shard(&self, channel: &str) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel) as usize;
        hash % self.links.len()
    }

    /// Whether the link that carries the control topic is up.
    fn control_up(&self) -> bool {
        self.links[0].up.load(Ordering::Relaxed)
    }

    /// The topic of requests for every node (`/api/send`, `/api/disconnect`).
    fn control_topic(&self) -> String {
        format!("{}:ctl", self.prefix)
    }

    fn channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(&*self.prefix)
            .and_then(|t| t.strip_prefix(":pub:"))
    }

    /// PUBLISH `payload` on `topic`; how many pub/sub connections got it.
    async fn publish_to(&self, topic: &str, payload: &serde_json::Value) -> HubResult<usize> {
        let mut conn = self.commands.clone();
        redis::cmd("PUBLISH")
            .arg(topic)
            .arg(payload.to_string())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// PUBLISH `payload` on the control topic; how many other nodes got it (this node
    /// listens too, while the link carrying that topic is up).
    async fn to_other_nodes(&self, payload: &serde_json::Value) -> HubResult<usize> {
        let receivers = self.publish_to(&self.control_topic(), payload).await?;
        Ok(receivers.saturating_sub(usize::from(self.control_up())))
    }

    /// Run the append script; `publish` carries the skip for the pub/sub message.
    async fn run_append(
        &self,
        channel: &str,
        data: &Data,
        info: Option<&ClientInfo>,
        retention: Retention,
        publish: Option<Option<u64>>,
    ) -> HubResult<Arc<Publication>> {
        let time = crate::store::now_millis();
        let info_json = match info {
            Some(info) => serde_json::to_string(info)
                .map_err(|e| HubError::new(ErrorCode::InternalError, e.to_string()))?,
            None => "null".into(),
        };
        let tail = format!(
            r#","t":{time},{},"i":{info_json}}}"#,
            entry_data_field(data)
        );
        let ttl = retention.ttl.map_or(0, |t| t.as_millis() as u64);
        let (topic, head) = match publish {
            Some(skip) => (
                self.topic(channel),
                format!(
                    r#"{{"n":"{}","s":{},"m":"#,
                    self.node,
                    skip.map_or("null".to_string(), |s| s.to_string())
                ),
            ),
            None => (String::new(), String::new()),
        };
        let mut conn = self.commands.clone();
        let (offset, epoch): (u64, String) = self
            .append
            .key(self.meta_key(channel))
            .key(self.hist_key(channel))
            .arg(crate::store::memory::new_epoch())
            .arg(tail)
            .arg(retention.size)
            .arg(ttl)
            .arg(topic)
            .arg(head)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Publication::new(
            channel,
            offset,
            &Arc::from(epoch),
            data.clone(),
            info.cloned(),
            time,
        ))
    }

    async fn run_read(
        &self,
        channel: &str,
        entries: bool,
    ) -> HubResult<(StreamPosition, Vec<Arc<Publication>>)> {
        let mut conn = self.commands.clone();
        let (offset, epoch, items): (u64, String, Vec<String>) = self
            .read
            .key(self.meta_key(channel))
            .key(self.hist_key(channel))
            .arg(crate::store::memory::new_epoch())
            .arg(if entries { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let epoch_arc: Arc<str> = Arc::from(epoch.as_str());
        let mut publications = Vec::with_capacity(items.len());
        for item in items {
            match serde_json::from_str::<Entry>(&item) {
                Ok(mut entry) if entry.e == epoch => {
                    let Some(data) = entry.data() else {
                        tracing::warn!(
                            channel,
                            offset = entry.o,
                            "skipping a history entry without data"
                        );
                        continue;
                    };
                    publications.push(Publication::new(
                        channel, entry.o, &epoch_arc, data, entry.i, entry.t,
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(channel, error = %e, "skipping a history entry Redis holds that is not ferry's")
                }
            }
        }
        Ok((StreamPosition { offset, epoch }, publications))
    }

    /// Keep pub/sub link `index` up: connect, resubscribe its channels, read, and after a
    /// loss tell the hub that their subscribers must recover. Ends when the engine is
    /// dropped.
    async fn run_pubsub(engine: Weak<RedisEngine>, index: usize) {
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(this) = engine.upgrade() else { return };
            let connected = this.client.get_async_pubsub().await;
            match connected {
                Ok(pubsub) => {
                    let (sink, mut stream) = pubsub.split();
                    let resubscribed = {
                        let mut slot = this.links[index].sink.write().await;
                        let channels: Vec<String> = this
                            .listening
                            .lock()
                            .iter()
                            .filter(|c| this.shard(c) == index)
                            .cloned()
                            .collect();
                        let mut sink = sink;
                        let mut ok = true;
                        let control = (index == 0).then(|| this.control_topic());
                        let topics = control
                            .into_iter()
                            .chain(channels.iter().map(|c| this.topic(c)));
                        for topic in topics {
                            if let Err(e) = sink.subscribe(topic).await {
                                tracing::warn!(error = %e, "redis: resubscribing failed");
                                ok = false;
                                break;
                            }
                        }
                        if ok {
                            *slot = Some(sink);
                        }
                        ok
                    };
                    if resubscribed {
                        this.links[index].up.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                        if first {
                            tracing::info!(node = %this.node, link = index, "redis: connected");
                        } else {
                            tracing::info!(node = %this.node, link = index, "redis: reconnected");
                            if let Some(sink) = this.sink.get().and_then(Weak::upgrade) {
                                sink.broker_reconnected(&|channel| this.shard(channel) == index);
                            }
                        }
                        first = false;
                        drop(this);
                        while let Some(message) = stream.next().await {
                            let Some(this) = engine.upgrade() else { return };
                            this.on_message(&message).await;
                        }
                        let Some(this) = engine.upgrade() else { return };
                        this.links[index].up.store(false, Ordering::Relaxed);
                        *this.links[index].sink.write().await = None;
                        tracing::warn!(link = index, "redis: pub/sub link lost; reconnecting");
                    }
                }
                Err(e) => {
                    if first || backoff >= Duration::from_secs(2) {
                        tracing::warn!(error = %e, "redis: cannot connect; retrying");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn on_message(&self, message: &redis::Msg) {
        let Some(sink) = self.sink.get().and_then(Weak::upgrade) else {
            return;
        };
        if message.get_channel_name() == self.control_topic() {
            match serde_json::from_slice::<Forwarded<'_>>(message.get_payload_bytes()) {
                Ok(forwarded) if forwarded.n == &*self.node => {}
                Ok(Forwarded {
                    x: Some(control), ..
                }) => sink.control(control),
                Ok(Forwarded { r: Some(ask), .. }) => {
                    let answer =
                        serde_json::json!({"node": &*self.node, "report": sink.report(ask.what)});
                    let mut conn = self.commands.clone();
                    let sent = redis::pipe()
                        .rpush(ask.to, answer.to_string())
                        .ignore()
                        .pexpire(ask.to, 10_000)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await;
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "redis: answering another node failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "redis: a control message that is not ferry's; ignored")
                }
            }
            return;
        }
        let Some(channel) = self.channel_of(message.get_channel_name()) else {
            return;
        };
        let Ok(parsed) = serde_json::from_slice::<Message<'_>>(message.get_payload_bytes()) else {
            tracing::warn!(channel, "redis: a message that is not ferry's; ignored");
            return;
        };
        let delivered = match (parsed.m, parsed.k, parsed.i) {
            (Some(entry), _, _) => match serde_json::from_str::<Entry>(entry.get()) {
                Ok(mut entry) => {
                    let Some(data) = entry.data() else {
                        tracing::warn!(channel, "a publication message without data");
                        return;
                    };
                    let skip = if parsed.n == Some(&*self.node) {
                        parsed.s
                    } else {
                        None
                    };
                    Some(BrokerMessage::Publication {
                        publication: Publication::new(
                            channel,
                            entry.o,
                            &Arc::from(entry.e.as_str()),
                            data,
                            entry.i,
                            entry.t,
                        ),
                        skip,
                    })
                }
                Err(_) => None,
            },
            (None, Some("join"), Some(info)) => Some(BrokerMessage::Join {
                channel: channel.into(),
                info,
            }),
            (None, Some("leave"), Some(info)) => Some(BrokerMessage::Leave {
                channel: channel.into(),
                info,
            }),
            _ => None,
        };
        if let Some(delivered) = delivered {
            sink.deliver_remote(delivered).await;
        }
    }

    /// Refresh this node's presence leases every third of the lease. Ends when the
    /// engine is dropped.
    async fn run_leases(engine: Weak<RedisEngine>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(this) = engine.upgrade() else { return };
            let entries: Vec<((String, String), ClientInfo)> = this
                .local_presence
                .lock()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let expires = crate::store::now_millis() + this.lease.as_millis() as u64;
            let mut pipe = redis::pipe();
            for ((channel, client), info) in entries {
                if let Ok(lease) = serde_json::to_string(&Lease {
                    i: info,
                    x: expires,
                }) {
                    pipe.hset(this.presence_key(&channel), client, lease)
                        .ignore();
                }
            }
            let mut conn = this.commands.clone();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "redis: refreshing presence leases failed");
            }
        }
    }
}

#[async_trait]
impl HistoryStore for RedisEngine {
    async fn stage(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Staged> {
        // Stored without publishing: Redis has it when the script returns.
        let publication = self
            .run_append(channel, &data, info.as_ref(), retention, None)
            .await?;
        Ok(Staged {
            publication,
            durable: crate::store::Durable::Now,
        })
    }

    async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage> {
        let (position, publications) = self.run_read(channel, true).await?;
        let mut items: std::collections::VecDeque<Arc<Publication>> = publications.into();
        crate::store::trim(&mut items, retention, crate::store::now_millis());
        let (publications, has_more) = crate::store::page(items.iter(), query);
        Ok(HistoryPage {
            publications,
            position,
            has_more,
        })
    }

    async fn position(&self, channel: &str) -> HubResult<StreamPosition> {
        Ok(self.run_read(channel, false).await?.0)
    }
}

#[async_trait]
impl Broker for RedisEngine {
    fn attach(&self, sink: Weak<dyn DeliverySink>) {
        let _ = self.sink.set(sink);
    }

    async fn publish(&self, message: BrokerMessage) -> HubResult<()> {
        let (channel, payload) = match &message {
            BrokerMessage::Publication { publication, skip } => {
                let entry = RawValue::from_string(format!(
                    r#"{{"o":{},"e":{},"t":{},{},"i":{}}}"#,
                    publication.offset(),
                    serde_json::Value::from(publication.epoch()),
                    publication.time(),
                    entry_data_field(publication.data()),
                    serde_json::to_string(&publication.info())
                        .map_err(|e| HubError::new(ErrorCode::InternalError, e.to_string()))?,
                ))
                .map_err(|e| HubError::new(ErrorCode::InternalError, e.to_string()))?;
                (
                    publication.channel(),
                    serde_json::json!({"n": &*self.node, "s": skip, "m": entry}),
                )
            }
            BrokerMessage::Join { channel, info } => {
                (&**channel, serde_json::json!({"k": "join", "i": info}))
            }
            BrokerMessage::Leave { channel, info } => {
                (&**channel, serde_json::json!({"k": "leave", "i": info}))
            }
        };
        self.publish_to(&self.topic(channel), &payload).await?;
        Ok(())
    }

    fn listens_per_channel(&self) -> bool {
        true
    }

    async fn forward(&self, control: &Control) -> HubResult<Option<usize>> {
        let payload = serde_json::json!({"n": &*self.node, "x": control});
        Ok(Some(self.to_other_nodes(&payload).await?))
    }

    async fn subscribe(&self, channel: &str) -> HubResult<()> {
        self.listening.lock().insert(channel.to_string());
        let sink = self.links[self.shard(channel)].sink.read().await.clone();
        let result = match sink {
            Some(mut sink) => sink
                .subscribe(self.topic(channel))
                .await
                .map_err(unavailable),
            None => Err(unavailable("no pub/sub link")),
        };
        if result.is_err() {
            self.listening.lock().remove(channel);
        }
        result
    }

    async fn unsubscribe(&self, channel: &str) -> HubResult<()> {
        self.listening.lock().remove(channel);
        let sink = self.links[self.shard(channel)].sink.read().await.clone();
        if let Some(mut sink) = sink {
            sink.unsubscribe(self.topic(channel))
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn append_and_publish(
        &self,
        channel: &str,
        data: &Data,
        info: Option<&ClientInfo>,
        retention: Retention,
        skip: Option<u64>,
    ) -> Option<HubResult<Arc<Publication>>> {
        Some(
            self.run_append(channel, data, info, retention, Some(skip))
                .await,
        )
    }

    async fn gather(&self, what: &str) -> HubResult<Option<Vec<serde_json::Value>>> {
        let to = format!(
            "{}:answers:{}{}",
            self.prefix,
            crate::store::memory::new_epoch(),
            crate::store::memory::new_epoch()
        );
        let ask = serde_json::json!({"n": &*self.node, "r": {"what": what, "to": &to}});
        let expected = self.to_other_nodes(&ask).await?;
        let mut conn = self.commands.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut answers = Vec::with_capacity(expected);
        while answers.len() < expected && tokio::time::Instant::now() < deadline {
            let popped: Option<Vec<String>> = redis::cmd("LPOP")
                .arg(&to)
                .arg(expected - answers.len())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match popped {
                Some(items) if !items.is_empty() => answers.extend(
                    items
                        .iter()
                        .filter_map(|i| serde_json::from_str::<serde_json::Value>(i).ok()),
                ),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let _ = redis::cmd("DEL")
            .arg(&to)
            .query_async::<i64>(&mut conn)
            .await;
        Ok(Some(answers))
    }

    fn is_ready(&self) -> bool {
        self.links.iter().all(|l| l.up.load(Ordering::Relaxed))
    }
}

#[async_trait]
impl PresenceStore for RedisEngine {
    async fn join(&self, channel: &str, info: ClientInfo) -> HubResult<()> {
        let expires = crate::store::now_millis() + self.lease.as_millis() as u64;
        let lease = serde_json::to_string(&Lease {
            i: info.clone(),
            x: expires,
        })
        .map_err(|e| HubError::new(ErrorCode::InternalError, e.to_string()))?;
        let mut conn = self.commands.clone();
        redis::cmd("HSET")
            .arg(self.presence_key(channel))
            .arg(&*info.client)
            .arg(lease)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.local_presence
            .lock()
            .insert((channel.to_string(), info.client.to_string()), info);
        Ok(())
    }

    async fn leave(&self, channel: &str, client: &str) -> HubResult<()> {
        self.local_presence
            .lock()
            .remove(&(channel.to_string(), client.to_string()));
        let mut conn = self.commands.clone();
        redis::cmd("HDEL")
            .arg(self.presence_key(channel))
            .arg(client)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, channel: &str) -> HubResult<HashMap<String, ClientInfo>> {
        let mut conn = self.commands.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.presence_key(channel))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let now = crate::store::now_millis();
        let mut live = HashMap::new();
        let mut expired = Vec::new();
        for (client, lease) in all {
            match serde_json::from_str::<Lease>(&lease) {
                Ok(lease) if lease.x > now => {
                    live.insert(client, lease.i);
                }
                _ => expired.push(client),
            }
        }
        if !expired.is_empty() {
            // Leases of a node that stopped refreshing them: gone for good.
            let _ = redis::cmd("HDEL")
                .arg(self.presence_key(channel))
                .arg(expired)
                .query_async::<i64>(&mut conn)
                .await;
        }
        Ok(live)
    }
}

/// Start the engine's background tasks (pub/sub link, presence leases). Needs a tokio
/// runtime; the tasks end when the engine is dropped.
pub fn start(engine: &Arc<RedisEngine>) {
    for index in 0..engine.links.len() {
        tokio::spawn(RedisEngine::run_pubsub(Arc::downgrade(engine), index));
    }
    tokio::spawn(RedisEngine::run_leases(
        Arc::downgrade(engine),
        engine.lease / 3,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_message_round_trips_with_its_raw_data() {
        let control = Control::Send {
            user: Some("alice".into()),
            client: None,
            data: RawValue::from_string(r#"{"a":[1,2]}"#.into()).expect("json"),
        };
        let text =
            serde_json::to_string(&serde_json::json!({"n": "x", "x": control})).expect("encode");
        #[derive(Deserialize)]
        struct Forwarded {
            x: Control,
        }
        let back: Forwarded = serde_json::from_str(&text).expect("decode");
        match back.x {
            Control::Send { user, data, .. } => {
                assert_eq!(user.as_deref(), Some("alice"));
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
    }
}
