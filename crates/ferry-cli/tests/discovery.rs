//! LAN discovery (SPEC L1–L3) on a private LAN of network namespaces the test creates
//! (tests/netns): a hub in one namespace, the finder in another, a bridge between them.
//! Nothing here uses the host's network; without the rights to create namespaces the
//! tests fail and say why.
#![cfg(target_os = "linux")]

mod netns;
mod support;

use std::time::Duration;

use ferry_client::discover::{DiscoveredHub, Discovery, DiscoveryOptions, Via};
use ferry_client::hub::{HubClient, SubscriptionEvent};
use ferry_client::ws::Backoff;
use netns::{HUB_IP, HUB_IP_MOVED, Lan, NsHub, ferry_discover};
use serde_json::Value;

/// Safety net for waits that end as soon as the awaited thing happens.
const LONG: Duration = Duration::from_secs(20);

fn lan() -> Lan {
    Lan::new().expect("a private LAN of network namespaces")
}

fn listen(ip: &str) -> String {
    format!("{ip}:18080")
}

/// The first hub a discovery run reports, using only the given methods.
async fn first_hub(mdns: bool, broadcast: bool, timeout: Duration) -> Option<DiscoveredHub> {
    Discovery::builder()
        .mdns(mdns)
        .broadcast(broadcast)
        .timeout(timeout)
        .start()
        .expect("discovery starts")
        .next()
        .await
}

fn json_hubs(stdout: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(Value::Array(list)) => list,
        other => panic!("ferry discover --json printed {stdout:?} ({other:?})"),
    }
}

#[test]
fn a_hub_in_another_namespace_is_found_over_mdns_and_over_broadcast() {
    let lan = lan();
    lan.as_client(|| async {
        let hub = NsHub::start(&lan, &lan.hub, &listen(HUB_IP), "hub-one", &[])
            .await
            .expect("hub");

        // The CLI, each method alone, stopping at the first answer.
        for (flag, via) in [("--no-broadcast", "mdns"), ("--no-mdns", "broadcast")] {
            let (code, stdout, stderr) = ferry_discover(
                &lan,
                &lan.client,
                &["--json", "--first", "--timeout", "20s", flag],
            )
            .await;
            assert_eq!(code, 0, "{flag}: {stderr}");
            let hubs = json_hubs(&stdout);
            assert_eq!(hubs.len(), 1, "{stdout}");
            let h = &hubs[0];
            assert_eq!(h["name"], "hub-one");
            assert_eq!(h["addresses"], serde_json::json!([HUB_IP]));
            assert_eq!(h["port"], 18080);
            assert_eq!(h["tls"], false);
            assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(h["path"], "/ws");
            assert_eq!(h["protocols"], serde_json::json!(["ferry.json"]));
            assert_eq!(h["url"], format!("ws://{HUB_IP}:18080/ws"));
            assert_eq!(h["via"], serde_json::json!([via]), "{flag}");
        }

        // The human listing, both methods.
        let (code, stdout, stderr) = ferry_discover(&lan, &lan.client, &["--timeout", "2s"]).await;
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.starts_with(&format!(
                "hub-one  {HUB_IP}  port 18080  tls no  version {}",
                env!("CARGO_PKG_VERSION")
            )),
            "{stdout}"
        );

        // The library, each method alone.
        let by_mdns = first_hub(true, false, LONG).await.expect("found over mDNS");
        assert_eq!(by_mdns.name, "hub-one");
        assert_eq!(
            by_mdns.addresses,
            vec![HUB_IP.parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(by_mdns.port, 18080);
        assert_eq!(by_mdns.via, vec![Via::Mdns]);
        assert_eq!(by_mdns.url(), format!("ws://{HUB_IP}:18080/ws"));
        let by_broadcast = first_hub(false, true, LONG)
            .await
            .expect("found by broadcast");
        assert_eq!(by_broadcast.name, "hub-one");
        assert_eq!(by_broadcast.addresses, by_mdns.addresses);
        assert_eq!(by_broadcast.via, vec![Via::Broadcast]);

        // `discover()` with its defaults runs both and merges them by name.
        let all = ferry_client::discover().expect("discover").collect().await;
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].name, "hub-one");
        let mut via = all[0].via.clone();
        via.sort_by_key(|v| *v == Via::Broadcast);
        assert_eq!(via, vec![Via::Mdns, Via::Broadcast]);
        drop(hub);
    });
}

#[test]
fn with_multicast_dropped_the_broadcast_fallback_finds_the_hub() {
    let lan = lan();
    lan.drop_multicast().expect("drop multicast on the switch");
    lan.as_client(|| async {
        let _hub = NsHub::start(&lan, &lan.hub, &listen(HUB_IP), "hub-one", &[])
            .await
            .expect("hub");
        // Multicast really is dropped: mDNS alone finds nothing.
        assert_eq!(first_hub(true, false, Duration::from_secs(3)).await, None);
        // The same defaults as above find it through the fallback.
        let found = first_hub(true, true, LONG)
            .await
            .expect("found by broadcast");
        assert_eq!(found.name, "hub-one");
        assert_eq!(found.via, vec![Via::Broadcast]);
        let (code, stdout, stderr) =
            ferry_discover(&lan, &lan.client, &["--json", "--timeout", "3s"]).await;
        assert_eq!(code, 0, "{stderr}");
        let hubs = json_hubs(&stdout);
        assert_eq!(hubs.len(), 1, "{stdout}");
        assert_eq!(hubs[0]["name"], "hub-one");
        assert_eq!(hubs[0]["addresses"], serde_json::json!([HUB_IP]));
        assert_eq!(hubs[0]["via"], serde_json::json!(["broadcast"]));
    });
}

