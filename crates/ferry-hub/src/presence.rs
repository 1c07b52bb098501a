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

/// The `PresenceStore` contract, checked against every implementation (memory and, on a
/// redis-server of its own, Redis).
#[cfg(test)]
mod conformance {
    use super::*;

    fn info(user: &str, client: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
        }
    }

    async fn join_get_leave(store: &dyn PresenceStore) {
        assert!(store.get("room").await.expect("get").is_empty());
        store.join("room", info("alice", "c1")).await.expect("join");
        store.join("room", info("bob", "c2")).await.expect("join");
        store
            .join("other", info("carol", "c3"))
            .await
            .expect("join");
        let here = store.get("room").await.expect("get");
        assert_eq!(here.len(), 2);
        assert_eq!(here["c1"].user, "alice");
        // Joining again replaces, never duplicates.
        store.join("room", info("alice", "c1")).await.expect("join");
        assert_eq!(store.get("room").await.expect("get").len(), 2);
        store.leave("room", "c1").await.expect("leave");
        let here = store.get("room").await.expect("get");
        assert_eq!(here.keys().collect::<Vec<_>>(), ["c2"]);
        // Leaving twice, or a channel never joined, is fine.
        store.leave("room", "c1").await.expect("leave again");
        store.leave("nowhere", "c9").await.expect("leave unknown");
        assert_eq!(store.get("other").await.expect("get").len(), 1);
    }

    #[tokio::test]
    async fn memory_keeps_the_contract() {
        join_get_leave(&MemoryPresence::default()).await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_keeps_the_contract_and_a_dead_nodes_leases_run_out() {
        use crate::config::RedisConfig;
        use crate::redis_engine::{RedisEngine, TestRedis};
        let server = TestRedis::start();
        let engine = RedisEngine::new(&server.url, &RedisConfig::default()).expect("engine");
        join_get_leave(&engine).await;

        // A node with 1 s leases that stops refreshing them (it died): its entries go.
        let short = RedisConfig {
            presence_lease_secs: 1,
            ..RedisConfig::default()
        };
        let dying = RedisEngine::new(&server.url, &short).expect("engine");
        dying.join("lease", info("dan", "d1")).await.expect("join");
        drop(dying);
        assert_eq!(engine.get("lease").await.expect("get").len(), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !engine.get("lease").await.expect("get").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never ran out"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
