//! HubClient against a real hub over loopback: typed commands, publication streams,
//! re-auth and resubscribe with recovery after the server drops the connection, the
//! offline queue, and errors.
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_client::hub::{
    Codec, HistoryOptions, HubApi, HubClient, HubEvent, Position, Subscription, SubscriptionEvent,
};
use ferry_client::ws::{Backoff, ConnectionState};
use serde_json::{Value, json};
use ws_support::{API_KEY, TestServer, next_state, test_config, within};

/// Reconnects only when told to (`reconnect_now`), so a test decides what happens while
/// the client is away.
fn manual_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(60),
        ..Backoff::default()
    }
}

thread_local! {
    /// The codec this test's clients speak (tests run on a current-thread runtime).
    static CODEC: std::cell::Cell<Codec> = const { std::cell::Cell::new(Codec::Json) };
}

/// Run each named `async fn` as `NAME::json` and `NAME::msgpack`.
macro_rules! both_codecs {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn json() {
                    super::CODEC.with(|c| c.set(super::Codec::Json));
                    super::$name().await
                }
                #[tokio::test]
                async fn msgpack() {
                    super::CODEC.with(|c| c.set(super::Codec::MsgPack));
                    super::$name().await
                }
            }
        )*
    };
}

/// A builder speaking this test's codec.
fn builder(url: &str) -> ferry_client::hub::HubClientBuilder {
    HubClient::builder(url).codec(CODEC.with(std::cell::Cell::get))
}

async fn client(server: &TestServer, user: &str) -> HubClient {
    builder(&server.ws_url("/ws"))
        .token(&server.token(user))
        .backoff(manual_backoff())
        .connect()
        .await
        .unwrap()
}

async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    within("a subscription event", sub.next())
        .await
        .expect("subscription open")
}

async fn next_data(sub: &mut Subscription) -> Value {
    let p = within("a publication", sub.next_publication())
        .await
        .expect("subscription open");
    serde_json::from_str(p.data.to_json().get()).unwrap()
}

