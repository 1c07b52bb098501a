//! The server side of a hub connection's clock, sans-IO: the authentication deadline,
//! token expiry with its grace period, the idle timeout, server pings and the pong
//! deadline. The WebSocket transport feeds it `now` and what happened (a frame from the
//! peer, an authentication, a long write) and does what it answers; the tests below drive
//! it by hand, without sockets or sleeps.

use std::time::{Duration, Instant};

use crate::CloseCode;

/// The timing rules of a connection (`limits.*` of the hub's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A connection must authenticate within this long after it opens.
    pub auth_timeout: Duration,
    /// After its token expires, a connection may send a fresh one for this long.
    pub auth_refresh_grace: Duration,
    /// A server ping is sent this long after the previous one was answered.
    pub ping_interval: Duration,
    /// A ping must be answered (by any frame) within this long.
    pub pong_timeout: Duration,
    /// A connection with no frame from the peer for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// What the transport must do when the clock says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Send a ping.
    Ping,
    /// The token expired: tell the peer (`AUTH_EXPIRED`) it has `grace` to send a new one.
    TokenExpired {
        /// Time left to refresh.
        grace: Duration,
    },
    /// The peer did not authenticate in time: say so (`AUTH_REQUIRED`), then close.
    AuthTimeout,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// Where authentication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Pending {
        deadline: Instant,
    },
    Ready {
        expires: Option<Instant>,
    },
    /// The token expired; a fresh one is accepted until `close_at`.
    Expired {
        close_at: Instant,
    },
}

/// The clock of one server-side connection. The limits are passed in rather than kept:
/// every connection of a server shares them, and this struct lives in each one's task.
#[derive(Debug, Clone)]
pub struct SessionClock {
    auth: Auth,
    last_seen: Instant,
    idle_check: Option<Instant>,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
}

impl SessionClock {
    /// A connection opened at `now`, not yet authenticated.
    pub fn new(limits: &SessionLimits, now: Instant) -> SessionClock {
        SessionClock {
            auth: Auth::Pending {
                deadline: now + limits.auth_timeout,
            },
            last_seen: now,
            idle_check: limits.idle_timeout.map(|idle| now + idle),
            next_ping: now + limits.ping_interval,
            pong_deadline: None,
        }
    }

    /// The connection authenticated (or was let in anonymously); its token expires at
    /// `expires` (`None`: never). Also a refresh after expiry.
    pub fn authenticated(&mut self, expires: Option<Instant>) {
        self.auth = Auth::Ready { expires };
    }

    /// Whether it authenticated and its token has not expired.
    pub fn is_ready(&self) -> bool {
        matches!(self.auth, Auth::Ready { .. })
    }

    /// Whether its token expired and a fresh one is awaited.
    pub fn is_expired(&self) -> bool {
        matches!(self.auth, Auth::Expired { .. })
    }

    /// A frame arrived from the peer: it is alive (any frame answers a ping).
    pub fn on_peer_frame(&mut self, now: Instant) {
        self.last_seen = now;
        self.pong_deadline = None;
    }

    /// A write held the connection for a while, so the peer's frames (a pong among them)
    /// went unread: give the read side a second before an outstanding ping counts as
    /// unanswered. Only then: a peer that never answers but keeps taking frequent
    /// deliveries must not push its deadline forward forever.
    pub fn write_held(&mut self, now: Instant) {
        if let Some(deadline) = self.pong_deadline.as_mut() {
            *deadline = (*deadline).max(now + Duration::from_secs(1));
        }
    }

