//! In-memory history: a bounded ring per channel. Lost on restart: the epoch is chosen once
//! per process, so after a restart clients are told recovery failed rather than given a
//! silent gap. Reads never create state: only channels that were published to are kept.
//!
//! Memory comes back: a channel whose history is empty (every publication outlived its
//! TTL, or the namespace keeps none) is dropped by [`HistoryStore::maintain`]. Offsets
//! must never be reused within an epoch, or a client could "recover" across the gap, so
//! a dropped channel raises a per-process floor and a channel created later starts above
//! it: a client that saw offset N of the dropped channel asks for N + 1, finds history
//! starting higher, and is told recovery failed, unless nothing was published after N.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ferry_proto::Data;
use ferry_proto::envelope::ClientInfo;

use super::{
    Durable, HistoryPage, HistoryQuery, HistoryStore, Retention, Staged, now_millis, page,
};
use crate::error::HubResult;
use crate::publication::{Publication, StreamPosition};
use crate::sharded::Sharded;

struct Stream {
    epoch: Arc<str>,
    top: u64,
    items: VecDeque<Arc<Publication>>,
    /// The retention of the last append, for `maintain`.
    retention: Retention,
}

impl Stream {
    fn new(epoch: &Arc<str>, floor: u64, retention: Retention) -> Self {
        Stream {
            epoch: epoch.clone(),
            top: floor,
            items: VecDeque::new(),
            retention,
        }
    }

    fn trim(&mut self, retention: Retention, now_ms: u64) {
        super::trim(&mut self.items, retention, now_ms);
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.to_string(),
        }
    }
}

/// A short random epoch name.
pub(crate) fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The default store: history in memory, bounded by each namespace's retention.
pub struct MemoryStore {
    streams: Sharded<HashMap<Box<str>, Stream>>,
    /// The epoch of every channel in this process: memory history lives as long as it.
    epoch: Arc<str>,
    /// The highest offset any dropped channel reached; new channels start above it.
    floor: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            streams: Sharded::new(64),
            epoch: new_epoch().into(),
            floor: AtomicU64::new(0),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn empty_position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.floor.load(Ordering::Relaxed),
            epoch: self.epoch.to_string(),
        }
    }

    /// Channels held now.
    pub fn channel_count(&self) -> usize {
        self.streams.iter().map(|s| s.lock().len()).sum()
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn stage(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Staged> {
        let now = now_millis();
        let mut shard = self.streams.shard(channel).lock();
        let stream = match shard.get_mut(channel) {
            Some(s) => s,
            None => {
                let floor = self.floor.load(Ordering::Relaxed);
                shard
                    .entry(channel.into())
                    .or_insert_with(|| Stream::new(&self.epoch, floor, retention))
            }
        };
        stream.retention = retention;
        stream.top += 1;
        let publication = Publication::new(channel, stream.top, &stream.epoch, data, info, now);
        if retention.size > 0 {
            stream.items.push_back(publication.clone());
        }
        stream.trim(retention, now);
        Ok(Staged {
            publication,
            durable: Durable::Now,
        })
    }

    async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage> {
        let now = now_millis();
        let mut shard = self.streams.shard(channel).lock();
        let Some(stream) = shard.get_mut(channel) else {
            return Ok(HistoryPage {
                publications: Vec::new(),
                position: self.empty_position(),
                has_more: false,
            });
        };
        stream.trim(retention, now);
        let (publications, has_more) = page(stream.items.iter(), query);
        Ok(HistoryPage {
            publications,
            position: stream.position(),
            has_more,
        })
    }

    async fn position(&self, channel: &str) -> HubResult<StreamPosition> {
        let shard = self.streams.shard(channel).lock();
        Ok(shard
            .get(channel)
            .map(Stream::position)
            .unwrap_or_else(|| self.empty_position()))
    }

    async fn maintain(&self) {
        let now = now_millis();
        for shard in self.streams.iter() {
            let mut shard = shard.lock();
            let mut dropped_top = 0;
            shard.retain(|_, stream| {
                let retention = stream.retention;
                stream.trim(retention, now);
                if stream.items.is_empty() {
                    dropped_top = dropped_top.max(stream.top);
                    false
                } else {
                    if stream.items.capacity() > stream.items.len() * 2 + 4 {
                        stream.items.shrink_to_fit();
                    }
                    true
                }
            });
            if shard.capacity() > shard.len() * 2 + 16 {
                shard.shrink_to_fit();
            }
            self.floor.fetch_max(dropped_top, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> ferry_proto::Data {
        serde_json::value::RawValue::from_string(s.to_string())
            .expect("json")
            .into()
    }

    #[tokio::test]
    async fn offsets_grow_by_one_and_history_is_bounded() {
        let store = MemoryStore::new();
        let keep3 = Retention { size: 3, ttl: None };
        for i in 1..=5u64 {
            let p = store
                .append("c", raw(&i.to_string()), None, keep3)
                .await
                .expect("append");
            assert_eq!(p.offset(), i);
        }
        let q = HistoryQuery {
            since: None,
            limit: 10,
            reverse: false,
        };
        let page = store.read("c", q, keep3).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        assert_eq!(page.position.offset, 5);
        assert!(!page.has_more);
        let q = HistoryQuery {
            since: Some(5),
            limit: 1,
            reverse: true,
        };
        let page = store.read("c", q, keep3).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, vec![4]);
        assert!(page.has_more);
        let other = store.position("other").await.expect("position");
        assert_eq!(other.offset, 0);
        assert_eq!(other.epoch, page.position.epoch, "one epoch per process");
        assert_ne!(
            MemoryStore::new().position("c").await.expect("p").epoch,
            other.epoch
        );
    }

    #[tokio::test]
    async fn publications_older_than_the_ttl_are_dropped() {
        let store = MemoryStore::new();
        let ttl = Retention {
            size: 10,
            ttl: Some(std::time::Duration::from_millis(20)),
        };
        store
            .append("t", raw("1"), None, ttl)
            .await
            .expect("append");
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        store
            .append("t", raw("2"), None, ttl)
            .await
            .expect("append");
        let q = HistoryQuery {
            since: None,
            limit: 10,
            reverse: false,
        };
        let page = store.read("t", q, ttl).await.expect("read");
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
        assert_eq!(offsets, vec![2], "the first publication outlived its TTL");
        assert_eq!(page.position.offset, 2, "offsets keep counting");
    }

    #[tokio::test]
    async fn expired_channels_are_dropped_and_never_reuse_an_offset() {
        let store = MemoryStore::new();
        let ttl = Retention {
            size: 10,
            ttl: Some(std::time::Duration::from_millis(20)),
        };
        for channel in ["a", "b"] {
            for n in 0..3 {
                store
                    .append(channel, raw(&n.to_string()), None, ttl)
                    .await
                    .expect("append");
            }
        }
        store
            .append("b", raw("3"), None, ttl)
            .await
            .expect("append");
        assert_eq!(store.channel_count(), 2);
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        store.maintain().await;
        assert_eq!(
            store.channel_count(),
            0,
            "expired channels give their memory back"
        );
        // `a` reached 3 and `b` 4: a new `a` starts above both, so a client that saw a:3
        // asks for 4, finds 5, and is told recovery failed.
        let p = store
            .append("a", raw("5"), None, ttl)
            .await
            .expect("append");
        assert_eq!(p.offset(), 5);
        let none = Retention { size: 0, ttl: None };
        store
            .append("z", raw("1"), None, none)
            .await
            .expect("append");
        store.maintain().await;
        assert_eq!(
            store.channel_count(),
            1,
            "a channel that keeps no history is dropped"
        );
    }
}
