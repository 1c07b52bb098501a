//! Who is subscribed where: the `PresenceStore` trait and its memory implementation.

use std::collections::HashMap;

use async_trait::async_trait;
use ferry_proto::envelope::ClientInfo;

use crate::error::HubResult;
use crate::sharded::Sharded;

/// Presence bookkeeping, keyed by channel and connection id.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Record that a connection is in a channel.
    async fn join(&self, channel: &str, info: ClientInfo) -> HubResult<()>;
    /// Record that a connection left a channel.
    async fn leave(&self, channel: &str, client: &str) -> HubResult<()>;
    /// Everyone in a channel, keyed by connection id.
    async fn get(&self, channel: &str) -> HubResult<HashMap<String, ClientInfo>>;
}

/// Presence in memory.
pub struct MemoryPresence {
    channels: Sharded<HashMap<String, HashMap<String, ClientInfo>>>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence {
            channels: Sharded::new(64),
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(&self, channel: &str, info: ClientInfo) -> HubResult<()> {
        self.channels
            .shard(channel)
            .lock()
            .entry(channel.to_string())
            .or_default()
            .insert(info.client.clone(), info);
        Ok(())
    }

    async fn leave(&self, channel: &str, client: &str) -> HubResult<()> {
        let mut shard = self.channels.shard(channel).lock();
        if let Some(members) = shard.get_mut(channel) {
            members.remove(client);
            if members.is_empty() {
                shard.remove(channel);
            }
        }
        Ok(())
    }

    async fn get(&self, channel: &str) -> HubResult<HashMap<String, ClientInfo>> {
        Ok(self
            .channels
            .shard(channel)
            .lock()
            .get(channel)
            .cloned()
            .unwrap_or_default())
    }
}
