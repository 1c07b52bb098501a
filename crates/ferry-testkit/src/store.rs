//! The `HistoryStore` contract: every implementation (memory, SQLite, Redis) must pass
//! each of these with a fresh store.

use std::time::Duration;

use ferry_hub::store::{HistoryQuery, HistoryStore, Retention};
use serde_json::value::RawValue;

/// Every check, in turn, each on a store from `fresh`.
pub async fn all<S: HistoryStore, G>(mut fresh: impl FnMut() -> (S, G)) {
    let (store, _guard) = fresh();
    offsets_start_at_one_and_grow_by_one(&store).await;
    let (store, _guard) = fresh();
    pages_cover_a_range_exactly_once(&store).await;
    let (store, _guard) = fresh();
    a_ttl_drops_old_publications_but_not_offsets(&store).await;
    let (store, _guard) = fresh();
    a_namespace_without_history_still_counts_offsets(&store).await;
    let (store, _guard) = fresh();
    data_comes_back_in_the_codec_it_was_published_in(&store).await;
}

fn raw(s: &str) -> ferry_proto::Data {
    RawValue::from_string(s.to_string()).expect("json").into()
}

fn query(since: Option<u64>, limit: usize, reverse: bool) -> HistoryQuery {
    HistoryQuery {
        since,
        limit,
        reverse,
    }
}

/// Offsets start at 1 and grow by one per channel; the last `size` are kept.
pub async fn offsets_start_at_one_and_grow_by_one(store: &dyn HistoryStore) {
    let keep = Retention {
        size: 10,
        ttl: None,
    };
    let fresh = store.position("c").await.expect("position");
    assert_eq!(fresh.offset, 0);
    for i in 1..=20u64 {
        let p = store
            .append("c", raw(&i.to_string()), None, keep)
            .await
            .expect("append");
        assert_eq!(p.offset(), i);
        assert_eq!(p.epoch(), fresh.epoch, "one epoch while history lasts");
        assert_eq!(p.data().to_json().get(), i.to_string());
    }
    let page = store
        .read("c", query(None, 100, false), keep)
        .await
        .expect("read");
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
    assert_eq!(
        offsets,
        (11..=20).collect::<Vec<_>>(),
        "the last `size` are kept"
    );
    assert_eq!(page.position.offset, 20);
    assert!(!page.has_more);
    assert_eq!(store.position("c").await.expect("p").offset, 20);
    // Channels are independent.
    let other = store
        .append("d", raw("1"), None, keep)
        .await
        .expect("append");
    assert_eq!(other.offset(), 1);
}

/// Pages forward and backward cover a range exactly once.
pub async fn pages_cover_a_range_exactly_once(store: &dyn HistoryStore) {
    let keep = Retention {
        size: 100,
        ttl: None,
    };
    for i in 1..=37u64 {
        store
            .append("p", raw(&i.to_string()), None, keep)
            .await
            .expect("append");
    }
    for limit in [1, 5, 10, 36, 37, 50] {
        for reverse in [false, true] {
            let mut seen = Vec::new();
            let mut since = None;
            loop {
                let page = store
                    .read("p", query(since, limit, reverse), keep)
                    .await
                    .expect("read");
                assert!(page.publications.len() <= limit);
                seen.extend(page.publications.iter().map(|p| p.offset()));
                since = page.publications.last().map(|p| p.offset());
                if !page.has_more {
                    break;
                }
                assert!(since.is_some(), "has_more with an empty page");
            }
            let mut expected: Vec<u64> = (1..=37).collect();
            if reverse {
                expected.reverse();
            }
            assert_eq!(seen, expected, "limit {limit}, reverse {reverse}");
        }
    }
    // An exclusive bound in the middle.
    let page = store
        .read("p", query(Some(30), 3, false), keep)
        .await
        .expect("read");
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
    assert_eq!(offsets, [31, 32, 33]);
    assert!(page.has_more);
    let page = store
        .read("p", query(Some(3), 10, true), keep)
        .await
        .expect("read");
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
    assert_eq!(offsets, [2, 1]);
    assert!(!page.has_more);
}

/// A TTL drops old publications but never reuses their offsets.
pub async fn a_ttl_drops_old_publications_but_not_offsets(store: &dyn HistoryStore) {
    let ttl = Retention {
        size: 10,
        ttl: Some(Duration::from_millis(50)),
    };
    store
        .append("t", raw("1"), None, ttl)
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(80)).await;
    store
        .append("t", raw("2"), None, ttl)
        .await
        .expect("append");
    let page = store
        .read("t", query(None, 10, false), ttl)
        .await
        .expect("read");
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset()).collect();
    assert_eq!(offsets, [2]);
    assert_eq!(page.position.offset, 2);
}

/// A namespace without history still counts offsets.
pub async fn a_namespace_without_history_still_counts_offsets(store: &dyn HistoryStore) {
    let none = Retention { size: 0, ttl: None };
    for i in 1..=3u64 {
        let p = store
            .append("n", raw("0"), None, none)
            .await
            .expect("append");
        assert_eq!(p.offset(), i);
    }
    let page = store
        .read("n", query(None, 10, false), none)
        .await
        .expect("read");
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 3);
}

/// JSON data reads back as the same text, MessagePack data as the same bytes (a binary
/// value stays binary).
pub async fn data_comes_back_in_the_codec_it_was_published_in(store: &dyn HistoryStore) {
    let keep = Retention {
        size: 10,
        ttl: None,
    };
    // {"bin": <binary 00 ff>, "n": -1}
    let packed = [
        0x82, 0xa3, b'b', b'i', b'n', 0xc4, 0x02, 0x00, 0xff, 0xa1, b'n', 0xff,
    ];
    let msgpack = ferry_proto::Data::from_msgpack(&packed).expect("valid MessagePack");
    store
        .append("m", raw(r#"{"b":1, "a" :[2]}"#), None, keep)
        .await
        .expect("append json");
    store
        .append("m", msgpack, None, keep)
        .await
        .expect("append msgpack");
    let page = store
        .read("m", query(None, 10, false), keep)
        .await
        .expect("read");
    let data: Vec<&ferry_proto::Data> = page.publications.iter().map(|p| p.data()).collect();
    assert_eq!(data.len(), 2);
    assert!(
        matches!(data[0], ferry_proto::Data::Json(raw) if raw.get() == r#"{"b":1, "a" :[2]}"#),
        "JSON text kept as written: {:?}",
        data[0]
    );
    assert!(
        matches!(data[1], ferry_proto::Data::MsgPack(bytes) if **bytes == packed),
        "MessagePack bytes kept: {:?}",
        data[1]
    );
}