async fn typed_commands_and_a_publication_stream() {
    // Join and leave pushes are off by default; this test watches them on `chat`.
    let mut config = ws_support::test_config("127.0.0.1:0".parse().unwrap());
    if let Some(chat) = config.namespaces.get_mut("chat") {
        chat.join_leave = true;
    }
    let server = TestServer::start_with(config).await;
    let alice = client(&server, "alice").await;
    let bob = client(&server, "bob").await;
    let mut sub = alice.subscribe("chat:lobby").await.unwrap();
    match next(&mut sub).await {
        SubscriptionEvent::Subscribed { position } => assert_eq!(position.offset, 0),
        other => panic!("{other:?}"),
    }
    let published = bob
        .publish("chat:lobby", &json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(published.offset, 1);
    let p = within("publication", sub.next_publication()).await.unwrap();
    assert_eq!((p.channel.as_str(), p.offset), ("chat:lobby", 1));
    assert_eq!(p.epoch, published.epoch);
    assert_eq!(p.info.unwrap().user, "bob");
    assert_eq!(
        serde_json::from_str::<Value>(p.data.to_json().get()).unwrap(),
        json!({"text": "hi"})
    );

    bob.publish("chat:lobby", &2).await.unwrap();
    let page = alice
        .history(
            "chat:lobby",
            HistoryOptions {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(!page.has_more);
    let presence = alice.presence("chat:lobby").await.unwrap();
    assert_eq!(presence.count, 1);
    assert_eq!(presence.clients.values().next().unwrap().user, "alice");
    alice.ping().await.unwrap();

    // Join and leave of another subscriber reach the subscription.
    let _bob_sub = bob.subscribe("chat:lobby").await.unwrap();
    loop {
        match next(&mut sub).await {
            SubscriptionEvent::Join(info) => {
                assert_eq!(info.user, "bob");
                break;
            }
            SubscriptionEvent::Publication(_) => {}
            other => panic!("{other:?}"),
        }
    }
    alice.unsubscribe("chat:lobby").await.unwrap();
    while within("end", sub.next()).await.is_some() {}
    match within("auth event", alice.next_event()).await.unwrap() {
        HubEvent::AuthSuccess { user, .. } => assert_eq!(user, "alice"),
        other => panic!("{other:?}"),
    }
    alice.close().await;
    bob.close().await;
    server.stop().await;
}

async fn recovers_publications_missed_while_disconnected_no_gap_no_duplicate() {
    let server = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (token_calls, token) = (calls.clone(), server.token("carol"));
    let hub = builder(&server.ws_url("/ws"))
        .token_provider(move || {
            token_calls.fetch_add(1, Ordering::SeqCst);
            let token = token.clone();
            async move { Some(token) }
        })
        .backoff(manual_backoff())
        .connect()
        .await
        .unwrap();
    let mut sub = hub.subscribe("chat:room").await.unwrap();
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    server.publish("chat:room", json!(1)).await;
    assert_eq!(next_data(&mut sub).await, json!(1));

    let mut states = hub.states();
    let api = HubApi::new(&server.http(""), API_KEY).unwrap();
    assert_eq!(api.disconnect_user("carol", true).await.unwrap(), 1);
    assert!(matches!(
        next_state(&mut states).await,
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    // Published while carol is away.
    for n in 2..=4 {
        server.publish("chat:room", json!(n)).await;
    }
    hub.websocket().reconnect_now();
    assert_eq!(next_state(&mut states).await, ConnectionState::Connecting);
    assert_eq!(next_state(&mut states).await, ConnectionState::Open);
    match next(&mut sub).await {
        SubscriptionEvent::Recovered {
            recovered,
            missed,
            position,
        } => {
            assert!(recovered);
            assert_eq!(missed, 3);
            assert_eq!(position.offset, 4);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    for n in 2..=4 {
        assert_eq!(next_data(&mut sub).await, json!(n));
    }
    // Live again: the next one follows without a duplicate before it.
    server.publish("chat:room", json!(5)).await;
    assert_eq!(next_data(&mut sub).await, json!(5));
    // Re-authenticated from the provider on the second connection.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    hub.close().await;
    server.stop().await;
}

async fn an_unrecoverable_gap_is_reported() {
    let mut config = test_config("127.0.0.1:0".parse().unwrap());
    config.namespaces.get_mut("chat").unwrap().history_size = 2;
    let server = TestServer::start_with(config).await;
    let hub = client(&server, "dave").await;
    let mut sub = hub.subscribe("chat:small").await.unwrap();
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    let mut states = hub.states();
    assert!(matches!(
        server.drop_user("dave", &mut states).await,
        ConnectionState::Reconnecting { .. }
    ));
    for n in 1..=5 {
        server.publish("chat:small", json!(n)).await;
    }
    hub.websocket().reconnect_now();
    match next(&mut sub).await {
        SubscriptionEvent::Recovered {
            recovered,
            missed,
            position,
        } => {
            assert!(!recovered, "history holds 2 of the 5 missed publications");
            assert_eq!(missed, 0);
            assert_eq!(position.offset, 5);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    server.publish("chat:small", json!(6)).await;
    assert_eq!(next_data(&mut sub).await, json!(6));
    hub.close().await;
    server.stop().await;
}

async fn publishes_made_offline_are_sent_after_the_reconnect() {
    let server = TestServer::start().await;
    let watcher = client(&server, "watcher").await;
    let mut sub = watcher.subscribe("chat:q").await.unwrap();
    let hub = client(&server, "erin").await;
    let mut states = hub.states();
    assert!(matches!(
        server.drop_user("erin", &mut states).await,
        ConnectionState::Reconnecting { .. }
    ));
    // The three commands wait in the queue, in call order; then the client reconnects.
    let (a, b, c, ()) = tokio::join!(
        hub.publish("chat:q", &1),
        hub.publish("chat:q", &2),
        hub.publish("chat:q", &3),
        async {
            assert_eq!(hub.websocket().queued(), 3);
            hub.websocket().reconnect_now();
        },
    );
    let offsets = [a.unwrap().offset, b.unwrap().offset, c.unwrap().offset];
    assert_eq!(offsets, [1, 2, 3]);
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..3 {
        got.push(next_data(&mut sub).await);
    }
    assert_eq!(got, [json!(1), json!(2), json!(3)], "in order, once each");
    hub.close().await;
    watcher.close().await;
    server.stop().await;
}

async fn subscribe_from_a_saved_position_recovers_across_a_restart_of_the_client() {
    let server = TestServer::start().await;
    let first = client(&server, "fay").await;
    let mut sub = first.subscribe("chat:saved").await.unwrap();
    server.publish("chat:saved", json!("a")).await;
    let p = within("pub", sub.next_publication()).await.unwrap();
    let saved = Position {
        offset: p.offset,
        epoch: p.epoch.clone(),
    };
    first.close().await;
    server.publish("chat:saved", json!("b")).await;
    server.publish("chat:saved", json!("c")).await;

    let second = client(&server, "fay").await;
    let mut sub = second.subscribe_from("chat:saved", saved).await.unwrap();
    assert!(matches!(
        next(&mut sub).await,
        SubscriptionEvent::Recovered {
            recovered: true,
            missed: 2,
            ..
        }
    ));
    assert_eq!(next_data(&mut sub).await, json!("b"));
    assert_eq!(next_data(&mut sub).await, json!("c"));
    second.close().await;
    server.stop().await;
}

async fn server_refusals_are_typed_errors() {
    let server = TestServer::start().await;
    let hub = client(&server, "gus").await;
    let e = hub.subscribe("nope:x").await.unwrap_err();
    assert_eq!(e.code(), "UNKNOWN_CHANNEL", "{e}");
    let _sub = hub.subscribe("chat:dup").await.unwrap();
    let e = hub.subscribe("chat:dup").await.unwrap_err();
    assert_eq!(e.code(), "ALREADY_SUBSCRIBED");
    hub.close().await;

    // A bad token: the connection opens, the server says auth_error, commands fail.
    let hub = builder(&server.ws_url("/ws"))
        .token("not-a-jwt")
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        within("auth_error", hub.next_event()).await,
        Some(HubEvent::AuthError(_))
    ));
    let e = hub.publish("chat:x", &1).await.unwrap_err();
    assert_eq!(e.code(), "AUTH_REQUIRED");
    hub.close().await;

    let api = HubApi::new(&server.http(""), "wrong-key").unwrap();
    let e = api.publish("chat:x", &1).await.unwrap_err();
    assert!(e.server_code().is_some(), "{e}");
    server.stop().await;
}

async fn an_expired_token_is_refreshed_without_reconnecting() {
    let mut config = test_config("127.0.0.1:0".parse().unwrap());
    config.token_ttl_secs = 1;
    let server = TestServer::start_with(config).await;
    let hub_for_tokens = server.hub.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let hub = builder(&server.ws_url("/ws"))
        .token_provider(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let token = hub_for_tokens.auth().issue("hal").unwrap().0;
            async move { Some(token) }
        })
        .connect()
        .await
        .unwrap();
    let mut states = hub.states();
    loop {
        match within("AUTH_EXPIRED", hub.next_event()).await.unwrap() {
            HubEvent::Error(e) if e.code() == "AUTH_EXPIRED" => break,
            _ => {}
        }
    }
    // The provider is asked again and the fresh token sent with `auth`: commands work
    // on the same connection.
    loop {
        if let HubEvent::TokenRefreshed = within("refresh", hub.next_event()).await.unwrap() {
            break;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let _sub = hub.subscribe("chat:after-refresh").await.unwrap();
    assert_eq!(hub.state(), ConnectionState::Open);
    hub.close().await;
    assert_eq!(
        next_state(&mut states).await,
        ConnectionState::Closing,
        "no reconnect happened before the close"
    );
    server.stop().await;
}

both_codecs!(
    typed_commands_and_a_publication_stream,
    recovers_publications_missed_while_disconnected_no_gap_no_duplicate,
    an_unrecoverable_gap_is_reported,
    publishes_made_offline_are_sent_after_the_reconnect,
    subscribe_from_a_saved_position_recovers_across_a_restart_of_the_client,
    server_refusals_are_typed_errors,
    an_expired_token_is_refreshed_without_reconnecting,
);