    /// The next instant at which [`SessionClock::on_timer`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        let mut deadline = self.pong_deadline.unwrap_or(self.next_ping);
        if let Some(idle) = self.idle_check {
            deadline = deadline.min(idle);
        }
        match self.auth {
            Auth::Pending { deadline: d } => deadline.min(d),
            Auth::Ready { expires: Some(at) } | Auth::Expired { close_at: at } => deadline.min(at),
            Auth::Ready { expires: None } => deadline,
        }
    }

    /// Run what is due at `now`; the events are for the transport to carry out, in
    /// order, and a `Close` or `AuthTimeout` ends the connection. While a write is pending
    /// (`writing`), the ping, pong and idle timers wait (the peer's frames are not being
    /// read); authentication deadlines and token expiry run either way.
    pub fn on_timer(
        &mut self,
        limits: &SessionLimits,
        now: Instant,
        writing: bool,
        events: &mut Vec<SessionEvent>,
    ) {
        match self.auth {
            Auth::Pending { deadline } if now >= deadline => {
                events.push(SessionEvent::AuthTimeout);
                return;
            }
            Auth::Expired { close_at } if now >= close_at => {
                events.push(SessionEvent::Close(
                    CloseCode::POLICY_VIOLATION,
                    "token expired",
                ));
                return;
            }
            Auth::Ready { expires: Some(at) } if now >= at => {
                self.auth = Auth::Expired {
                    close_at: now + limits.auth_refresh_grace,
                };
                events.push(SessionEvent::TokenExpired {
                    grace: limits.auth_refresh_grace,
                });
            }
            _ => {}
        }
        if writing {
            return;
        }
        if let Some(deadline) = self.pong_deadline {
            if now >= deadline {
                events.push(SessionEvent::Close(
                    CloseCode::INTERNAL_ERROR,
                    "ping timeout",
                ));
                return;
            }
        } else if now >= self.next_ping {
            events.push(SessionEvent::Ping);
            self.pong_deadline = Some(now + limits.pong_timeout);
            self.next_ping = now + limits.ping_interval;
        }
        if let (Some(check), Some(idle)) = (self.idle_check, limits.idle_timeout)
            && now >= check
        {
            if now.duration_since(self.last_seen) >= idle {
                events.push(SessionEvent::Close(
                    CloseCode::POLICY_VIOLATION,
                    "idle timeout",
                ));
                return;
            }
            self.idle_check = Some(self.last_seen + idle);
        }
    }
}

/// The command rate limit of one connection: a token bucket of `burst` commands refilled
/// at `per_second`, with the run of refusals counted so that persistent abuse can be told
/// from a burst. 24 bytes, where a general-purpose limiter takes three times that in
/// every connection's task.
#[derive(Debug, Clone)]
pub struct CommandBucket {
    tokens: f32,
    strikes: u32,
    updated: Instant,
}

/// What the bucket says about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Run it.
    Allowed,
    /// Refuse it (`RATE_LIMIT_EXCEEDED`); this many refusals in a row so far.
    Refused {
        /// Refusals in a row, this one included.
        strikes: u32,
    },
}

impl CommandBucket {
    /// A full bucket at `now`.
    pub fn new(burst: u32, now: Instant) -> CommandBucket {
        CommandBucket {
            tokens: burst.max(1) as f32,
            strikes: 0,
            updated: now,
        }
    }

