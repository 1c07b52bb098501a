//! Fan-out between nodes: the `Broker` trait and the in-process memory broker.
//!
//! Every publication, join and leave goes through the broker; the broker hands it to each
//! node's [`DeliverySink`] (with the memory broker: this node's only). A Redis broker will
//! implement the same trait.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use ferry_proto::envelope::ClientInfo;

use crate::error::HubResult;
use crate::publication::Publication;

/// What travels through the broker.
#[derive(Debug, Clone)]
pub enum BrokerMessage {
    /// A publication; `skip` is a connection of the publishing node that must not get it.
    Publication {
        /// The publication.
        publication: Arc<Publication>,
        /// Connection id excluded from delivery (`skip_self`).
        skip: Option<u64>,
    },
    /// Someone subscribed.
    Join {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        info: ClientInfo,
    },
    /// Someone left.
    Leave {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        info: ClientInfo,
    },
}

impl BrokerMessage {
    /// The channel the message is for.
    pub fn channel(&self) -> &str {
        match self {
            BrokerMessage::Publication { publication, .. } => publication.channel(),
            BrokerMessage::Join { channel, .. } | BrokerMessage::Leave { channel, .. } => channel,
        }
    }
}

/// A server API request for connections that may be on any node (`/api/send`,
/// `/api/disconnect`), passed to the other nodes by [`Broker::forward`].
///
/// Externally tagged on the wire (`{"send":{...}}`): an internally tagged enum cannot
/// carry the raw JSON `data`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// A `direct` push to a user's connections and/or one client.
    Send {
        /// The user.
        user: Option<String>,
        /// The client id.
        client: Option<String>,
        /// What to push.
        data: Box<serde_json::value::RawValue>,
    },
    /// Close a user's connections and/or one client.
    Disconnect {
        /// The user.
        user: Option<String>,
        /// The client id.
        client: Option<String>,
        /// Invite a reconnect (1013) instead of a final close (1008).
        reconnect: bool,
    },
}

/// Receives what the broker delivers to this node.
pub trait DeliverySink: Send + Sync {
    /// Deliver to this node's subscribers. Must not block.
    fn deliver(&self, message: BrokerMessage);

    /// Deliver a message that came from another process (Redis), ordered with the
    /// subscribes of its channel so each subscriber gets each publication exactly once.
    fn deliver_remote(
        &self,
        message: BrokerMessage,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;

    /// A broker link came back after a loss: messages of the channels it carries
    /// (`affected`) may have been missed, so their subscribers must recover.
    fn broker_reconnected(&self, affected: &dyn Fn(&str) -> bool);

    /// Apply a request another node forwarded (see [`Broker::forward`]) to this node's
    /// connections.
    fn control(&self, control: Control);

    /// This node's figures for another node's [`Broker::gather`]: `stats` (the counters of
    /// `/api/stats`) or `channels` (`[[name, subscribers], ...]`).
    fn report(&self, what: &str) -> serde_json::Value;
}

/// Carries messages to every node.
///
/// Contract: messages of one channel reach every node in the order they were published
/// (a publication's offset order, where [`Broker::append_and_publish`] assigns offsets);
/// an `Err` means the message reached no node (the caller reports the failure; it never
/// passes silently). Per-channel listening ([`Broker::subscribe`]) is confirmed before
/// `subscribe` returns, so a history read after it cannot miss a publication.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Register this node's sink; called once by the hub at start.
    fn attach(&self, sink: Weak<dyn DeliverySink>);
    /// Send a message to every node, this one included.
    async fn publish(&self, message: BrokerMessage) -> HubResult<()>;

    /// Whether this broker listens per channel ([`subscribe`](Broker::subscribe) and
    /// [`unsubscribe`](Broker::unsubscribe) matter). Default false: every message reaches
    /// this node.
    fn listens_per_channel(&self) -> bool {
        false
    }

    /// Start receiving `channel`'s messages on this node (its first local subscriber).
    async fn subscribe(&self, _channel: &str) -> HubResult<()> {
        Ok(())
    }

    /// Stop receiving `channel`'s messages (its last local subscriber left).
    async fn unsubscribe(&self, _channel: &str) -> HubResult<()> {
        Ok(())
    }

    /// For a broker that keeps history itself (Redis): assign the offset, store and
    /// publish in one atomic step, so every node sees a channel's publications in offset
    /// order. `None` when this broker does not: the hub stores, then publishes.
    async fn append_and_publish(
        &self,
        _channel: &str,
        _data: &ferry_proto::Data,
        _info: Option<&ClientInfo>,
        _retention: crate::store::Retention,
        _skip: Option<u64>,
    ) -> Option<HubResult<Arc<Publication>>> {
        None
    }

    /// Pass `control` to every other node. `None`: there are none (one process);
    /// `Some(n)`: how many other nodes took it.
    async fn forward(&self, _control: &Control) -> HubResult<Option<usize>> {
        Ok(None)
    }

    /// Ask every other node for its figures (`stats` or `channels`, see
    /// [`DeliverySink::report`]) and return their answers; nodes that do not answer within
    /// a second are left out. `None` when there are no other nodes (one process).
    async fn gather(&self, _what: &str) -> HubResult<Option<Vec<serde_json::Value>>> {
        Ok(None)
    }

    /// Whether the broker can take messages now (`/ready`). Default true.
    fn is_ready(&self) -> bool {
        true
    }
}

/// The default broker: one node, delivery is a direct call.
#[derive(Default)]
pub struct MemoryBroker {
    sink: OnceLock<Weak<dyn DeliverySink>>,
}

impl MemoryBroker {
    /// A broker with no sink attached yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn attach(&self, sink: Weak<dyn DeliverySink>) {
        let _ = self.sink.set(sink);
    }

    async fn publish(&self, message: BrokerMessage) -> HubResult<()> {
        if let Some(sink) = self.sink.get().and_then(Weak::upgrade) {
            sink.deliver(message);
        }
        Ok(())
    }
}
