//! Fan-out: publish (stage, wait for durability, take a turn), the per-stripe order that
//! keeps a channel's offsets in order, and delivery of what the broker hands back to
//! every local subscriber's queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::metrics::HistoryOp;

use ferry_proto::envelope::ClientInfo;
use ferry_proto::{CloseCode, Data, ErrorCode};

use crate::broker::{BrokerMessage, Control, DeliverySink};
use crate::channel::ChannelName;
use crate::conn::{ConnHandle, Outbound, Pushed};
use crate::error::{HubError, HubResult};
use crate::publication::{Delivery, Publication, Push};

use super::{Hub, HubInner};

/// Number of publish-order stripes: publishes to one channel are serialised by the
/// stripe its name hashes to; different channels rarely share one.
pub(super) const ORDER_STRIPES: usize = 256;

/// One stripe of the publish order: its lock serialises staging (offsets) and
/// subscribe-with-recovery of its channels; `last` chains their fan-outs, so publications
/// whose durability is awaited outside the lock still reach subscribers in offset order.
#[derive(Default)]
pub(super) struct Stripe {
    /// Done once the latest turn taken on this stripe has fanned out (or given up).
    last: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Stripe {
    /// Whether a turn taken on this stripe has not fanned out yet.
    pub(super) fn pending(&mut self) -> bool {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.last.as_mut().map(|last| last.try_recv()) {
            Some(Err(TryRecvError::Empty)) => true,
            _ => {
                self.last = None;
                false
            }
        }
    }
}

/// A place in a stripe's fan-out order, taken under its lock.
pub(super) struct Turn {
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Dropped when this turn is over, which lets the next one go.
    _done: tokio::sync::oneshot::Sender<()>,
}

impl Turn {
    pub(super) fn take(stripe: &mut Stripe) -> Turn {
        let (done, next) = tokio::sync::oneshot::channel();
        Turn {
            previous: stripe.last.replace(next),
            _done: done,
        }
    }

    /// Wait until every turn taken before this one is over.
    pub(super) async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous turn's sender was dropped: over as well.
            let _ = previous.await;
        }
    }
}

impl DeliverySink for HubInner {
    fn deliver(&self, message: BrokerMessage) {
        let Some(channel) = self
            .channels
            .shard(message.channel())
            .lock()
            .get(message.channel())
            .cloned()
        else {
            return;
        };
        let subscribers = channel.subscribers.read();
        let mut delivered = 0u64;
        let mut slow = 0u64;
        let mut send = |conn: &ConnHandle, item: Outbound| match conn.push(item) {
            Pushed::Queued => delivered += 1,
            // Counted once per connection, when its queue overflows.
            Pushed::Overflowed => slow += 1,
            Pushed::Dropped => {}
        };
        match message {
            BrokerMessage::Publication { publication, skip } => {
                let offset = publication.offset();
                let compressible = self.config.compression == crate::config::WsCompression::On
                    && ChannelName::parse(publication.channel())
                        .ok()
                        .and_then(|name| self.config.namespace(name.namespace))
                        .is_none_or(|ns| ns.compress);
                let delivery = Delivery::new(publication, compressible);
                for (id, sub) in subscribers.iter() {
                    if Some(*id) != skip && offset > sub.after {
                        send(&sub.conn, Outbound::Publication(delivery.clone()));
                    }
                }
            }
            BrokerMessage::Join { channel, info } => {
                let push = Push::presence(true, &channel, &info);
                for sub in subscribers
                    .values()
                    .filter(|s| *s.conn.client_id != *info.client)
                {
                    send(&sub.conn, Outbound::Push(push.clone()));
                }
            }
            BrokerMessage::Leave { channel, info } => {
                let push = Push::presence(false, &channel, &info);
                for sub in subscribers.values() {
                    send(&sub.conn, Outbound::Push(push.clone()));
                }
            }
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
        self.slow_consumers.fetch_add(slow, Ordering::Relaxed);
    }

    fn deliver_remote(
        &self,
        message: BrokerMessage,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Under the channel's order lock: a subscribe of this channel reads history and
            // registers with that lock held, so it and this delivery never interleave.
            let _order = self.order_lock(message.channel()).lock().await;
            self.deliver(message);
        })
    }

    fn control(&self, control: Control) {
        self.apply(&control);
    }

    fn report(&self, what: &str) -> serde_json::Value {
        match what {
            "channels" => serde_json::json!(self.channels()),
            _ => serde_json::json!(self.stats()),
        }
    }

    fn broker_reconnected(&self, affected: &dyn Fn(&str) -> bool) {
        // Publications from other nodes may have passed while the link was down: the
        // subscribers of its channels are sent to reconnect and recover (or be told
        // recovery failed).
        let mut closed = 0usize;
        for shard in self.channels.iter() {
            for (name, channel) in shard.lock().iter() {
                if !affected(name) {
                    continue;
                }
                for sub in channel.subscribers.read().values() {
                    sub.conn.request_close(
                        CloseCode::TRY_AGAIN_LATER,
                        "the hub lost its broker link; reconnect and recover",
                    );
                    closed += 1;
                }
            }
        }
        if closed > 0 {
            tracing::warn!(
                subscriptions = closed,
                "broker link restored: subscribers sent to reconnect and recover"
            );
        }
    }
}

