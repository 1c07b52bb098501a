//! History storage: the `HistoryStore` trait, the SQLite implementation (the default of
//! `ferry serve`) and the in-memory one.
//!
//! The store is the only writer of history: it assigns offsets (+1 per publication) and
//! epochs. The hub serialises staging per channel, so a store sees one `stage` at a time
//! for a given channel; several staged publications of a channel may be on their way to
//! disk at once, and their [`Durable`]s complete in offset order.

pub(crate) mod memory;
pub mod sqlite;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_proto::Data;
use ferry_proto::envelope::ClientInfo;

pub use memory::MemoryStore;
pub use sqlite::{Durability, SqliteStore, StoreError};

use crate::error::{HubError, HubResult};
use crate::publication::{Publication, StreamPosition};
use ferry_proto::codes::ErrorCode;

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept; 0 keeps none.
    pub size: usize,
    /// Age after which a publication is dropped; `None` keeps them until pushed out.
    pub ttl: Option<Duration>,
}

/// A history read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Exclusive bound: offsets after it (forward) or before it (reverse).
    pub since: Option<u64>,
    /// At most this many publications.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The publications, in the requested order.
    pub publications: Vec<Arc<Publication>>,
    /// The channel's current position.
    pub position: StreamPosition,
    /// More publications match beyond `limit`.
    pub has_more: bool,
}

/// A staged publication: its offset is assigned; `durable` says when it is stored.
pub struct Staged {
    /// The publication, with its offset and epoch.
    pub publication: Arc<Publication>,
    /// Completes once the publication is stored (after its commit, for SQLite).
    pub durable: Durable,
}

/// When a staged publication is stored.
pub enum Durable {
    /// Already: the store keeps it in memory (or keeps no history for it).
    Now,
    /// Once the store's writer answers (`Err` carries why the write failed).
    Pending(tokio::sync::oneshot::Receiver<Result<(), String>>),
}

impl Durable {
    /// Whether the publication is stored already.
    pub fn is_now(&self) -> bool {
        matches!(self, Durable::Now)
    }

    /// Wait until the publication is stored.
    pub async fn wait(self) -> HubResult<()> {
        match self {
            Durable::Now => Ok(()),
            Durable::Pending(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(HubError::new(
                    ErrorCode::InternalError,
                    format!("saving the publication failed: {e}"),
                )),
                Err(_) => Err(HubError::new(
                    ErrorCode::InternalError,
                    "the history writer stopped",
                )),
            },
        }
    }
}

/// Where publications live.
///
/// Contract: offsets of a channel start at 1 and grow by exactly 1 per staged
/// publication; a publication is readable (`read`, `position`) only once it is durable;
/// durability completes in offset order per channel; an epoch changes only when a
/// channel's history starts over (then offsets may start again).
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Assign the next offset to a publication and start storing it (trimming history to
    /// `retention`). The caller serialises `stage` per channel.
    async fn stage(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Staged>;

    /// Stage a publication and wait until it is stored.
    async fn append(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        retention: Retention,
    ) -> HubResult<Arc<Publication>> {
        let staged = self.stage(channel, data, info, retention).await?;
        staged.durable.wait().await?;
        Ok(staged.publication)
    }

    /// Read retained publications.
    async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
        retention: Retention,
    ) -> HubResult<HistoryPage>;

    /// The channel's current position (offset 0 and a fresh epoch for a new channel).
    async fn position(&self, channel: &str) -> HubResult<StreamPosition>;

    /// Housekeeping, called about once a second by the server: drop what outlived its
    /// retention and give the memory back. Default: nothing to do.
    async fn maintain(&self) {}
}

/// Drop from the front of `items` (a channel's retained publications, oldest first) what
/// `retention` no longer keeps at `now_ms` (milliseconds since the Unix epoch).
pub(crate) fn trim(items: &mut VecDeque<Arc<Publication>>, retention: Retention, now_ms: u64) {
    while items.len() > retention.size {
        items.pop_front();
    }
    if let Some(ttl) = retention.ttl {
        let ttl = ttl.as_millis() as u64;
        while items
            .front()
            .is_some_and(|p| now_ms.saturating_sub(p.time()) >= ttl)
        {
            items.pop_front();
        }
    }
}

/// One page of `items` (a channel's retained publications, oldest first) for `query`,
/// and whether more match beyond its limit.
pub(crate) fn page<'a>(
    items: impl DoubleEndedIterator<Item = &'a Arc<Publication>>,
    query: HistoryQuery,
) -> (Vec<Arc<Publication>>, bool) {
    let take = query.limit.saturating_add(1);
    let mut publications: Vec<Arc<Publication>> = if query.reverse {
        let before = query.since.unwrap_or(u64::MAX);
        items
            .rev()
            .filter(|p| p.offset() < before)
            .take(take)
            .cloned()
            .collect()
    } else {
        let after = query.since.unwrap_or(0);
        items
            .filter(|p| p.offset() > after)
            .take(take)
            .cloned()
            .collect()
    };
    let has_more = publications.len() > query.limit;
    publications.truncate(query.limit);
    (publications, has_more)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
