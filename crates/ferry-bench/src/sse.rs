//! `sse`: N EventSource subscribers of the hub's `/sse?channel=NAME`, fed by ferry
//! publishers over WebSocket. Same window, latency and server measurements as `fanout`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_proto::sse::SseParser;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use super::Common;
use super::client::Target;
use super::fanout::{FanoutPlan, GroupResult, Shared, open_publishers, publish_window};
use super::report::{Errors, Report};
use super::wire;

type Body = hyper::body::Incoming;

/// Open one `/sse` stream; returns the response body once the headers say 200.
async fn open(target: &Target, token: Option<&str>) -> anyhow::Result<Body> {
    let stream = TcpStream::connect(target.addr).await.context("connect")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("/sse?{}", form_query(&target.channel, token)))
        .header(hyper::header::HOST, target.addr.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::new())
        .context("request")?;
    let response = sender.send_request(request).await.context("GET /sse")?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!("GET /sse: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(response.into_body())
}

fn form_query(channel: &str, token: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("channel", channel);
    if let Some(t) = token {
        query.append_pair("token", t);
    }
    query.finish()
}

async fn subscriber(
    mut body: Body,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> GroupResult {
    let mut result = GroupResult::new();
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            frame = body.frame() => frame,
        };
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                result.errors.add(format!("SSE stream failed: {e}"));
                break;
            }
            None => {
                result.errors.add("SSE stream ended");
                break;
            }
        };
        if let Err(e) = parser.feed(&data, &mut events) {
            result.errors.add(format!("SSE parse error: {e}"));
            break;
        }
        for event in events.drain(..) {
            if let Some((_, ts)) = wire::parse_delivery(&event.data) {
                result.record(&shared, ts);
            }
        }
    }
    result
}

/// Run `sse`: subscribers over SSE, publishers over the ferry WebSocket protocol.
pub async fn run(
    common: &Common,
    target: Arc<Target>,
    plan: FanoutPlan,
    token: Option<String>,
) -> anyhow::Result<Report> {
    let probe = common.probe()?;
    let setup_start = Instant::now();
    let deadline = setup_start + common.setup_timeout();
    let mut errors = Errors::default();
    let mut bodies = Vec::with_capacity(plan.subscribers);
    {
        let target = &target;
        let token = token.as_deref();
        let mut pending = futures_util::stream::iter(0..plan.subscribers)
            .map(|_| async move { timeout(Duration::from_secs(15), open(target, token)).await })
            .buffer_unordered(common.concurrency());
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, pending.next()).await {
            match r {
                Ok(Ok(body)) => bodies.push(body),
                Ok(Err(e)) => errors.add(format!("{e:#}")),
                Err(_) => errors.add("SSE connect timed out"),
            }
        }
    }
    let run = open_publishers(
        &target,
        common,
        &plan,
        (setup_start, deadline),
        &mut errors,
        (bodies.len(), "SSE subscribers"),
    )
    .await?;
    let subscribers: Vec<_> = bodies
        .into_iter()
        .map(|b| tokio::spawn(subscriber(b, run.shared.clone(), run.stop_rx.clone())))
        .collect();
    let outcome = publish_window(
        run.pubs,
        &target,
        &run.shared,
        &plan,
        probe.as_ref(),
        subscribers,
        run.stop_tx,
        &mut errors,
    )
    .await?;
    Ok(outcome.report(
        "sse",
        "sse",
        &target.url,
        run.connections,
        run.setup_s,
        errors,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_percent_encoded() {
        assert_eq!(
            form_query("chat:a b", Some("x.y")),
            "channel=chat%3Aa+b&token=x.y"
        );
        assert_eq!(form_query("c", None), "channel=c");
    }
}
