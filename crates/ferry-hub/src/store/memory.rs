//! In-memory history: a bounded ring per channel. Lost on restart: the epoch is chosen once
//! per process, so after a restart clients are told recovery failed rather than given a
//! silent gap. Reads never create state: only channels that were published to are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ferry_proto::envelope::ClientInfo;
use serde_json::value::RawValue;

use super::{HistoryPage, HistoryQuery, HistoryStore, Retention, now_millis};
use crate::error::HubResult;
use crate::publication::{Publication, StreamPosition};
use crate::sharded::Sharded;

struct Stream {
    epoch: Arc<str>,
    top: u64,
    items: VecDeque<(Arc<Publication>, Instant)>,
}

impl Stream {
    fn new(epoch: &Arc<str>) -> Self {
        Stream {
            epoch: epoch.clone(),
            top: 0,
            items: VecDeque::new(),
        }
    }

    fn trim(&mut self, retention: Retention, now: Instant) {
        while self.items.len() > retention.size {
            self.items.pop_front();
        }
        if let Some(ttl) = retention.ttl {
            while self
                .items
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) >= ttl)
            {
                self.items.pop_front();
            }
        }
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
    streams: Sharded<HashMap<String, Stream>>,
    /// The epoch of every channel in this process: memory history lives as long as it.
    epoch: Arc<str>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            streams: Sharded::new(64),
            epoch: new_epoch().into(),
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
            offset: 0,
            epoch: self.epoch.to_string(),
        }
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn append(
        &self,
        channel: &str,
        data: Box<RawValue>,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Arc<Publication>> {
        let now = Instant::now();
        let mut shard = self.streams.shard(channel).lock();
        let stream = match shard.get_mut(channel) {
            Some(s) => s,
            None => shard
                .entry(channel.to_string())
                .or_insert_with(|| Stream::new(&self.epoch)),
        };
        stream.top += 1;
        let publication =
            Publication::new(channel, stream.top, &stream.epoch, data, info, now_millis());
        if retention.size > 0 {
            stream.items.push_back((publication.clone(), now));
        }
        stream.trim(retention, now);
        Ok(publication)
    }

    async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage> {
        let now = Instant::now();
        let mut shard = self.streams.shard(channel).lock();
        let Some(stream) = shard.get_mut(channel) else {
            return Ok(HistoryPage {
                publications: Vec::new(),
                position: self.empty_position(),
                has_more: false,
            });
        };
        stream.trim(retention, now);
        let matching: Box<dyn Iterator<Item = &Arc<Publication>>> = if query.reverse {
            let before = query.since.unwrap_or(u64::MAX);
            Box::new(
                stream
                    .items
                    .iter()
                    .rev()
                    .map(|(p, _)| p)
                    .filter(move |p| p.offset() < before),
            )
        } else {
            let after = query.since.unwrap_or(0);
            Box::new(
                stream
                    .items
                    .iter()
                    .map(|(p, _)| p)
                    .filter(move |p| p.offset() > after),
            )
        };
        let mut publications: Vec<Arc<Publication>> = matching
            .take(query.limit.saturating_add(1))
            .cloned()
            .collect();
        let has_more = publications.len() > query.limit;
        publications.truncate(query.limit);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("json")
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
}
