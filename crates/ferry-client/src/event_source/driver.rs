//! The EventSource task: request, parse, deliver, and reconnect with `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::reconnect::{Backoff, ConnectionState};
use ferry_proto::sse::SseParser;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{Error, ErrorKind, Event, Shared};
use crate::ws::state::lock;

pub(crate) enum Control {
    Close,
    ReconnectNow,
}

pub(crate) struct Driver {
    pub shared: Arc<Shared>,
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    pub headers: http::HeaderMap,
    pub filter: Vec<String>,
    pub retry: Duration,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub events: mpsc::Sender<Event>,
    pub first_open: Option<oneshot::Sender<Result<(), Error>>>,
}

/// How one connection ended.
enum Outcome {
    /// The user closed (or every handle is gone).
    Closed,
    /// Stop for good: 204, a non-retryable status, the wrong content type.
    Final(Option<Error>),
    /// Reconnect; `opened` says whether the stream was established first.
    Retry { opened: bool, error: Error },
}

/// `head`, followed by what the server said: its `{code, message}` error, or the start of
/// a text body. Read with a small cap and a short deadline, so that a hostile or slow
/// body cannot hold the client.
async fn error_body(head: String, response: reqwest::Response) -> String {
    const CAP: usize = 4096;
    let read = async {
        let mut body = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= CAP {
                body.truncate(CAP);
                break;
            }
        }
        body
    };
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .unwrap_or_default();
    if let Ok(p) = serde_json::from_slice::<ferry_proto::ErrorPayload>(&body) {
        return format!("{head}: {}: {}", p.code, p.message);
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        head
    } else {
        format!("{head}: {}", text.chars().take(300).collect::<String>())
    }
}

fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

impl Driver {
    pub async fn run(mut self) {
        // Consecutive attempts since the last stream that opened.
        let mut attempt: u32 = 0;
        loop {
            self.shared.state.set(ConnectionState::Connecting);
            let outcome = self.connect_once().await;
            let error = match outcome {
                Outcome::Closed => break,
                Outcome::Final(error) => {
                    if let Some(error) = error {
                        self.fail_first_or_report(error).await;
                    }
                    break;
                }
                Outcome::Retry { opened, error } => {
                    if opened {
                        attempt = 0;
                    }
                    error
                }
            };
            if let Some(first) = self.first_open.take() {
                // `connect()` reports the first failure instead of retrying silently.
                let _ = first.send(Err(error));
                break;
            }
            attempt = attempt.saturating_add(1);
            if self.backoff.max_attempts.is_some_and(|max| attempt > max) {
                self.deliver(Event::Error(error)).await;
                break;
            }
            // The server's reconnection time, plus backoff when attempts keep failing.
            let delay = if attempt <= 1 {
                self.retry
            } else {
                self.retry
                    .saturating_add(self.backoff.delay(attempt - 1, rand::random::<f64>()))
            };
            if !self.deliver(Event::Error(error)).await {
                break;
            }
            self.shared
                .state
                .set(ConnectionState::Reconnecting { attempt, delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                control = self.control.recv() => match control {
                    Some(Control::ReconnectNow) => {}
                    Some(Control::Close) | None => break,
                },
            }
        }
        self.shared.state.set(ConnectionState::Closed);
        self.shared.state.finish();
    }

    async fn fail_first_or_report(&mut self, error: Error) {
        match self.first_open.take() {
            Some(first) => {
                let _ = first.send(Err(error));
            }
            None => {
                self.deliver(Event::Error(error)).await;
            }
        }
    }

    /// Hand an event to the application, unless it closes meanwhile. Returns false when
    /// the EventSource is closing.
    async fn deliver(&mut self, event: Event) -> bool {
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            control = self.control.recv() => match control {
                Some(Control::ReconnectNow) => true,
                Some(Control::Close) | None => false,
            },
        }
    }

