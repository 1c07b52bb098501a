//! Durable history in-process: random interleavings of publishing, disconnecting,
//! reconnecting with recovery and restarting the server on the same SQLite file never give
//! a subscriber a gap or a duplicate, and every recovery succeeds.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_hub::config::HistoryBackend;
use ferry_hub::store::sqlite::StoreError;
use ferry_hub::{Hub, SetupError};
use proptest::prelude::*;
use serde_json::json;
use serde_json::value::RawValue;
use support::{TestServer, WsClient, test_config};

const CHANNEL: &str = "chat:prop";

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Read,
    Disconnect,
    Reconnect,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Publish),
        2 => Just(Op::Read),
        2 => Just(Op::Disconnect),
        2 => Just(Op::Reconnect),
        1 => Just(Op::Restart),
    ]
}

/// A hub on `dir`'s history. The previous server's store may still be closing: its file
/// is taken again as soon as it is free.
async fn start(dir: &Path) -> TestServer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut config = test_config();
        config.data_dir = dir.to_path_buf();
        config.history = HistoryBackend::Sqlite;
        // Enough history that every recovery here can succeed.
        if let Some(chat) = config.namespaces.get_mut("chat") {
            chat.history_size = 1000;
        }
        // The tests pipeline hundreds of publishes on one connection, faster than the
        // default rate limit's burst of 200: the limit is not what they test.
        config.limits.rate_burst = 10_000;
        match Hub::new(Arc::new(config)) {
            Ok(hub) => return TestServer::start_hub(hub).await,
            Err(SetupError::History(StoreError::Locked { .. })) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    }
}

/// What the subscriber has processed.
struct Subscriber {
    client: Option<WsClient>,
    seen: Vec<u64>,
    epoch: Option<String>,
}

impl Subscriber {
    async fn connect(&mut self, server: &TestServer) {
        let mut client = server.client("alice").await;
        let payload = match (&self.epoch, self.seen.last()) {
            (Some(epoch), Some(&offset)) => {
                json!({"channel": CHANNEL, "recover": true, "offset": offset, "epoch": epoch})
            }
            (Some(epoch), None) => {
                json!({"channel": CHANNEL, "recover": true, "offset": 0, "epoch": epoch})
            }
            _ => json!({"channel": CHANNEL}),
        };
        let reply = client.request("subscribe", payload).await;
        assert_eq!(reply["type"], "reply", "{reply}");
        let reply = &reply["payload"];
        if self.epoch.is_some() {
            assert_eq!(reply["recovered"], true, "{reply}");
        }
        self.epoch = Some(reply["epoch"].as_str().unwrap().to_string());
        for p in reply["publications"].as_array().into_iter().flatten() {
            self.seen.push(p["offset"].as_u64().unwrap());
        }
        self.client = Some(client);
    }

