//! G2: `/metrics` in the Prometheus text format and `/metrics/stream`. A scrape, then a
//! WebSocket and an SSE subscriber, three publications and a refused token, then another
//! scrape: every counter, gauge and histogram moved by what happened, and the text parses
//! with an independent parser (the prometheus-parse crate) line by line.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::{API_KEY, SseClient, TestServer, WsClient};

/// One scrape: every sample by `name{labels}` (labels sorted), histograms by their
/// `_count`, `_sum` and bucket lines.
struct Scrape {
    text: String,
    values: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in\n{}", self.text))
    }
}

async fn scrape(server: &TestServer, authorization: &str) -> Scrape {
    let response = reqwest::Client::new()
        .get(server.http("/metrics"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    Scrape {
        values: parse_strictly(&text),
        text,
    }
}

/// Parse with prometheus-parse, refusing any line it does not recognise and any sample
/// whose family has no `# TYPE` before it.
fn parse_strictly(text: &str) -> HashMap<String, f64> {
    use prometheus_parse::LineInfo;
    let mut typed: Vec<String> = Vec::new();
    let mut values = HashMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            // A histogram's TYPE line names its family in `metric_alias`.
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => typed.push(metric_alias.unwrap_or(metric_name)),
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| metric_name.strip_suffix(suffix))
                    .filter(|base| typed.iter().any(|t| t == base))
                    .unwrap_or(metric_name);
                assert!(
                    typed.iter().any(|t| t == family),
                    "sample before its # TYPE: {line}"
                );
                let mut labels: Vec<&str> = labels
                    .map(|l| l.split(',').filter(|p| !p.is_empty()).collect())
                    .unwrap_or_default();
                labels.sort_unstable();
                let key = if labels.is_empty() {
                    metric_name.to_string()
                } else {
                    format!("{metric_name}{{{}}}", labels.join(","))
                };
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
                assert!(
                    values.insert(key, value).is_none(),
                    "duplicate sample: {line}"
                );
            }
            LineInfo::Ignored => panic!("not a Prometheus text line: {line:?}"),
        }
    }
    // The whole text also goes through the crate's own scrape parser.
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    assert!(!parsed.samples.is_empty());
    values
}

#[tokio::test]
async fn metrics_move_by_what_happened_and_parse_as_prometheus_text() {
    let server = TestServer::start().await;
    let apikey = format!("apikey {API_KEY}");

    // Refused without credentials.
    let refused = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(refused.status(), 401);

    let before = scrape(&server, &apikey).await;
    assert_eq!(before.get(r#"ferry_connections{transport="ws"}"#), 0.0);

    // One refused token, one WebSocket and one SSE subscriber of chat:m.
    let mut bad = WsClient::connect(&server.ws_url("/ws?token=not.a.jwt")).await;
    bad.next_of_type("auth_error").await;
    let mut ws = server.client("alice").await;
    let reply = ws.request("subscribe", json!({"channel": "chat:m"})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    let mut sse = server.sse("bob", "channel=chat:m").await;
    sse.wait_for_comment("ferry").await;

    let api = server.api();
    for i in 0..3 {
        let (status, body) = api
            .post(
                "/api/publish",
                json!({"channel": "chat:m", "data": {"n": i}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for _ in 0..3 {
        ws.next_of_type("message").await;
        sse.next_event().await;
    }
    let (status, _) = api
        .post("/api/history", json!({"channel": "chat:m", "limit": 10}))
        .await;
    assert_eq!(status, 200);

    let after = scrape(&server, &apikey).await;
    let moved = |key: &str| after.get(key) - before.get(key);
    assert_eq!(moved("ferry_publications_total"), 3.0);
    assert_eq!(moved("ferry_deliveries_total"), 6.0);
    assert_eq!(after.get(r#"ferry_connections{transport="ws"}"#), 2.0);
    assert_eq!(after.get(r#"ferry_connections{transport="sse"}"#), 1.0);
    assert_eq!(after.get("ferry_subscriptions"), 2.0);
    assert_eq!(after.get("ferry_channels"), 1.0);
    assert_eq!(
        after.get(r#"ferry_auth_failures_total{code="AUTH_FAILED"}"#),
        1.0
    );
    assert_eq!(moved("ferry_publish_enqueue_seconds_count"), 3.0);
    assert!(after.get("ferry_publish_enqueue_seconds_sum") > 0.0);
    assert_eq!(
        after.get(r#"ferry_publish_enqueue_seconds_bucket{le="+Inf"}"#),
        after.get("ferry_publish_enqueue_seconds_count")
    );
    assert_eq!(
        moved(r#"ferry_history_operation_seconds_count{op="append"}"#),
        3.0
    );
    assert_eq!(
        moved(r#"ferry_history_operation_seconds_count{op="read"}"#),
        1.0
    );
    // Each connection times its first write (then one in 16): alice's first delivery.
    assert!(moved("ferry_enqueue_write_seconds_count") >= 1.0);
    assert!(moved("ferry_sent_bytes_total") > 0.0);
    assert!(moved("ferry_received_bytes_total") > 0.0);
    // Buckets are cumulative.
    let buckets: Vec<f64> = after
        .text
        .lines()
        .filter(|l| l.starts_with("ferry_publish_enqueue_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");

    // The live stream carries the same figures as JSON.
    let response = reqwest::Client::new()
        .get(server.http("/metrics/stream?interval_ms=100"))
        .header("authorization", &apikey)
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    let event = stream.next_event().await;
    assert_eq!(event.event, "metrics");
    let figures: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        figures["publications"],
        after.get("ferry_publications_total") as u64
    );
    assert_eq!(figures["connections"]["sse"], 1);
    assert_eq!(figures["publish_enqueue"]["count"], 3);
    assert!(figures["time"].is_string());
}

#[tokio::test]
async fn a_metrics_token_reads_metrics_and_nothing_else() {
    let server = TestServer::start_with(|c| {
        c.metrics_token = Some(ferry_hub::config::Secret::new("scrape-me"));
    })
    .await;
    scrape(&server, "Bearer scrape-me").await;
    let wrong = reqwest::Client::new()
        .get(server.http("/metrics"))
        .header("authorization", "Bearer not-it")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let api = reqwest::Client::new()
        .post(server.http("/api/stats"))
        .header("authorization", "Bearer scrape-me")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
}

#[tokio::test]
async fn rate_limited_commands_are_counted() {
    let server = TestServer::start_with(|c| {
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 1;
        c.limits.rate_abuse_strikes = 100;
    })
    .await;
    let mut ws = server.client("alice").await;
    for i in 0..4 {
        ws.send_json(json!({"type": "ping", "id": i.to_string()}))
            .await;
    }
    let mut refused = 0;
    for i in 0..4 {
        let answer = ws.answer(&i.to_string()).await;
        if answer["payload"]["code"] == "RATE_LIMIT_EXCEEDED" {
            refused += 1;
        }
    }
    assert!(refused >= 1, "a burst of 1 refuses some of 4 pings");
    let after = scrape(&server, &format!("apikey {API_KEY}")).await;
    assert_eq!(
        after.get(r#"ferry_rate_limited_total{what="command"}"#),
        f64::from(refused)
    );
}