    async fn connect_once(&mut self) -> Outcome {
        let last_id = lock(&self.shared.last_event_id).clone();
        let mut request = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .header("accept", "text/event-stream")
            .header("cache-control", "no-cache");
        if !last_id.is_empty() {
            request = request.header("last-event-id", last_id.as_str());
        }
        let send = tokio::time::timeout(self.connect_timeout, request.send());
        let response = tokio::select! {
            response = send => response,
            control = self.control.recv() => match control {
                Some(Control::ReconnectNow) => return Outcome::Retry {
                    opened: false,
                    error: Error::new(ErrorKind::Connection, "reconnect requested"),
                },
                Some(Control::Close) | None => return Outcome::Closed,
            },
        };
        let response = match response {
            Err(_) => {
                return Outcome::Retry {
                    opened: false,
                    error: Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "no response from {} within {:?}",
                            self.url, self.connect_timeout
                        ),
                    ),
                };
            }
            Ok(Err(e)) => {
                return Outcome::Retry {
                    opened: false,
                    error: request_error(&self.url, &e),
                };
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status().as_u16();
        if status == 204 {
            // The server's way of saying "stop reconnecting".
            return Outcome::Final(None);
        }
        if status != 200 {
            let head = format!("{} answered HTTP {}", self.url, response.status());
            let error = Error::http_status(status, error_body(head, response).await);
            return if retryable_status(status) {
                Outcome::Retry {
                    opened: false,
                    error,
                }
            } else {
                Outcome::Final(Some(error))
            };
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("text/event-stream") {
            return Outcome::Final(Some(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{} answered with content type `{content_type}`, not text/event-stream",
                    self.url
                ),
            )));
        }

        self.shared.state.set(ConnectionState::Open);
        if let Some(first) = self.first_open.take() {
            let _ = first.send(Ok(()));
        }
        if !self.deliver(Event::Open).await {
            return Outcome::Closed;
        }
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut parser_id = String::new();
        let mut parsed = Vec::new();
        loop {
            let idle = async {
                match self.idle_timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = idle => {
                    return Outcome::Retry {
                        opened: true,
                        error: Error::new(ErrorKind::Timeout, format!(
                            "nothing received for {:?}; reconnecting",
                            self.idle_timeout.unwrap_or_default()
                        )),
                    };
                }
                control = self.control.recv() => match control {
                    Some(Control::ReconnectNow) => continue,
                    Some(Control::Close) | None => return Outcome::Closed,
                },
            };
            let bytes = match chunk {
                None => {
                    return Outcome::Retry {
                        opened: true,
                        error: Error::new(ErrorKind::ConnectionLost, "the server ended the stream"),
                    };
                }
                Some(Err(e)) => {
                    return Outcome::Retry {
                        opened: true,
                        error: request_error(&self.url, &e),
                    };
                }
                Some(Ok(bytes)) => bytes,
            };
            let result = parser.feed(&bytes, &mut parsed);
            // The parser's last event ID starts empty on each connection; the
            // EventSource's persists, so only a change made by this stream counts.
            if parser.last_event_id() != parser_id {
                parser_id = parser.last_event_id().to_string();
                *lock(&self.shared.last_event_id) = parser_id.clone();
            }
            if let Some(retry) = parser.retry() {
                self.retry = retry;
            }
            for event in parsed.drain(..) {
                if !self.filter.is_empty() && !self.filter.contains(&event.event) {
                    continue;
                }
                if !self.deliver(Event::Message(event)).await {
                    return Outcome::Closed;
                }
            }
            if let Err(e) = result {
                return Outcome::Retry {
                    opened: true,
                    error: Error::new(ErrorKind::Protocol, format!("event stream rejected: {e}")),
                };
            }
        }
    }
}

fn request_error(url: &reqwest::Url, e: &reqwest::Error) -> Error {
    use std::error::Error as _;
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if detail.contains("certificate") || detail.to_ascii_lowercase().contains("tls") {
        ErrorKind::Tls
    } else {
        ErrorKind::Connection
    };
    Error::new(kind, format!("{url}: {detail}"))
}
