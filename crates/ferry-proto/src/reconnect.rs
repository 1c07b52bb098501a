//! Reconnect, backoff and heartbeat policy for a client connection (SPEC W3–W5), as a
//! sans-IO state machine.
//!
//! [`Reconnector`] owns no socket and reads no clock. The driver (the WebSocket client
//! task) reports what happened — `opened`, `closed`, `pong_received`, ... — with the
//! current time, and performs the [`Action`]s it gets back. Between events it sleeps until
//! [`Reconnector::poll_timeout`] and then calls [`Reconnector::handle_timeout`], the way
//! `quinn-proto` is driven:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ferry_proto::reconnect::{Action, ConnectionState, ReconnectConfig, Reconnector};
//!
//! let mut rc = Reconnector::new(ReconnectConfig::default(), || 0.5);
//! let t0 = Instant::now();
//! assert_eq!(rc.connect_requested(t0), [Action::Connect]);
//! rc.opened(t0);
//! // The server goes away without a close frame (1006).
//! let actions = rc.closed(t0 + Duration::from_secs(1), None);
//! let retry_at = rc.poll_timeout().expect("a reconnect is scheduled");
//! assert_eq!(actions, [Action::WaitUntil(retry_at)]);
//! assert!(matches!(rc.state(), ConnectionState::Reconnecting { attempt: 1, .. }));
//! assert_eq!(rc.handle_timeout(retry_at), [Action::Connect]);
//! ```
//!
//! Jitter comes from a sampler the driver supplies (`rand::random::<f64>` in production,
//! a constant or a script in tests), so the policy itself stays deterministic.

use std::fmt;
use std::time::{Duration, Instant};

/// Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS
/// Architecture Blog): the delay before attempt `n` is `u × min(max, initial ×
/// multiplier^(n-1))` for a uniform random sample `u` in `[0, 1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first delay. Default 500 ms: quick enough that a blip is invisible,
    /// slow enough not to hammer a server that is restarting.
    pub initial: Duration,
    /// The ceiling never grows past this. Default 30 s: a user waits at most that long
    /// after the server is back.
    pub max: Duration,
    /// Growth factor of the ceiling per attempt. Default 2.0. Values below 1.0 (and NaN)
    /// are treated as 1.0: a backoff never shrinks.
    pub multiplier: f64,
    /// Give up after this many consecutive failed attempts. Default `None`: retry forever,
    /// which is what a long-lived app connection wants.
    pub max_attempts: Option<u32>,
    /// A connection that stayed open at least this long resets the attempt counter when it
    /// drops. Default 10 s: long enough that a server accepting and then immediately
    /// closing connections still backs off.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
            stable_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The capped exponential ceiling for attempt `attempt` (1-based; 0 is treated as 1):
    /// `min(max, initial × multiplier^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        // An infinite or unrepresentable product is past any cap.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before attempt `attempt` for the random sample `u` in `[0, 1)`:
    /// `ceiling(attempt) × u`. A `u` outside `[0, 1]` (or NaN) is clamped into it, so the
    /// result is always within `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, u: f64) -> Duration {
        let u = if u > 0.0 { u.min(1.0) } else { 0.0 };
        let ceiling = self.ceiling(attempt);
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * u)
            .unwrap_or(ceiling)
            .min(ceiling)
    }
}

/// Heartbeat settings (SPEC W5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Send a ping this often while the connection is open. Default 25 s: under the 30 s
    /// idle timeout of common proxies and load balancers.
    pub interval: Duration,
    /// After a ping, the connection is dead if nothing at all (a pong or any message)
    /// arrives within this time. Default 10 s.
    pub pong_timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything that shapes a [`Reconnector`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectConfig {
    /// Delays between attempts. Default: [`Backoff::default`].
    pub backoff: Backoff,
    /// Pings while open; `None` disables them. Default: [`Heartbeat::default`].
    pub heartbeat: Option<Heartbeat>,
    /// Also reconnect after a normal (1000) or policy (1008) close. Default `false`: the
    /// server meant it, and reconnecting blindly after a policy close (auth, abuse) only
    /// earns another one.
    pub reconnect_on_normal_close: bool,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            backoff: Backoff::default(),
            heartbeat: Some(Heartbeat::default()),
            reconnect_on_normal_close: false,
        }
    }
}

/// The observable state of a connection (SPEC W3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected; messages flow.
    Open,
    /// The user asked to close; waiting for the transport to finish the close handshake.
    Closing,
    /// Not connected and not going to be: never started, closed by the user, closed by the
    /// server with a code that forbids reconnecting, or given up after too many attempts.
    Closed,
    /// Waiting `delay` before attempt number `attempt` (1 for the first retry).
    Reconnecting {
        /// Which attempt this wait precedes, counting from 1 since the last stable
        /// connection.
        attempt: u32,
        /// The jittered delay chosen for this attempt.
        delay: Duration,
    },
}

