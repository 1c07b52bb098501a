//! A reconnecting Server-Sent Events client, the `EventSource` of browsers (SPEC E1–E5).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::event_source::Error> {
//! use ferry_client::event_source::{Event, EventSource};
//!
//! let es = EventSource::builder("http://127.0.0.1:8080/test/sse?count=5")
//!     .event("tick") // only `event: tick`
//!     .connect()
//!     .await?;
//! while let Some(event) = es.recv().await {
//!     match event {
//!         Event::Open => println!("open"),
//!         Event::Message(m) => println!("{} #{}: {}", m.event, m.id, m.data),
//!         Event::Error(e) => eprintln!("{e}; reconnecting"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - **Parsing** (E1) is `ferry_proto::sse::SseParser`, the WHATWG algorithm.
//! - **Reconnect** (E2): when the stream ends or fails, the client waits the server's
//!   `retry:` time (default 3 s) and reconnects with `Last-Event-ID` set to the last event
//!   ID it saw. Consecutive failed attempts wait longer: `retry` plus the backoff of
//!   `ferry_proto::reconnect::Backoff` (full jitter), up to `max_attempts` if set. As in
//!   browsers, `204 No Content` stops for good, and so do a non-`text/event-stream`
//!   response and an HTTP status other than 200, except 408, 429 and 5xx, which are
//!   retried.
//! - **Filtering** (E3): [`EventSourceBuilder::event`] keeps only the named event types.
//! - **State** (E4): [`EventSource::states`] reports `Connecting`, `Open`,
//!   `Reconnecting { attempt, delay }` and `Closed`; the event stream carries
//!   [`Event::Open`] and [`Event::Error`] too.
//! - **Headers and auth** (E5): [`EventSourceBuilder::header`],
//!   [`EventSourceBuilder::bearer_auth`].

mod driver;

use std::sync::Arc;
use std::time::Duration;

pub use ferry_proto::reconnect::{Backoff, ConnectionState};
pub use ferry_proto::sse::SseEvent;
use http::{HeaderName, HeaderValue};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::ws::state::{StateCell, lock};
pub use crate::ws::{Error, ErrorKind, StateStream};
use driver::{Control, Driver};

/// What an [`EventSource`] delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection opened (the first one and every reconnect).
    Open,
    /// A dispatched event: its type (`message` by default), data and the last event ID.
    Message(SseEvent),
    /// The connection failed or ended; a reconnect follows unless the state is `Closed`.
    Error(Error),
}

/// Builds an [`EventSource`].
#[derive(Debug)]
pub struct EventSourceBuilder {
    url: String,
    headers: http::HeaderMap,
    header_error: Option<Error>,
    events: Vec<String>,
    last_event_id: String,
    retry: Duration,
    backoff: Backoff,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    client: Option<reqwest::Client>,
    tls: Option<Arc<rustls::ClientConfig>>,
    capacity: usize,
}