impl Hub {
    /// Publish `data` to `channel`: append to history (assigning the offset), then fan out
    /// to every subscriber on every node. `skip` excludes one connection (`skip_self`).
    pub async fn publish(
        &self,
        channel: &str,
        data: impl Into<Data>,
        info: Option<ClientInfo>,
        skip: Option<u64>,
    ) -> HubResult<Arc<Publication>> {
        let data = data.into();
        let started = Instant::now();
        let (_, ns) = self.resolve(channel)?;
        self.check_data(&data)?;
        let retention = Self::retention(ns);
        if let Some(result) = self
            .inner
            .broker
            .append_and_publish(channel, &data, info.as_ref(), retention, skip)
            .await
        {
            // Stored and published in one step; this node delivers it when it comes back
            // from the broker, like every other node.
            self.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), result.is_ok());
            let publication = result?;
            self.inner.publications.fetch_add(1, Ordering::Relaxed);
            return Ok(publication);
        }
        let mut stripe = self.order_lock(channel).lock().await;
        let staged = self.inner.store.stage(channel, data, info, retention).await;
        if staged.is_err() {
            self.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), false);
        }
        let staged = staged?;
        let publication = staged.publication;
        if staged.durable.is_now() && !stripe.pending() {
            // Stored already (memory history) and nothing ahead: fan out under the lock.
            self.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), true);
            self.fan_out(&publication, skip, started).await?;
            return Ok(publication);
        }
        // Durable later (SQLite: after the commit). The lock is released while the commit
        // is awaited, so the next publications of the channel go into the same commit; the
        // turn keeps fan-out in offset order. The rest runs as its own task, so a caller
        // that goes away cannot leave a stored publication undelivered.
        let mut turn = Turn::take(&mut stripe);
        drop(stripe);
        let hub = self.clone();
        let durable = staged.durable;
        let delivered = publication.clone();
        tokio::spawn(async move {
            let stored = durable.wait().await;
            hub.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), stored.is_ok());
            turn.wait().await;
            match stored {
                Ok(()) => hub.fan_out(&delivered, skip, started).await,
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| HubError::new(ErrorCode::InternalError, format!("publish failed: {e}")))??;
        Ok(publication)
    }

    /// Hand a stored publication to the broker, which queues it for every subscriber;
    /// `started` is when its publish began (`ferry_publish_enqueue_seconds`).
    pub(super) async fn fan_out(
        &self,
        publication: &Arc<Publication>,
        skip: Option<u64>,
        started: Instant,
    ) -> HubResult<()> {
        self.inner
            .broker
            .publish(BrokerMessage::Publication {
                publication: publication.clone(),
                skip,
            })
            .await?;
        self.inner.publications.fetch_add(1, Ordering::Relaxed);
        self.inner
            .metrics
            .publish_enqueue
            .observe(started.elapsed());
        Ok(())
    }
}

impl HubInner {
    pub(super) fn order_lock(&self, channel: &str) -> &tokio::sync::Mutex<Stripe> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel) as usize;
        &self.order[hash % self.order.len()]
    }
}
