//! The `PresenceStore` contract.

use ferry_hub::presence::PresenceStore;
use ferry_proto::envelope::ClientInfo;

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
    }
}

/// Join, look, join again (a replace, never a duplicate), leave (twice is fine), and
/// channels stay apart.
pub async fn join_get_leave(store: &dyn PresenceStore) {
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
    store.join("room", info("alice", "c1")).await.expect("join");
    assert_eq!(store.get("room").await.expect("get").len(), 2);
    store.leave("room", "c1").await.expect("leave");
    let here = store.get("room").await.expect("get");
    assert_eq!(here.keys().collect::<Vec<_>>(), ["c2"]);
    store.leave("room", "c1").await.expect("leave again");
    store.leave("nowhere", "c9").await.expect("leave unknown");
    assert_eq!(store.get("other").await.expect("get").len(), 1);
}