impl EventSourceBuilder {
    fn new(url: &str) -> Self {
        EventSourceBuilder {
            url: url.to_string(),
            headers: http::HeaderMap::new(),
            header_error: None,
            events: Vec::new(),
            last_event_id: String::new(),
            retry: Duration::from_secs(3),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                ..Backoff::default()
            },
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            client: None,
            tls: None,
            capacity: 256,
        }
    }

    /// Add a request header (E5). An invalid one makes [`build`](Self::build) fail with
    /// [`ErrorKind::InvalidUrl`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => {
                self.header_error = Some(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("invalid header `{name}: {value}`"),
                ));
            }
        }
        self
    }

    /// Send `Authorization: Bearer TOKEN`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Deliver only events of this type (repeatable; E3). Default: every type.
    pub fn event(mut self, event_type: &str) -> Self {
        self.events.push(event_type.to_string());
        self
    }

    /// Start as if an event with this ID had been seen: the first request already sends
    /// `Last-Event-ID` (resume across process restarts).
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = id.to_string();
        self
    }

    /// The reconnection time until the server sends `retry:`. Default 3 s, as browsers.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Extra waiting after consecutive failed attempts, and the attempt limit
    /// (`max_attempts`, default unlimited). Default: 1 s doubling to 30 s, full jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Never reconnect: the end of the first stream (or a failed first attempt) is final.
    pub fn no_reconnect(mut self) -> Self {
        self.backoff.max_attempts = Some(0);
        self
    }

    /// Deadline for connecting and receiving the response headers. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Reconnect when nothing (not even a keep-alive comment) arrives for this long.
    /// Default `None`: wait forever, as browsers do.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Use this HTTP client (proxies, custom TLS, pooling shared with other requests).
    /// Default: a client of its own with rustls, the ring provider and the platform's
    /// trust store.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// TLS settings for `https://` (a private CA, pins: see
    /// [`TlsTrust`](crate::http::TlsTrust)) when no [`client`](Self::client) is given.
    /// Default: the platform's trust store.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Start in the background and return at once. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a malformed URL or header; [`ErrorKind::Tls`] when the
    /// default TLS settings cannot be built.
    pub fn build(self) -> Result<EventSource, Error> {
        self.spawn(None)
    }

    /// Start and wait until the first connection is open.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), or the first attempt's error (refused, timeout, HTTP
    /// status, wrong content type): `connect` does not retry a stream that never worked.
    pub async fn connect(self) -> Result<EventSource, Error> {
        let (tx, rx) = oneshot::channel();
        let es = self.spawn(Some(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(es),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(ErrorKind::Closed, "the EventSource task ended")),
        }
    }

    fn spawn(
        self,
        first_open: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<EventSource, Error> {
        if let Some(e) = self.header_error {
            return Err(e);
        }
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            Error::new(
                ErrorKind::InvalidUrl,
                format!("`{}` is not a URL: {e}", self.url),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                format!("`{}` is not an http:// or https:// URL", self.url),
            ));
        }
        let client = match self.client {
            Some(c) => c,
            None => {
                let tls = match self.tls.clone() {
                    Some(tls) => tls,
                    None => crate::ws::transport::default_tls()?,
                };
                reqwest::Client::builder()
                    .tls_backend_preconfigured((*tls).clone())
                    .connect_timeout(self.connect_timeout)
                    .build()
                    .map_err(|e| {
                        Error::new(ErrorKind::Tls, format!("cannot build the HTTP client: {e}"))
                    })?
            }
        };
        let shared = Arc::new(Shared {
            state: StateCell::new(ConnectionState::Connecting),
            last_event_id: std::sync::Mutex::new(self.last_event_id.clone()),
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel(self.capacity);
        let driver = Driver {
            shared: shared.clone(),
            client,
            url,
            headers: self.headers,
            filter: self.events,
            retry: self.retry,
            backoff: self.backoff,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            control: control_rx,
            events: events_tx,
            first_open,
        };
        tokio::spawn(driver.run());
        Ok(EventSource {
            shared,
            control: control_tx,
            events: Arc::new(Mutex::new(events_rx)),
        })
    }
}

pub(crate) struct Shared {
    pub state: StateCell,
    pub last_event_id: std::sync::Mutex<String>,
}

/// A handle to a reconnecting event stream. Clones share it; it closes when the last
/// handle is dropped.
#[derive(Clone)]
pub struct EventSource {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    events: Arc<Mutex<mpsc::Receiver<Event>>>,
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource")
            .field("state", &self.state())
            .field("last_event_id", &self.last_event_id())
            .finish_non_exhaustive()
    }
}

impl EventSource {
    /// A builder for `url` (`http://` or `https://`).
    pub fn builder(url: &str) -> EventSourceBuilder {
        EventSourceBuilder::new(url)
    }

    /// Connect to `url` with the default settings and wait until the stream is open.
    ///
    /// # Errors
    ///
    /// As [`EventSourceBuilder::connect`].
    pub async fn connect(url: &str) -> Result<EventSource, Error> {
        EventSourceBuilder::new(url).connect().await
    }

    /// The next event; `None` once closed for good and everything was taken.
    pub async fn recv(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    /// The next message event, skipping `Open` and `Error`; `None` once closed for good.
    pub async fn next_message(&self) -> Option<SseEvent> {
        loop {
            match self.recv().await? {
                Event::Message(m) => return Some(m),
                Event::Open | Event::Error(_) => {}
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.get()
    }

    /// Every state change from now on, in order (E4).
    pub fn states(&self) -> StateStream {
        StateStream::new(self.shared.state.subscribe())
    }

    /// Wait until the state satisfies `predicate`, and return it.
    pub async fn wait_for(
        &self,
        predicate: impl FnMut(&ConnectionState) -> bool,
    ) -> ConnectionState {
        self.shared.state.wait_for(predicate).await
    }

    /// The last event ID seen (sent as `Last-Event-ID` on the next reconnect).
    pub fn last_event_id(&self) -> String {
        lock(&self.shared.last_event_id).clone()
    }

    /// While waiting to reconnect, try now.
    pub fn reconnect_now(&self) {
        let _ = self.control.send(Control::ReconnectNow);
    }

    /// Close the stream and wait until closed. No reconnect follows.
    pub async fn close(&self) {
        let _ = self.control.send(Control::Close);
        self.wait_for(|s| *s == ConnectionState::Closed).await;
    }
}
