//! H3, H4: stable error codes for a refused connection, a timeout and a cancellation.
#![allow(clippy::unwrap_used)]

mod http_support;

use std::time::Duration;

use ferry_client::http::{CancellationToken, ErrorCode, Http, RetryPolicy};
use http_support::{Hub, Script, ScriptedServer, WAIT, closed_port, http};

#[tokio::test]
async fn refused_connection_is_connection_error() {
    let addr = closed_port();
    let e = http()
        .get(&format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ConnectionError, "{e:?}");
    assert!(e.is_connect());
    assert_eq!(
        e.url().map(|u| u.as_str()),
        Some(format!("http://{addr}/").as_str())
    );
    assert!(e.to_string().starts_with("CONNECTION_ERROR: "), "{e}");
}

#[tokio::test]
async fn refused_connection_is_retried_then_reported() {
    let addr = closed_port();
    let http = Http::builder()
        .retry(RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    // Even a POST: nothing reached a server, so repeating it is safe.
    let e = http
        .post(&format!("http://{addr}/"))
        .text("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ConnectionError);
}

#[tokio::test]
async fn total_timeout_is_timeout() {
    let hub = Hub::start().await;
    let e = http()
        .get(&hub.url("/test/delay/5"))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e:?}");
    assert!(e.is_timeout());

    let client = Http::builder()
        .timeout(Some(Duration::from_millis(200)))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let e = client
        .get(&hub.url("/test/delay/5"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[tokio::test]
async fn connect_timeout_is_timeout() {
    // A listener that never accepts, with its accept queue filled: the kernel drops
    // further SYNs, so connecting hangs until the connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let pending = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        );
        if let Ok(Ok(stream)) = pending.await {
            fillers.push(stream);
        }
    }
    let http = Http::builder()
        .connect_timeout(Some(Duration::from_millis(300)))
        .timeout(None)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let e = tokio::time::timeout(WAIT, http.get(&format!("http://{addr}/")).send())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e:?}");
    assert!(
        e.message().contains("could not connect within 0.3 s"),
        "{e}"
    );
    drop(listener);
}

#[tokio::test]
async fn timeout_covers_a_stalled_body() {
    let server = ScriptedServer::start(|_| Script::Stall).await;
    let r = http()
        .get(&server.url("/"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap();
    let e = r.bytes().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e:?}");
}

#[tokio::test]
async fn cancelling_an_in_flight_request_is_cancelled() {
    let mut server = ScriptedServer::start(|_| Script::Hang).await;
    let token = CancellationToken::new();
    let request = tokio::spawn({
        let token = token.clone();
        let url = server.url("/slow");
        async move { http().get(&url).cancel_token(token).send().await }
    });
    // The server has the request: it is in flight.
    let head = tokio::time::timeout(WAIT, server.requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("GET /slow "));
    token.cancel();
    let e = tokio::time::timeout(WAIT, request)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cancelled);
    assert!(e.is_cancelled());
    // And the connection is given up.
    tokio::time::timeout(WAIT, server.closed.recv())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn cancelling_while_reading_the_body_is_cancelled() {
    let mut server = ScriptedServer::start(|_| Script::Stall).await;
    let token = CancellationToken::new();
    let r = http()
        .get(&server.url("/"))
        .cancel_token(token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reading = tokio::spawn(r.bytes());
    token.cancel();
    let e = tokio::time::timeout(WAIT, reading)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Cancelled);
    tokio::time::timeout(WAIT, server.closed.recv())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_token_cancelled_before_sending_sends_nothing() {
    let server = ScriptedServer::start(|_| Script::Reply("never")).await;
    let token = CancellationToken::new();
    token.cancel();
    let e = http()
        .get(&server.url("/"))
        .cancel_token(token)
        .send()
        .await
        .unwrap_err();
    assert!(e.is_cancelled());
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