#[test]
fn a_loopback_only_hub_is_not_announced() {
    let lan = lan();
    lan.as_client(|| async {
        // Even when asked to announce, a loopback-only listener is not.
        let hidden = NsHub::start(&lan, &lan.hub, "127.0.0.1:18081", "hidden", &["--announce"])
            .await
            .expect("loopback hub");
        let _visible = NsHub::start(&lan, &lan.hub, &listen(HUB_IP), "visible", &[])
            .await
            .expect("hub");
        // From the other namespace and from the hub's own: only the visible one, by
        // either method, for the whole window.
        for ns in [&lan.client, &lan.hub] {
            let (code, stdout, stderr) =
                ferry_discover(&lan, ns, &["--json", "--timeout", "3s"]).await;
            assert_eq!(code, 0, "{stderr}");
            let names: Vec<String> = json_hubs(&stdout)
                .iter()
                .map(|h| h["name"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(names, ["visible"], "{ns}: {stdout}");
        }
        let logs = hidden.logs();
        assert!(logs.contains("not announcing"), "{logs}");
        // Nothing answers on the hub's loopback broadcast port either: the loopback hub
        // opened no responder.
        assert!(
            !logs.contains("announcing the hub on the local network"),
            "{logs}"
        );
    });
}

#[test]
fn a_client_finds_its_hub_again_after_the_hub_moves() {
    let lan = lan();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("discovery.json");
    let options = DiscoveryOptions {
        discovery: Discovery::builder().timeout(Duration::from_secs(5)),
        state_file: Some(state.clone()),
        rediscover_after: 2,
    };
    let remembered = || -> String {
        let text = std::fs::read_to_string(&state).expect("state file");
        let doc: Value = serde_json::from_str(&text).expect("json");
        doc["targets"]["mover"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let client = |options: DiscoveryOptions| {
        HubClient::builder("ferry://mover")
            .token(&support::token_for("alice"))
            .discovery(options)
            .connect_timeout(Duration::from_secs(1))
            .backoff(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(300),
                ..Backoff::default()
            })
    };
    lan.as_client(|| async {
        let hub = NsHub::start(&lan, &lan.hub, &listen(HUB_IP), "mover", &[]).await.expect("hub");
        let first = client(options.clone()).connect().await.expect("found by name");
        assert_eq!(remembered(), format!("ws://{HUB_IP}:18080/ws"));
        let mut sub = first.subscribe("chat:moves").await.expect("subscribe");

        // The hub moves to another address (same port), as after a DHCP renewal.
        hub.kill().await;
        lan.move_hub(HUB_IP, HUB_IP_MOVED).expect("move");
        let moved = NsHub::start(&lan, &lan.hub, &listen(HUB_IP_MOVED), "mover", &[])
            .await
            .expect("moved hub");
        // The open client fails at the old address, discovers again, reconnects and
        // restores its subscription there...
        tokio::time::timeout(LONG, async {
            loop {
                match sub.next().await {
                    Some(SubscriptionEvent::Recovered { .. }) => break,
                    Some(_) => continue,
                    None => panic!("subscription ended"),
                }
            }
        })
        .await
        .expect("reconnected to the moved hub");
        assert_eq!(remembered(), format!("ws://{HUB_IP_MOVED}:18080/ws"));
        // ...and works there.
        first.publish("chat:moves", &serde_json::json!({"n": 1})).await.expect("publish");
        let got = tokio::time::timeout(LONG, async {
            loop {
                match sub.next().await {
                    Some(SubscriptionEvent::Publication(p)) => break p,
                    Some(_) => continue,
                    None => panic!("subscription ended"),
                }
            }
        })
        .await
        .expect("publication");
        assert_eq!(got.data.to_json().get(), r#"{"n":1}"#);
        drop(first);

        // A new client that still remembers the old address (written before the move)
        // tries it, falls back to discovery and connects to the new one.
        let old = format!(
            r#"{{"version":1,"targets":{{"mover":{{"url":"ws://{HUB_IP}:18080/ws","name":"mover","saved_at":1}}}}}}"#
        );
        std::fs::write(&state, old).expect("write state");
        let second = client(options.clone()).connect().await.expect("found again");
        assert_eq!(remembered(), format!("ws://{HUB_IP_MOVED}:18080/ws"));
        drop(second);

        // The remembered address is tried first: with the hub no longer announced, a
        // client that remembers it still connects, one that does not cannot.
        moved.kill().await;
        let _quiet = NsHub::start(&lan, &lan.hub, &listen(HUB_IP_MOVED), "mover", &["--no-announce"])
            .await
            .expect("unannounced hub");
        let third = client(options.clone()).connect().await.expect("remembered address");
        drop(third);
        let forgetful = DiscoveryOptions {
            state_file: Some(dir.path().join("empty.json")),
            discovery: Discovery::builder().timeout(Duration::from_secs(2)),
            ..options.clone()
        };
        let err = client(forgetful).connect().await.expect_err("nothing to find");
        assert!(err.to_string().contains("no hub named `mover` answered"), "{err}");
    });
}