/// What the driver must do. Actions come back in the order they must be performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a connection attempt; report [`Reconnector::opened`] or
    /// [`Reconnector::connect_failed`].
    Connect,
    /// Send a ping on the open connection.
    SendPing,
    /// Start the close handshake (the user asked to close) or, while connecting, abandon
    /// the attempt. Report [`Reconnector::closed`] when the transport is done.
    Close,
    /// The peer stopped answering: drop the connection now, without a close handshake.
    /// Do not report it as closed; the policy already moved on.
    CloseDead,
    /// A reconnect is scheduled at this instant ([`Reconnector::poll_timeout`] says the
    /// same); useful to tell the user "reconnecting in 3 s".
    WaitUntil(Instant),
    /// Too many failed attempts: the state is now [`ConnectionState::Closed`] for good.
    GiveUp,
}

/// Sans-IO reconnect, backoff and heartbeat state machine (SPEC W3–W5).
///
/// Every input takes `now`, the caller's current time; inputs that make no sense in the
/// current state (a stale `opened` after the user closed, a pong while reconnecting) are
/// ignored rather than treated as errors, because the driver may race with itself.
pub struct Reconnector {
    config: ReconnectConfig,
    jitter: Box<dyn FnMut() -> f64 + Send>,
    state: ConnectionState,
    /// Consecutive attempts since the last stable connection.
    attempt: u32,
    /// When the pending reconnect is due (in `Reconnecting`).
    retry_at: Option<Instant>,
    /// When the current connection opened (in `Open`).
    opened_at: Option<Instant>,
    /// When the next ping is due (in `Open` with a heartbeat).
    next_ping: Option<Instant>,
    /// When an unanswered ping makes the connection dead (in `Open`, after a ping).
    pong_deadline: Option<Instant>,
}

impl fmt::Debug for Reconnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnector")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("attempt", &self.attempt)
            .field("retry_at", &self.retry_at)
            .field("opened_at", &self.opened_at)
            .field("next_ping", &self.next_ping)
            .field("pong_deadline", &self.pong_deadline)
            .finish_non_exhaustive()
    }
}

/// Far enough ahead to mean "never" and still representable on every platform.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + d` without the panic `Instant + Duration` has on overflow: an absurd `d` from a
/// config lands in the far future instead.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

fn is_due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|at| at <= now)
}