    /// Read live messages until everything published so far was seen.
    async fn catch_up(&mut self, published: u64) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        while self.seen.last().copied().unwrap_or(0) < published {
            let m = client.next_of_type("message").await;
            self.seen.push(m["payload"]["offset"].as_u64().unwrap());
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let mut sub = Subscriber {
        client: None,
        seen: Vec::new(),
        epoch: None,
    };
    sub.connect(&server).await;
    let mut published = 0u64;
    for op in ops {
        match op {
            Op::Publish(n) => {
                for _ in 0..n {
                    published += 1;
                    let data: Arc<RawValue> =
                        RawValue::from_string(published.to_string()).unwrap().into();
                    let p = server.hub.publish(CHANNEL, data, None, None).await.unwrap();
                    assert_eq!(p.offset(), published);
                }
            }
            Op::Read => sub.catch_up(published).await,
            Op::Disconnect => sub.client = None,
            Op::Reconnect => {
                if sub.client.is_none() {
                    sub.connect(&server).await;
                }
            }
            Op::Restart => {
                sub.client = None;
                server.stop().await;
                server = start(dir.path()).await;
            }
        }
    }
    if sub.client.is_none() {
        sub.connect(&server).await;
    }
    sub.catch_up(published).await;
    assert_eq!(
        sub.seen,
        (1..=published).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn recovery_has_no_gap_and_no_duplicate_across_restarts(ops in prop::collection::vec(op(), 1..16)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(run(ops));
    }
}

/// Many publications of one channel on their way to disk at once (one group commit holds
/// several): subscribers get them in offset order, and subscribers joining with recovery
/// in the middle of the stream meet the live pushes exactly.
#[tokio::test]
async fn concurrent_publishers_on_one_channel_are_delivered_in_order_without_gaps() {
    const PUBLISHERS: u64 = 8;
    const EACH: u64 = 40;
    const TOTAL: u64 = PUBLISHERS * EACH;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut first = server.client("first").await;
    let reply = first
        .request("subscribe", json!({"channel": CHANNEL}))
        .await;
    let epoch = reply["payload"]["epoch"].as_str().unwrap().to_string();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let hub = server.hub.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    let data: Arc<RawValue> = RawValue::from_string("1".into()).unwrap().into();
                    hub.publish(CHANNEL, data, None, None).await.unwrap();
                }
            })
        })
        .collect();
    // Late subscribers recover from offset 0 while the publishers run.
    let mut late = Vec::new();
    for i in 0..3 {
        let mut c = server.client(&format!("late{i}")).await;
        let r = c
            .request(
                "subscribe",
                json!({"channel": CHANNEL, "recover": true, "offset": 0, "epoch": epoch}),
            )
            .await;
        assert_eq!(r["payload"]["recovered"], true, "{r}");
        let recovered: Vec<u64> = r["payload"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        late.push((c, recovered));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < TOTAL as usize {
        let m = first.next_of_type("message").await;
        seen.push(m["payload"]["offset"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
    for (mut c, mut got) in late {
        while got.len() < TOTAL as usize {
            let m = c.next_of_type("message").await;
            got.push(m["payload"]["offset"].as_u64().unwrap());
        }
        assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>(), "no gap, no duplicate");
    }
    server.stop().await;
}

/// Send publishes `p0..pCOUNT` of the numbers 0.. to [`CHANNEL`] without waiting for
/// their replies.
async fn send_publishes(publisher: &mut WsClient, count: u64) {
    for i in 0..count {
        publisher
            .send_json(json!({"type": "publish", "id": format!("p{i}"), "payload": {"channel": CHANNEL, "data": i}}))
            .await;
    }
}

/// One connection sends publishes without waiting for their replies (SQLite history: each
/// is answered once committed). The session reads on while they commit, so they are
/// answered with consecutive offsets in the order sent, each id exactly once, and a
/// subscriber receives every one in that order; a history read after the last reply
/// holds them all.
#[tokio::test]
async fn one_connections_pipelined_publishes_are_answered_in_order_once_stored() {
    const COUNT: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut subscriber = server.client("sub").await;
    subscriber
        .request("subscribe", json!({"channel": CHANNEL}))
        .await;
    let mut publisher = server.client("pub").await;
    send_publishes(&mut publisher, COUNT).await;
    let mut offsets = Vec::new();
    for i in 0..COUNT {
        let answer = publisher.recv().await;
        assert_eq!(answer["type"], "reply", "{answer}");
        assert_eq!(
            answer["id"],
            format!("p{i}"),
            "answers come in the order sent"
        );
        offsets.push(answer["payload"]["offset"].as_u64().unwrap());
    }
    assert_eq!(offsets, (1..=COUNT).collect::<Vec<_>>());
    let mut seen = Vec::new();
    while seen.len() < COUNT as usize {
        let m = subscriber.next_of_type("message").await;
        assert_eq!(m["payload"]["data"], seen.len() as u64);
        seen.push(m["payload"]["offset"].as_u64().unwrap());
    }
    assert_eq!(seen, offsets);
    let page = publisher
        .request("history", json!({"channel": CHANNEL, "limit": 1000}))
        .await;
    assert_eq!(
        page["payload"]["publications"].as_array().map(Vec::len),
        Some(COUNT as usize),
        "{page}"
    );
    server.stop().await;
}

/// A graceful shutdown while publishes are on their way to disk answers every publish the
/// server took before its close 1001: after a restart the file holds exactly the
/// publications the client saw acknowledged, none stored without an answer (a client would
/// publish those again) and none answered without being stored.
#[tokio::test]
async fn publishes_in_flight_at_shutdown_are_answered_before_the_close() {
    const COUNT: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut publisher = server.client("pub").await;
    send_publishes(&mut publisher, COUNT).await;
    // Shut down once the first answer shows that the server is taking them.
    let first = publisher.recv().await;
    assert_eq!(first["id"], "p0", "{first}");
    let stopping = tokio::spawn(server.stop());
    let (code, _) = publisher.expect_close().await;
    assert_eq!(code, 1001);
    let mut acknowledged = vec![first["payload"]["offset"].as_u64().unwrap()];
    for answer in publisher.buffered() {
        assert_eq!(answer["type"], "reply", "{answer}");
        acknowledged.push(answer["payload"]["offset"].as_u64().unwrap());
    }
    let n = acknowledged.len() as u64;
    assert_eq!(acknowledged, (1..=n).collect::<Vec<_>>());
    stopping.await.unwrap();

    let server = start(dir.path()).await;
    let mut reader = server.client("reader").await;
    let page = reader
        .request("history", json!({"channel": CHANNEL, "limit": 1000}))
        .await;
    assert_eq!(
        page["payload"]["offset"].as_u64(),
        Some(n),
        "stored = acknowledged ({n} of {COUNT} sent)"
    );
    server.stop().await;
}