    /// Take `cost` tokens at `now` (a batch costs one per command), refilled at
    /// `per_second` up to `burst`.
    pub fn take(&mut self, cost: u32, per_second: u32, burst: u32, now: Instant) -> RateVerdict {
        let burst = burst.max(1) as f32;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f32();
        self.tokens = (self.tokens + elapsed * per_second.max(1) as f32).min(burst);
        self.updated = now;
        let cost = cost.max(1) as f32;
        if self.tokens >= cost {
            self.tokens -= cost;
            self.strikes = 0;
            RateVerdict::Allowed
        } else {
            self.strikes = self.strikes.saturating_add(1);
            RateVerdict::Refused {
                strikes: self.strikes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limits() -> SessionLimits {
        SessionLimits {
            auth_timeout: 10 * S,
            auth_refresh_grace: 5 * S,
            ping_interval: 25 * S,
            pong_timeout: 10 * S,
            idle_timeout: Some(60 * S),
        }
    }

    fn run(clock: &mut SessionClock, now: Instant) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        clock.on_timer(&limits(), now, false, &mut events);
        events
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate_and_counts_strikes() {
        let t0 = Instant::now();
        let mut bucket = CommandBucket::new(5, t0);
        for _ in 0..5 {
            assert_eq!(bucket.take(1, 10, 5, t0), RateVerdict::Allowed);
        }
        assert_eq!(
            bucket.take(1, 10, 5, t0),
            RateVerdict::Refused { strikes: 1 }
        );
        assert_eq!(
            bucket.take(1, 10, 5, t0),
            RateVerdict::Refused { strikes: 2 }
        );
        // 100 ms at 10/s refills one; an allowed command resets the strikes.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(bucket.take(1, 10, 5, later), RateVerdict::Allowed);
        assert_eq!(
            bucket.take(1, 10, 5, later),
            RateVerdict::Refused { strikes: 1 }
        );
        // A batch costs one token per command and never more than the burst refills.
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(
            bucket.take(6, 10, 5, much_later),
            RateVerdict::Refused { strikes: 2 }
        );
        assert_eq!(bucket.take(5, 10, 5, much_later), RateVerdict::Allowed);
    }

    #[test]
    fn the_auth_deadline_closes_a_connection_that_never_authenticates() {
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits(), t0);
        assert_eq!(clock.next_deadline(), t0 + 10 * S);
        assert!(run(&mut clock, t0 + 9 * S).is_empty());
        assert_eq!(
            run(&mut clock, t0 + 10 * S),
            vec![SessionEvent::AuthTimeout]
        );
        // Authenticated in time: the deadline is gone.
        let mut clock = SessionClock::new(&limits(), t0);
        clock.authenticated(None);
        assert!(run(&mut clock, t0 + 10 * S).is_empty());
        assert_eq!(clock.next_deadline(), t0 + 25 * S, "next: the ping");
    }

    #[test]
    fn an_expired_token_gets_a_grace_period_and_a_refresh_keeps_the_connection() {
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits(), t0);
        clock.authenticated(Some(t0 + 3 * S));
        assert_eq!(clock.next_deadline(), t0 + 3 * S);
        assert_eq!(
            run(&mut clock, t0 + 3 * S),
            vec![SessionEvent::TokenExpired { grace: 5 * S }]
        );
        assert!(clock.is_expired() && !clock.is_ready());
        assert_eq!(clock.next_deadline(), t0 + 8 * S);
        // Refreshed within the grace: ready again, nothing closes at the old deadline.
        clock.authenticated(Some(t0 + 100 * S));
        assert!(clock.is_ready());
        assert!(run(&mut clock, t0 + 8 * S).is_empty());
        // Not refreshed: closed 1008 when the grace ends, even during a write.
        let mut clock = SessionClock::new(&limits(), t0);
        clock.authenticated(Some(t0 + 3 * S));
        run(&mut clock, t0 + 3 * S);
        let mut events = Vec::new();
        clock.on_timer(&limits(), t0 + 8 * S, true, &mut events);
        assert_eq!(
            events,
            vec![SessionEvent::Close(
                CloseCode::POLICY_VIOLATION,
                "token expired"
            )]
        );
    }

    #[test]
    fn a_missed_pong_closes_and_any_frame_answers_a_ping() {
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits(), t0);
        clock.authenticated(None);
        assert_eq!(run(&mut clock, t0 + 25 * S), vec![SessionEvent::Ping]);
        assert_eq!(clock.next_deadline(), t0 + 35 * S, "the pong deadline");
        // A frame from the peer answers it; the next ping comes an interval later.
        clock.on_peer_frame(t0 + 26 * S);
        assert!(run(&mut clock, t0 + 35 * S).is_empty());
        assert_eq!(run(&mut clock, t0 + 50 * S), vec![SessionEvent::Ping]);
        // Unanswered: closed when the deadline passes.
        assert_eq!(
            run(&mut clock, t0 + 60 * S),
            vec![SessionEvent::Close(
                CloseCode::INTERNAL_ERROR,
                "ping timeout"
            )]
        );
    }

    #[test]
    fn a_long_write_moves_the_pong_deadline_once_and_timers_wait_for_writes() {
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits(), t0);
        clock.authenticated(None);
        run(&mut clock, t0 + 25 * S);
        let mut events = Vec::new();
        clock.on_timer(&limits(), t0 + 40 * S, true, &mut events);
        assert!(events.is_empty(), "pong and idle wait while writing");
        clock.write_held(t0 + 40 * S);
        assert_eq!(clock.next_deadline(), t0 + 41 * S);
        assert_eq!(
            run(&mut clock, t0 + 41 * S),
            vec![SessionEvent::Close(
                CloseCode::INTERNAL_ERROR,
                "ping timeout"
            )]
        );
    }

    #[test]
    fn an_idle_connection_is_closed_and_activity_pushes_the_check() {
        let t0 = Instant::now();
        let quiet = SessionLimits {
            ping_interval: 1000 * S,
            ..limits()
        };
        let at = |clock: &mut SessionClock, limits: &SessionLimits, now| {
            let mut events = Vec::new();
            clock.on_timer(limits, now, false, &mut events);
            events
        };
        let mut clock = SessionClock::new(&quiet, t0);
        clock.authenticated(None);
        clock.on_peer_frame(t0 + 30 * S);
        assert!(
            at(&mut clock, &quiet, t0 + 60 * S).is_empty(),
            "active 30 s ago"
        );
        assert_eq!(clock.next_deadline(), t0 + 90 * S);
        assert_eq!(
            at(&mut clock, &quiet, t0 + 90 * S),
            vec![SessionEvent::Close(
                CloseCode::POLICY_VIOLATION,
                "idle timeout"
            )]
        );
        let never = SessionLimits {
            idle_timeout: None,
            ..quiet
        };
        let mut clock = SessionClock::new(&never, t0);
        clock.authenticated(None);
        assert!(at(&mut clock, &never, t0 + 500 * S).is_empty());
    }
}
