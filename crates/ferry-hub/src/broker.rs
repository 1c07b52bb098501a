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

/// Receives what the broker delivers to this node.
pub trait DeliverySink: Send + Sync {
    /// Deliver to this node's subscribers. Must not block.
    fn deliver(&self, message: BrokerMessage);
}

/// Carries messages to every node.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Register this node's sink; called once by the hub at start.
    fn attach(&self, sink: Weak<dyn DeliverySink>);
    /// Send a message to every node, this one included.
    async fn publish(&self, message: BrokerMessage) -> HubResult<()>;
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
