//! The `Broker` contract, on one node and between two nodes of one backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferry_hub::broker::{Broker, BrokerMessage, Control, DeliverySink};
use ferry_hub::publication::Publication;
use ferry_hub::store::Retention;
use ferry_proto::envelope::ClientInfo;
use parking_lot::Mutex;
use serde_json::value::RawValue;

/// How long anything awaited here may take: a safety net, not a timing assumption.
const WAIT: Duration = Duration::from_secs(20);

/// A node's sink for the tests: records what its broker delivers.
#[derive(Default)]
pub struct Recorder {
    messages: Mutex<Vec<BrokerMessage>>,
    controls: Mutex<Vec<Control>>,
    changed: tokio::sync::Notify,
}

impl DeliverySink for Recorder {
    fn deliver(&self, message: BrokerMessage) {
        self.messages.lock().push(message);
        self.changed.notify_waiters();
    }

    fn deliver_remote(
        &self,
        message: BrokerMessage,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.deliver(message) })
    }

    fn broker_reconnected(&self, _affected: &dyn Fn(&str) -> bool) {}

    fn control(&self, control: Control) {
        self.controls.lock().push(control);
        self.changed.notify_waiters();
    }

    fn report(&self, _what: &str) -> serde_json::Value {
        serde_json::Value::Null
    }
}

impl Recorder {
    /// Wait until `done` holds for what was delivered; the deliveries then.
    async fn wait(
        &self,
        what: &str,
        done: impl Fn(&[BrokerMessage], &[Control]) -> bool,
    ) -> (Vec<BrokerMessage>, Vec<Control>) {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                {
                    let (m, c) = (self.messages.lock(), self.controls.lock());
                    if done(&m, &c) {
                        return (m.clone(), c.clone());
                    }
                }
                changed.await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }
}

/// A broker and the sink it delivers to (kept alive here: the broker holds a `Weak`).
pub struct Node<B> {
    /// The broker under test.
    pub broker: Arc<B>,
    /// What it delivered.
    pub sink: Arc<Recorder>,
}

/// Attach a recording sink to `broker`.
pub fn node<B: Broker>(broker: Arc<B>) -> Node<B> {
    let sink = Arc::new(Recorder::default());
    let as_sink: Arc<dyn DeliverySink> = sink.clone();
    let weak: Weak<dyn DeliverySink> = Arc::downgrade(&as_sink);
    broker.attach(weak);
    Node { broker, sink }
}

fn publication(channel: &str, offset: u64) -> Arc<Publication> {
    let data: ferry_proto::Data = RawValue::from_string(offset.to_string())
        .expect("json")
        .into();
    Publication::new(channel, offset, &Arc::from("e"), data, None, 0)
}

fn offsets(messages: &[BrokerMessage], channel: &str) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            BrokerMessage::Publication { publication, .. } if publication.channel() == channel => {
                Some(publication.offset())
            }
            _ => None,
        })
        .collect()
}

/// A channel's messages reach a node that listens, in the order they were published;
/// join and leave too.
pub async fn delivers_in_order<B: Broker>(node: &Node<B>) {
    node.broker.subscribe("c").await.expect("subscribe");
    for offset in 1..=50 {
        node.broker
            .publish(BrokerMessage::Publication {
                publication: publication("c", offset),
                skip: None,
            })
            .await
            .expect("publish");
    }
    let who = ClientInfo {
        user: "u".into(),
        client: "k".into(),
    };
    node.broker
        .publish(BrokerMessage::Join {
            channel: "c".into(),
            info: who.clone(),
        })
        .await
        .expect("join");
    let (messages, _) = node
        .sink
        .wait("50 publications and a join", |m, _| {
            m.iter().any(|m| matches!(m, BrokerMessage::Join { .. }))
        })
        .await;
    assert_eq!(offsets(&messages, "c"), (1..=50).collect::<Vec<_>>());
    node.broker.unsubscribe("c").await.expect("unsubscribe");
}

/// Where the broker keeps history itself: offsets are consecutive, every publication
/// comes back in offset order, and the publishing node gets its `skip` back.
pub async fn appends_and_publishes_in_offset_order<B: Broker>(node: &Node<B>) {
    node.broker.subscribe("a").await.expect("subscribe");
    let keep = Retention {
        size: 10,
        ttl: None,
    };
    let data: ferry_proto::Data = RawValue::from_string("{}".into()).expect("json").into();
    let mut made = Vec::new();
    for _ in 0..20 {
        match node
            .broker
            .append_and_publish("a", &data, None, keep, Some(7))
            .await
        {
            None => return, // this broker leaves history to the store
            Some(result) => made.push(result.expect("append").offset()),
        }
    }
    assert_eq!(made, (1..=20).collect::<Vec<_>>(), "consecutive offsets");
    let (messages, _) = node
        .sink
        .wait("20 appended publications", |m, _| {
            offsets(m, "a").len() >= 20
        })
        .await;
    assert_eq!(offsets(&messages, "a"), (1..=20).collect::<Vec<_>>());
    assert!(messages.iter().all(|m| match m {
        BrokerMessage::Publication { publication, skip } if publication.channel() == "a" => {
            *skip == Some(7)
        }
        _ => true,
    }));
    node.broker.unsubscribe("a").await.expect("unsubscribe");
}

/// Between two nodes of a multi-node broker (two engines on one Redis): publications of a
/// channel reach the other node in order, with no `skip` (it names a connection of the
/// publishing node), and a forwarded request reaches the other node only.
pub async fn two_nodes<B: Broker>(one: &Node<B>, two: &Node<B>) {
    two.broker.subscribe("x").await.expect("subscribe");
    let data: ferry_proto::Data = RawValue::from_string("1".into()).expect("json").into();
    let keep = Retention { size: 5, ttl: None };
    for _ in 0..10 {
        if one
            .broker
            .append_and_publish("x", &data, None, keep, Some(3))
            .await
            .is_none()
        {
            for offset in 1..=10 {
                one.broker
                    .publish(BrokerMessage::Publication {
                        publication: publication("x", offset),
                        skip: None,
                    })
                    .await
                    .expect("publish");
            }
            break;
        }
    }
    let (messages, _) = two
        .sink
        .wait("10 publications on the other node", |m, _| {
            offsets(m, "x").len() >= 10
        })
        .await;
    assert_eq!(offsets(&messages, "x"), (1..=10).collect::<Vec<_>>());
    assert!(messages.iter().all(|m| match m {
        BrokerMessage::Publication { publication, skip } if publication.channel() == "x" => {
            skip.is_none()
        }
        _ => true,
    }));
    let control = Control::Disconnect {
        user: Some("eve".into()),
        client: None,
        reconnect: true,
    };
    match one.broker.forward(&control).await.expect("forward") {
        None => {}
        Some(others) => {
            assert_eq!(others, 1, "one other node");
            let (_, controls) = two
                .sink
                .wait("the forwarded request", |_, c| !c.is_empty())
                .await;
            assert!(
                matches!(&controls[0], Control::Disconnect { user: Some(u), .. } if u == "eve")
            );
            assert!(one.sink.controls.lock().is_empty(), "not back to itself");
        }
    }
}
