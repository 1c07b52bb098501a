//! `ferry monitor --json` against a live `ferry serve` under a small, bounded load.

mod support;

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{API_KEY, FerryServer, run_to_completion, token_for};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn monitor_json_shows_rates_and_top_channels_of_a_loaded_hub() -> anyhow::Result<()> {
    let server = FerryServer::start(&[]).await?;
    // One subscriber on chat:mon.
    let mut request = server
        .ws_url(&format!("/ws?token={}", token_for("watcher")))
        .into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ferry.json".parse()?);
    let (mut ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await??;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "1", "payload": {"channel": "chat:mon"}}).to_string(),
    ))
    .await?;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await?
            .context("closed")??;
        if msg.to_text().is_ok_and(|t| t.contains("\"reply\"")) {
            break;
        }
    }
    // Drain deliveries so the subscriber never counts as slow.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    // A publisher: 20 a second, at most 400 (20 s), stopped when the monitor is done.
    let url = format!("{}/api/publish", server.base_url);
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0..400 {
            let _ = http
                .post(&url)
                .header("Authorization", format!("apikey {API_KEY}"))
                .json(&json!({"channel": "chat:mon", "data": {"i": i}}))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["monitor", &server.base_url, "--json", "--count", "4"])
        .args(["--interval-ms", "500", "--api-key", API_KEY])
        .env_remove("FERRY_API_KEY");
    let out = run_to_completion(cmd, WAIT).await?;
    publisher.abort();
    reader.abort();
    assert!(out.status.success(), "{}", out.stderr);
    let samples = support::json_lines(&out.stdout)?;
    assert_eq!(samples.len(), 4, "{}", out.stdout);
    assert_eq!(
        samples[0]["publications_per_sec"],
        Value::Null,
        "no rate yet"
    );
    for s in &samples {
        assert_eq!(s["connections"], 1, "{s}");
        assert_eq!(s["connections_ws"], 1, "{s}");
        assert_eq!(s["connections_sse"], 0, "{s}");
        assert_eq!(s["subscriptions"], 1, "{s}");
        assert_eq!(s["top_channels"][0]["channel"], "chat:mon", "{s}");
        assert_eq!(s["top_channels"][0]["subscribers"], 1, "{s}");
    }
    let rates: Vec<f64> = samples[1..]
        .iter()
        .map(|s| s["publications_per_sec"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(rates.iter().any(|r| *r > 0.0), "{rates:?}");
    let deliveries: Vec<f64> = samples[1..]
        .iter()
        .map(|s| s["deliveries_per_sec"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(deliveries.iter().any(|r| *r > 0.0), "{deliveries:?}");
    for key in ["bytes_in_per_sec", "bytes_out_per_sec"] {
        let rates: Vec<f64> = samples[1..]
            .iter()
            .map(|s| s[key].as_f64().unwrap_or(0.0))
            .collect();
        assert!(rates.iter().any(|r| *r > 0.0), "{key}: {rates:?}");
    }
    // Publications went through: the stream's latency summary has a p99.
    assert!(
        samples[3]["publish_enqueue_p99_ms"].as_f64().is_some(),
        "{}",
        samples[3]
    );
    let first = samples[0]["publications"].as_u64().context("count")?;
    let last = samples[3]["publications"].as_u64().context("count")?;
    assert!(last > first, "{first} → {last}");

    // A wrong key is a refusal (exit 3), not a crash; `ferry top` is the same command.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["top", &server.base_url, "--json", "--count", "1"])
        .args(["--api-key", "wrong"]);
    let out = run_to_completion(cmd, WAIT).await?;
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    Ok(())
}
