//! The backend contracts of ferry-testkit against every implementation in this crate:
//! history stores (memory, SQLite, Redis), presence (memory, Redis, with a dead node's
//! leases running out) and brokers (memory; Redis on one node and between two). Redis is
//! a Debian redis-server of each test's own.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_hub::broker::MemoryBroker;
use ferry_hub::config::RedisConfig;
use ferry_hub::presence::{MemoryPresence, PresenceStore};
use ferry_hub::redis_engine::RedisEngine;
use ferry_hub::store::{Durability, MemoryStore, SqliteStore};
use ferry_proto::envelope::ClientInfo;
use ferry_testkit::redis::TestRedis;
use ferry_testkit::{broker, presence, store};

fn engine(redis: &TestRedis, config: &RedisConfig) -> Arc<RedisEngine> {
    Arc::new(RedisEngine::new(&redis.url(), config).unwrap())
}

/// An engine with its pub/sub links up.
async fn running(redis: &TestRedis) -> Arc<RedisEngine> {
    use ferry_hub::broker::Broker;
    let engine = engine(redis, &RedisConfig::default());
    ferry_hub::redis_engine::start(&engine);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.is_ready() {
        assert!(Instant::now() < deadline, "the Redis links never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine
}

#[tokio::test]
async fn memory_history_keeps_the_store_contract() {
    store::all(|| (MemoryStore::new(), ())).await;
}

#[tokio::test]
async fn sqlite_history_keeps_the_store_contract() {
    store::all(|| {
        let dir = tempfile::tempdir().unwrap();
        (
            SqliteStore::open(dir.path(), Durability::Normal).unwrap(),
            dir,
        )
    })
    .await;
}

#[tokio::test]
async fn redis_history_keeps_the_store_contract() {
    store::all(|| {
        let redis = TestRedis::start();
        let engine = RedisEngine::new(&redis.url(), &RedisConfig::default()).unwrap();
        (engine, redis)
    })
    .await;
}

#[tokio::test]
async fn memory_presence_keeps_the_contract() {
    presence::join_get_leave(&MemoryPresence::default()).await;
}

#[tokio::test]
async fn redis_presence_keeps_the_contract_and_a_dead_nodes_leases_run_out() {
    let redis = TestRedis::start();
    let live = engine(&redis, &RedisConfig::default());
    presence::join_get_leave(&*live).await;
    // A node with 1 s leases that stops refreshing them (it died): its entries go.
    let short = RedisConfig {
        presence_lease_secs: 1,
        ..RedisConfig::default()
    };
    let dying = engine(&redis, &short);
    let dan = ClientInfo {
        user: "dan".into(),
        client: "d1".into(),
    };
    dying.join("lease", dan).await.unwrap();
    drop(dying);
    assert_eq!(live.get("lease").await.unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live.get("lease").await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_memory_broker_keeps_the_contract() {
    let node = broker::node(Arc::new(MemoryBroker::new()));
    broker::delivers_in_order(&node).await;
    broker::appends_and_publishes_in_offset_order(&node).await;
}

#[tokio::test]
async fn the_redis_broker_keeps_the_contract_on_one_node_and_between_two() {
    let redis = TestRedis::start();
    let one = broker::node(running(&redis).await);
    broker::delivers_in_order(&one).await;
    broker::appends_and_publishes_in_offset_order(&one).await;
    let two = broker::node(running(&redis).await);
    broker::two_nodes(&one, &two).await;
}