impl Reconnector {
    /// A policy in state [`ConnectionState::Closed`], waiting for
    /// [`connect_requested`](Self::connect_requested). `jitter` returns a uniform sample in
    /// `[0, 1)` each time a delay is chosen (`rand::random::<f64>`); samples outside that
    /// range are clamped.
    pub fn new(config: ReconnectConfig, jitter: impl FnMut() -> f64 + Send + 'static) -> Self {
        Reconnector {
            config,
            jitter: Box::new(jitter),
            state: ConnectionState::Closed,
            attempt: 0,
            retry_at: None,
            opened_at: None,
            next_ping: None,
            pong_deadline: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The configuration this policy runs with.
    pub fn config(&self) -> &ReconnectConfig {
        &self.config
    }

    /// The user wants to be connected. From `Closed`: start connecting with a fresh attempt
    /// counter. From `Reconnecting`: skip the rest of the wait (e.g. the network came
    /// back). Otherwise nothing to do.
    pub fn connect_requested(&mut self, _now: Instant) -> Vec<Action> {
        match self.state {
            ConnectionState::Closed => {
                self.attempt = 0;
                self.start_connecting()
            }
            ConnectionState::Reconnecting { .. } => self.start_connecting(),
            _ => Vec::new(),
        }
    }

    /// The connection attempt succeeded. Starts the heartbeat.
    pub fn opened(&mut self, now: Instant) {
        if self.state != ConnectionState::Connecting {
            return;
        }
        self.state = ConnectionState::Open;
        self.opened_at = Some(now);
        self.next_ping = self
            .config
            .heartbeat
            .as_ref()
            .map(|h| after(now, h.interval));
        self.pong_deadline = None;
    }

    /// The connection attempt failed (refused, TLS, handshake rejected, timeout): schedule
    /// the next attempt or give up.
    pub fn connect_failed(&mut self, now: Instant) -> Vec<Action> {
        if self.state != ConnectionState::Connecting {
            return Vec::new();
        }
        self.schedule_reconnect(now)
    }

    /// The transport ended: a close frame with `code`, or `None` when there was none
    /// (network error, EOF — 1006 in WebSocket terms). After a user close (`Closing`) this
    /// completes it. Otherwise the connection was lost: reconnect, unless the code is 1000
    /// or 1008 and [`ReconnectConfig::reconnect_on_normal_close`] is off.
    pub fn closed(&mut self, now: Instant, code: Option<u16>) -> Vec<Action> {
        match self.state {
            ConnectionState::Closing => {
                self.state = ConnectionState::Closed;
                Vec::new()
            }
            ConnectionState::Open | ConnectionState::Connecting => {
                let final_close = matches!(code, Some(1000 | 1008));
                if final_close && !self.config.reconnect_on_normal_close {
                    self.clear_connection();
                    self.state = ConnectionState::Closed;
                    return Vec::new();
                }
                self.schedule_reconnect(now)
            }
            ConnectionState::Closed | ConnectionState::Reconnecting { .. } => Vec::new(),
        }
    }

    /// The user closes: no reconnect. An open connection goes to `Closing` until
    /// [`closed`](Self::closed); anything else is `Closed` at once.
    pub fn close_requested(&mut self, _now: Instant) -> Vec<Action> {
        let previous = self.state;
        self.clear_connection();
        self.retry_at = None;
        match previous {
            ConnectionState::Open => {
                self.state = ConnectionState::Closing;
                vec![Action::Close]
            }
            ConnectionState::Connecting => {
                self.state = ConnectionState::Closed;
                vec![Action::Close]
            }
            ConnectionState::Reconnecting { .. } => {
                self.state = ConnectionState::Closed;
                Vec::new()
            }
            ConnectionState::Closing | ConnectionState::Closed => Vec::new(),
        }
    }

    /// A pong arrived: the connection is alive.
    pub fn pong_received(&mut self, now: Instant) {
        self.message_received(now);
    }

    /// Any inbound traffic arrived (a message, a ping, a pong): the connection is alive,
    /// which answers an outstanding ping as well as a pong would.
    pub fn message_received(&mut self, _now: Instant) {
        if self.state == ConnectionState::Open {
            self.pong_deadline = None;
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work: the
    /// reconnect time, the next ping or the pong deadline. `None`: nothing is scheduled
    /// (connecting, closing, closed, or open without heartbeat).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ConnectionState::Reconnecting { .. } => self.retry_at,
            ConnectionState::Open => match (self.next_ping, self.pong_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => None,
        }
    }

    /// Do whatever is due at `now`. Calling it early, late or twice is harmless: only
    /// deadlines at or before `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            ConnectionState::Reconnecting { .. } if is_due(self.retry_at, now) => {
                self.start_connecting()
            }
            ConnectionState::Open => {
                if is_due(self.pong_deadline, now) {
                    let mut actions = vec![Action::CloseDead];
                    actions.extend(self.schedule_reconnect(now));
                    return actions;
                }
                let Some(heartbeat) = &self.config.heartbeat else {
                    return Vec::new();
                };
                if !is_due(self.next_ping, now) {
                    return Vec::new();
                }
                self.next_ping = Some(after(now, heartbeat.interval));
                // With an outstanding ping, the earlier deadline stands.
                if self.pong_deadline.is_none() {
                    self.pong_deadline = Some(after(now, heartbeat.pong_timeout));
                }
                vec![Action::SendPing]
            }
            _ => Vec::new(),
        }
    }

    fn start_connecting(&mut self) -> Vec<Action> {
        self.retry_at = None;
        self.state = ConnectionState::Connecting;
        vec![Action::Connect]
    }

    fn clear_connection(&mut self) {
        self.opened_at = None;
        self.next_ping = None;
        self.pong_deadline = None;
    }

    /// The connection or attempt is gone and the policy allows another: pick the delay.
    fn schedule_reconnect(&mut self, now: Instant) -> Vec<Action> {
        let stable_after = self.config.backoff.stable_after;
        let stable = self
            .opened_at
            .is_some_and(|at| now.saturating_duration_since(at) >= stable_after);
        if stable {
            self.attempt = 0;
        }
        self.clear_connection();
        let attempt = self.attempt.saturating_add(1);
        if self
            .config
            .backoff
            .max_attempts
            .is_some_and(|max| attempt > max)
        {
            self.state = ConnectionState::Closed;
            self.retry_at = None;
            return vec![Action::GiveUp];
        }
        self.attempt = attempt;
        let delay = self.config.backoff.delay(attempt, (self.jitter)());
        let at = after(now, delay);
        self.retry_at = Some(at);
        self.state = ConnectionState::Reconnecting { attempt, delay };
        vec![Action::WaitUntil(at)]
    }
}

#[cfg(test)]
mod tests;
