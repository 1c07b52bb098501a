//! Durable history (SQLite, the default of `ferry serve`) with the real binary: what was
//! acknowledged survives `kill -9` and a graceful restart, and clients recover exactly
//! what they missed across either.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use ferry_client::hub::{HubApi, HubClient, Position, SubscriptionEvent};
use ferry_client::ws::{Backoff, ConnectionState};
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, token_for, within};
use tempfile::TempDir;

async fn history(api: &HubApi, channel: &str) -> Value {
    api.call("history", json!({"channel": channel, "limit": 1000}))
        .await
        .unwrap()
}

fn offsets(page: &Value) -> Vec<u64> {
    page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

async fn publish_range(api: &HubApi, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        api.publish(channel, &json!({"n": n})).await.unwrap();
    }
}

async fn next_publication_n(sub: &mut ferry_client::hub::Subscription) -> u64 {
    let p = within("a publication", sub.next_publication())
        .await
        .expect("subscription open");
    let data: Value = serde_json::from_str(p.data.to_json().get()).unwrap();
    data["n"].as_u64().unwrap()
}

#[tokio::test]
async fn acknowledged_publications_survive_kill_9_and_a_graceful_restart() {
    let data = TempDir::new().unwrap();
    let mut server = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[])
        .await
        .unwrap();
    let api = HubApi::new(&server.base_url, API_KEY).unwrap();
    publish_range(&api, "chat:durable", 1..=10).await;
    let before = history(&api, "chat:durable").await;
    assert_eq!(offsets(&before), (1..=10).collect::<Vec<_>>());
    let epoch = before["epoch"].as_str().unwrap().to_string();

    // kill -9: every acknowledged publication is on disk.
    server.kill().await.unwrap();
    let mut server = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[])
        .await
        .unwrap();
    let api = HubApi::new(&server.base_url, API_KEY).unwrap();
    let after = history(&api, "chat:durable").await;
    assert_eq!(after["epoch"], epoch.as_str(), "the epoch survives");
    assert_eq!(after["publications"], before["publications"]);
    // Offsets continue where they were.
    let next = api
        .publish("chat:durable", &json!({"n": 11}))
        .await
        .unwrap();
    assert_eq!(next.offset, 11);

    // A new process resumes from a saved position: exactly the publications after it.
    let client = HubClient::builder(&server.ws_url("/ws"))
        .token(&token_for("alice"))
        .connect()
        .await
        .unwrap();
    let position = Position {
        offset: 4,
        epoch: epoch.clone(),
    };
    let mut sub = client
        .subscribe_from("chat:durable", position)
        .await
        .unwrap();
    match within("the recovery", sub.next()).await {
        Some(SubscriptionEvent::Recovered {
            recovered, missed, ..
        }) => {
            assert!(recovered);
            assert_eq!(missed, 7);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    for n in 5..=11 {
        assert_eq!(next_publication_n(&mut sub).await, n);
    }
    client.close().await;

    // SIGTERM: a graceful stop keeps everything too.
    let pid = server.pid().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(server.wait().await.unwrap(), Some(0), "{}", server.logs());
    let server = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[])
        .await
        .unwrap();
    let api = HubApi::new(&server.base_url, API_KEY).unwrap();
    let last = history(&api, "chat:durable").await;
    assert_eq!(offsets(&last), (1..=11).collect::<Vec<_>>());
    assert_eq!(last["epoch"], epoch.as_str());
}

#[tokio::test]
async fn a_connected_client_recovers_across_a_server_crash() {
    let data = TempDir::new().unwrap();
    let mut server = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[])
        .await
        .unwrap();
    let listen = format!("127.0.0.1:{}", server.port);
    let api = HubApi::new(&server.base_url, API_KEY).unwrap();
    // Reconnects only when told to, so the test decides what happens while it is away.
    let client = HubClient::builder(&server.ws_url("/ws"))
        .token(&token_for("bob"))
        .backoff(Backoff {
            initial: Duration::from_secs(60),
            ..Backoff::default()
        })
        .connect()
        .await
        .unwrap();
    let mut sub = client.subscribe("chat:crash").await.unwrap();
    assert!(matches!(
        within("subscribed", sub.next()).await,
        Some(SubscriptionEvent::Subscribed { .. })
    ));
    publish_range(&api, "chat:crash", 1..=3).await;
    for n in 1..=3 {
        assert_eq!(next_publication_n(&mut sub).await, n);
    }
    let mut states = client.states();
    server.kill().await.unwrap();
    loop {
        let state = within("reconnecting", states.next()).await.unwrap();
        if matches!(state, ConnectionState::Reconnecting { .. }) {
            break;
        }
    }
    // The node comes back on its port and history; 4 more are published meanwhile.
    let _server = FerryServer::start_on_data(&listen, data.path(), &[])
        .await
        .unwrap();
    publish_range(&api, "chat:crash", 4..=7).await;
    client.websocket().reconnect_now();
    match within("the recovery", sub.next()).await {
        Some(SubscriptionEvent::Recovered {
            recovered,
            missed,
            position,
        }) => {
            assert!(recovered, "history and epoch survived the crash");
            assert_eq!(missed, 4);
            assert_eq!(position.offset, 7);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    for n in 4..=7 {
        assert_eq!(next_publication_n(&mut sub).await, n);
    }
    publish_range(&api, "chat:crash", 8..=8).await;
    assert_eq!(next_publication_n(&mut sub).await, 8, "live, no duplicate");
    client.close().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused_clearly() {
    let data = TempDir::new().unwrap();
    let _first = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[])
        .await
        .unwrap();
    let second = FerryServer::start_on_data("127.0.0.1:0", data.path(), &[]).await;
    let error = second
        .err()
        .expect("a second server must not start")
        .to_string();
    assert!(
        error.contains("in use by another process") && error.contains("--data-dir"),
        "{error}"
    );
}

#[tokio::test]
async fn memory_history_stays_available() {
    let server = FerryServer::start(&["--history", "memory"]).await.unwrap();
    let api = HubApi::new(&server.base_url, API_KEY).unwrap();
    api.publish("chat:m", &json!(1)).await.unwrap();
    assert_eq!(offsets(&history(&api, "chat:m").await), [1]);
    assert!(
        !server.dir().join("data").join("history.sqlite3").exists(),
        "memory history writes no file"
    );
}
