//! Fan-out: publish (stage, wait for durability in the stripe's queue), the per-stripe
//! order that keeps a channel's offsets in order, and delivery of what the broker hands back to
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
use crate::store::Durable;

use super::{Hub, HubInner};

/// Number of publish-order stripes: publishes to one channel are serialised by the
/// stripe its name hashes to; different channels rarely share one.
pub(super) const ORDER_STRIPES: usize = 256;

/// One stripe of the publish order. Its (async) lock serialises staging (offsets) and
/// subscribe-with-recovery of its channels. Publications whose durability is awaited
/// outside the lock (SQLite: until their commit) wait in its queue, which one task at a
/// time drains in order: they reach subscribers in offset order, and the publications of
/// one commit fan out back to back, so each subscriber's queue takes them in one write.
#[derive(Default)]
pub(super) struct Stripe {
    queue: Arc<parking_lot::Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    items: std::collections::VecDeque<Queued>,
    /// A drainer task runs (it may be fanning out the item it took last).
    draining: bool,
}

enum Queued {
    /// A staged publication, fanned out once durable; `done` gets the outcome.
    Publication {
        publication: Arc<Publication>,
        durable: Durable,
        skip: Option<u64>,
        started: Instant,
        done: tokio::sync::oneshot::Sender<HubResult<()>>,
    },
    /// A subscribe waiting for everything queued before it.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

impl Stripe {
    /// Whether nothing staged on this stripe is waiting to fan out.
    fn idle(&self) -> bool {
        let q = self.queue.lock();
        q.items.is_empty() && !q.draining
    }

    /// Wait until everything staged on this stripe so far has fanned out (or failed).
    /// Called with the stripe's lock held, so nothing new is staged meanwhile.
    pub(super) async fn settle(&self) {
        let waited = {
            let mut q = self.queue.lock();
            if q.items.is_empty() && !q.draining {
                return;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            q.items.push_back(Queued::Barrier(tx));
            rx
        };
        // An error means the drainer is gone, and everything ahead with it.
        let _ = waited.await;
    }

    /// Queue an item behind the others, starting a drainer when none runs.
    fn enqueue(&self, hub: &Hub, item: Queued) {
        let mut q = self.queue.lock();
        q.items.push_back(item);
        if !q.draining {
            q.draining = true;
            tokio::spawn(drain(hub.clone(), self.queue.clone()));
        }
    }
}

/// Fan out a stripe's queue in order until it is empty. Runs as its own task, so a
/// publisher that goes away cannot leave a stored publication undelivered.
async fn drain(hub: Hub, queue: Arc<parking_lot::Mutex<Queue>>) {
    /// If fan-out panics (or the runtime drops the task), the queue is emptied and freed:
    /// the waiting publishers get an error instead of waiting for ever, and the next
    /// publication starts a new drainer. Disarmed when the queue runs empty: by then a
    /// publisher may already have queued an item and started the next drainer.
    struct Reset<'a> {
        queue: &'a parking_lot::Mutex<Queue>,
        armed: bool,
    }
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            if self.armed {
                let mut q = self.queue.lock();
                q.items.clear();
                q.draining = false;
            }
        }
    }
    let mut reset = Reset {
        queue: &queue,
        armed: true,
    };
    loop {
        let item = {
            let mut q = queue.lock();
            match q.items.pop_front() {
                Some(item) => item,
                None => {
                    q.draining = false;
                    reset.armed = false;
                    return;
                }
            }
        };
        match item {
            Queued::Barrier(waiter) => {
                let _ = waiter.send(());
            }
            Queued::Publication {
                publication,
                durable,
                skip,
                started,
                done,
            } => {
                let stored = durable.wait().await;
                hub.inner
                    .metrics
                    .history(HistoryOp::Append, started.elapsed(), stored.is_ok());
                let outcome = match stored {
                    Ok(()) => hub.fan_out(&publication, skip, started).await,
                    Err(e) => Err(e),
                };
                let _ = done.send(outcome);
            }
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

/// A publication begun by [`Hub::begin_publish`]: its offset is assigned.
pub enum Publishing {
    /// Stored and fanned out already (memory history, or a broker that does both).
    Done(Arc<Publication>),
    /// Being stored; fanned out once it is, in offset order.
    Pending {
        /// The publication, with its offset and epoch.
        publication: Arc<Publication>,
        /// Stored and fanned out, or why not.
        outcome: tokio::sync::oneshot::Receiver<HubResult<()>>,
    },
}

impl Publishing {
    /// The publication (its offset and epoch are final, whatever the outcome).
    pub fn publication(&self) -> &Arc<Publication> {
        match self {
            Publishing::Done(p) | Publishing::Pending { publication: p, .. } => p,
        }
    }

    /// Whether it is stored and fanned out, or why not: ready once, like `finish`, for
    /// a caller that keeps many in a queue instead of a task each.
    pub fn poll_outcome(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<HubResult<()>> {
        use std::future::Future;
        match self {
            Publishing::Done(_) => std::task::Poll::Ready(Ok(())),
            Publishing::Pending { outcome, .. } => std::pin::Pin::new(outcome).poll(cx).map(|r| {
                r.map_err(|_| {
                    HubError::new(
                        ErrorCode::InternalError,
                        "publish failed: the fan-out task stopped",
                    )
                })?
            }),
        }
    }

    /// Wait until the publication is stored and fanned out.
    pub async fn finish(self) -> HubResult<Arc<Publication>> {
        match self {
            Publishing::Done(publication) => Ok(publication),
            mut pending @ Publishing::Pending { .. } => {
                std::future::poll_fn(|cx| pending.poll_outcome(cx)).await?;
                Ok(pending.publication().clone())
            }
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
        self.begin_publish(channel, data.into(), info, skip)
            .await?
            .finish()
            .await
    }

    /// [`Hub::publish`] in two steps: this one assigns the offset (so publications
    /// begun one after the other are ordered), and [`Publishing::finish`] waits until the
    /// publication is stored and fanned out. A transport can read the next command in
    /// between: with SQLite history, one connection's publications then share commits
    /// instead of waiting for one commit each.
    pub async fn begin_publish(
        &self,
        channel: &str,
        data: Data,
        info: Option<ClientInfo>,
        skip: Option<u64>,
    ) -> HubResult<Publishing> {
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
            return Ok(Publishing::Done(publication));
        }
        let stripe = self.order_lock(channel).lock().await;
        let staged = self.inner.store.stage(channel, data, info, retention).await;
        if staged.is_err() {
            self.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), false);
        }
        let staged = staged?;
        let publication = staged.publication;
        if staged.durable.is_now() && stripe.idle() {
            // Stored already (memory history) and nothing ahead: fan out under the lock.
            self.inner
                .metrics
                .history(HistoryOp::Append, started.elapsed(), true);
            self.fan_out(&publication, skip, started).await?;
            return Ok(Publishing::Done(publication));
        }
        // Durable later (SQLite: after the commit). The lock is released while the commit
        // is awaited, so the next publications of the channel go into the same commit;
        // the stripe's queue fans them out in offset order.
        let (done, outcome) = tokio::sync::oneshot::channel();
        stripe.enqueue(
            self,
            Queued::Publication {
                publication: publication.clone(),
                durable: staged.durable,
                skip,
                started,
                done,
            },
        );
        drop(stripe);
        Ok(Publishing::Pending {
            publication,
            outcome,
        })
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
