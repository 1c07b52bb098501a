//! Deterministic tests for the reconnect policy: a fake clock (`base + offset`), a
//! scripted jitter sampler, no sleeping.

use super::*;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The default config without heartbeat, so that backoff tests see no pings.
fn no_heartbeat() -> ReconnectConfig {
    ReconnectConfig {
        heartbeat: None,
        ..ReconnectConfig::default()
    }
}

/// A policy whose jitter sample is always `u`, already in `Open` at `base`.
fn open_at(config: ReconnectConfig, u: f64, base: Instant) -> Reconnector {
    let mut rc = Reconnector::new(config, move || u);
    assert_eq!(rc.connect_requested(base), [Action::Connect]);
    rc.opened(base);
    assert_eq!(rc.state(), ConnectionState::Open);
    rc
}

fn reconnecting(attempt: u32, delay: Duration) -> ConnectionState {
    ConnectionState::Reconnecting { attempt, delay }
}

#[test]
fn drop_goes_open_reconnecting_connecting_open() {
    let t0 = Instant::now();
    let mut rc = Reconnector::new(no_heartbeat(), || 0.5);
    assert_eq!(rc.state(), ConnectionState::Closed);
    assert_eq!(rc.connect_requested(t0), [Action::Connect]);
    assert_eq!(rc.state(), ConnectionState::Connecting);
    rc.opened(t0);
    assert_eq!(rc.state(), ConnectionState::Open);
    assert_eq!(rc.poll_timeout(), None);

    let t1 = t0 + secs(1);
    // Half of the first 500 ms ceiling.
    assert_eq!(rc.closed(t1, Some(1006)), [Action::WaitUntil(t1 + ms(250))]);
    assert_eq!(rc.state(), reconnecting(1, ms(250)));
    assert_eq!(rc.poll_timeout(), Some(t1 + ms(250)));

    // Too early: nothing happens.
    assert_eq!(rc.handle_timeout(t1 + ms(249)), []);
    assert_eq!(rc.state(), reconnecting(1, ms(250)));

    assert_eq!(rc.handle_timeout(t1 + ms(250)), [Action::Connect]);
    assert_eq!(rc.state(), ConnectionState::Connecting);
    assert_eq!(rc.poll_timeout(), None);
    rc.opened(t1 + ms(300));
    assert_eq!(rc.state(), ConnectionState::Open);
}

#[test]
fn backoff_ceiling_grows_and_caps() {
    let backoff = Backoff::default();
    let ceilings: Vec<Duration> = (1..=8).map(|n| backoff.ceiling(n)).collect();
    assert_eq!(
        ceilings,
        [
            ms(500),
            secs(1),
            secs(2),
            secs(4),
            secs(8),
            secs(16),
            secs(30),
            secs(30)
        ]
    );
    assert_eq!(backoff.ceiling(0), ms(500));
    assert_eq!(backoff.ceiling(u32::MAX), secs(30));

    // The same growth through the state machine, with u close to 1.
    let t0 = Instant::now();
    let mut rc = Reconnector::new(no_heartbeat(), || 0.999_999);
    rc.connect_requested(t0);
    let mut now = t0;
    for (n, ceiling) in (1u32..).zip(ceilings) {
        rc.connect_failed(now);
        let ConnectionState::Reconnecting { attempt, delay } = rc.state() else {
            panic!("expected Reconnecting, got {:?}", rc.state());
        };
        assert_eq!(attempt, n);
        assert!(
            delay <= ceiling && delay >= ceiling.mul_f64(0.999),
            "{delay:?}"
        );
        now = rc.poll_timeout().expect("scheduled");
        assert_eq!(rc.handle_timeout(now), [Action::Connect]);
    }
}

#[test]
fn full_jitter_stays_within_zero_and_the_ceiling() {
    let backoff = Backoff::default();
    for attempt in 1..=10 {
        let ceiling = backoff.ceiling(attempt);
        assert_eq!(backoff.delay(attempt, 0.0), Duration::ZERO);
        // Nanosecond rounding may land exactly on the ceiling, never above it.
        let high = backoff.delay(attempt, 1.0 - f64::EPSILON);
        assert!(
            high <= ceiling && high >= ceiling.mul_f64(0.999_999),
            "{high:?}"
        );
        assert_eq!(backoff.delay(attempt, 0.5), ceiling / 2);
        // Samples outside [0, 1) are clamped, never a panic.
        assert_eq!(backoff.delay(attempt, -1.0), Duration::ZERO);
        assert_eq!(backoff.delay(attempt, f64::NAN), Duration::ZERO);
        assert_eq!(backoff.delay(attempt, 2.0), ceiling);
        assert_eq!(backoff.delay(attempt, f64::INFINITY), ceiling);
    }
    // u = 0 reconnects at once, still through Reconnecting.
    let t0 = Instant::now();
    let mut rc = open_at(no_heartbeat(), 0.0, t0);
    assert_eq!(rc.closed(t0, None), [Action::WaitUntil(t0)]);
    assert_eq!(rc.handle_timeout(t0), [Action::Connect]);
}

#[test]
fn odd_backoff_configs_do_not_panic() {
    let shrinking = Backoff {
        multiplier: 0.5,
        ..Backoff::default()
    };
    assert_eq!(shrinking.ceiling(5), ms(500));
    let nan = Backoff {
        multiplier: f64::NAN,
        ..Backoff::default()
    };
    assert_eq!(nan.ceiling(5), ms(500));
    let infinite = Backoff {
        multiplier: f64::INFINITY,
        ..Backoff::default()
    };
    assert_eq!(infinite.ceiling(2), secs(30));
    let initial_above_max = Backoff {
        initial: secs(60),
        ..Backoff::default()
    };
    assert_eq!(initial_above_max.ceiling(1), secs(30));
    let unbounded = Backoff {
        max: Duration::MAX,
        ..Backoff::default()
    };
    assert!(unbounded.ceiling(u32::MAX) > secs(1_000_000));

    // An absurd delay schedules far in the future instead of overflowing the Instant.
    let t0 = Instant::now();
    let config = ReconnectConfig {
        backoff: Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            ..Backoff::default()
        },
        ..no_heartbeat()
    };
    let mut rc = open_at(config, 1.0, t0);
    let actions = rc.closed(t0, None);
    let at = rc.poll_timeout().expect("scheduled");
    assert_eq!(actions, [Action::WaitUntil(at)]);
    assert!(at > t0 + secs(1_000_000));
}

#[test]
fn attempt_counter_resets_after_a_stable_connection() {
    let t0 = Instant::now();
    let mut rc = Reconnector::new(no_heartbeat(), || 0.0);
    rc.connect_requested(t0);
    rc.connect_failed(t0);
    rc.handle_timeout(t0);
    rc.connect_failed(t0);
    assert_eq!(rc.state(), reconnecting(2, Duration::ZERO));
    rc.handle_timeout(t0);

    // Open for just under `stable_after`: the counter goes on.
    rc.opened(t0);
    rc.closed(t0 + secs(10) - ms(1), None);
    assert_eq!(rc.state(), reconnecting(3, Duration::ZERO));
    rc.handle_timeout(t0 + secs(10));

    // Open for exactly `stable_after`: back to attempt 1.
    let t1 = t0 + secs(20);
    rc.opened(t1);
    rc.closed(t1 + secs(10), Some(1011));
    assert_eq!(rc.state(), reconnecting(1, Duration::ZERO));
}

#[test]
fn no_reconnect_after_normal_or_policy_close() {
    for code in [1000, 1008] {
        let t0 = Instant::now();
        let mut rc = open_at(no_heartbeat(), 0.5, t0);
        assert_eq!(rc.closed(t0 + secs(1), Some(code)), [], "{code}");
        assert_eq!(rc.state(), ConnectionState::Closed);
        assert_eq!(rc.poll_timeout(), None);
        assert_eq!(rc.handle_timeout(t0 + secs(3600)), []);

        // Unless configured.
        let config = ReconnectConfig {
            reconnect_on_normal_close: true,
            ..no_heartbeat()
        };
        let mut rc = open_at(config, 0.5, t0);
        let t1 = t0 + secs(1);
        assert_eq!(rc.closed(t1, Some(code)), [Action::WaitUntil(t1 + ms(250))]);
        assert_eq!(rc.state(), reconnecting(1, ms(250)));
    }
}

#[test]
fn reconnect_after_abnormal_close() {
    for code in [
        Some(1006),
        None,
        Some(1001),
        Some(1011),
        Some(1013),
        Some(4000),
    ] {
        let t0 = Instant::now();
        let mut rc = open_at(no_heartbeat(), 0.5, t0);
        assert_eq!(rc.closed(t0, code), [Action::WaitUntil(t0 + ms(250))]);
        assert_eq!(rc.state(), reconnecting(1, ms(250)), "{code:?}");
    }
}

#[test]
fn max_attempts_then_give_up() {
    let t0 = Instant::now();
    let config = ReconnectConfig {
        backoff: Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        },
        ..no_heartbeat()
    };
    let mut rc = Reconnector::new(config, || 0.0);
    rc.connect_requested(t0);
    assert_eq!(rc.connect_failed(t0), [Action::WaitUntil(t0)]);
    assert_eq!(rc.handle_timeout(t0), [Action::Connect]);
    assert_eq!(rc.connect_failed(t0), [Action::WaitUntil(t0)]);
    assert_eq!(rc.state(), reconnecting(2, Duration::ZERO));
    assert_eq!(rc.handle_timeout(t0), [Action::Connect]);
    assert_eq!(rc.connect_failed(t0), [Action::GiveUp]);
    assert_eq!(rc.state(), ConnectionState::Closed);
    assert_eq!(rc.poll_timeout(), None);

    // A new request starts over with a fresh counter.
    assert_eq!(rc.connect_requested(t0), [Action::Connect]);
    assert_eq!(rc.connect_failed(t0), [Action::WaitUntil(t0)]);
    assert_eq!(rc.state(), reconnecting(1, Duration::ZERO));

    // Zero attempts: the first loss gives up.
    let config = ReconnectConfig {
        backoff: Backoff {
            max_attempts: Some(0),
            ..Backoff::default()
        },
        ..no_heartbeat()
    };
    let mut rc = open_at(config, 0.0, t0);
    assert_eq!(rc.closed(t0, None), [Action::GiveUp]);
    assert_eq!(rc.state(), ConnectionState::Closed);
}

#[test]
fn missed_pong_closes_dead_then_reconnects() {
    let t0 = Instant::now();
    let mut rc = open_at(ReconnectConfig::default(), 0.5, t0);
    // Defaults: ping every 25 s, pong within 10 s.
    assert_eq!(rc.poll_timeout(), Some(t0 + secs(25)));
    assert_eq!(rc.handle_timeout(t0 + secs(24)), []);
    assert_eq!(rc.handle_timeout(t0 + secs(25)), [Action::SendPing]);
    assert_eq!(rc.poll_timeout(), Some(t0 + secs(35)));

    let dead_at = t0 + secs(35);
    assert_eq!(
        rc.handle_timeout(dead_at),
        [Action::CloseDead, Action::WaitUntil(dead_at + ms(250))]
    );
    assert_eq!(rc.state(), reconnecting(1, ms(250)));
    // The driver's late report of the dropped socket changes nothing.
    assert_eq!(rc.closed(dead_at + ms(1), None), []);
    assert_eq!(rc.state(), reconnecting(1, ms(250)));
    assert_eq!(rc.handle_timeout(dead_at + ms(250)), [Action::Connect]);
}

#[test]
fn pong_or_any_message_in_time_keeps_the_connection() {
    let t0 = Instant::now();
    let mut rc = open_at(ReconnectConfig::default(), 0.5, t0);
    assert_eq!(rc.handle_timeout(t0 + secs(25)), [Action::SendPing]);
    rc.pong_received(t0 + secs(30));
    assert_eq!(rc.poll_timeout(), Some(t0 + secs(50)));
    assert_eq!(rc.handle_timeout(t0 + secs(35)), []);
    assert_eq!(rc.state(), ConnectionState::Open);

    assert_eq!(rc.handle_timeout(t0 + secs(50)), [Action::SendPing]);
    rc.message_received(t0 + secs(59));
    assert_eq!(rc.handle_timeout(t0 + secs(60)), []);
    assert_eq!(rc.state(), ConnectionState::Open);

    // Traffic before a ping does not answer it.
    rc.message_received(t0 + secs(74));
    assert_eq!(rc.handle_timeout(t0 + secs(75)), [Action::SendPing]);
    assert_eq!(rc.handle_timeout(t0 + secs(85))[0], Action::CloseDead);
}

#[test]
fn outstanding_ping_keeps_its_deadline() {
    let t0 = Instant::now();
    let config = ReconnectConfig {
        heartbeat: Some(Heartbeat {
            interval: secs(5),
            pong_timeout: secs(12),
        }),
        ..ReconnectConfig::default()
    };
    let mut rc = open_at(config, 0.5, t0);
    assert_eq!(rc.handle_timeout(t0 + secs(5)), [Action::SendPing]);
    assert_eq!(rc.handle_timeout(t0 + secs(10)), [Action::SendPing]);
    assert_eq!(rc.handle_timeout(t0 + secs(15)), [Action::SendPing]);
    // Dead 12 s after the first unanswered ping, not after the last one.
    assert_eq!(rc.poll_timeout(), Some(t0 + secs(17)));
    assert_eq!(rc.handle_timeout(t0 + secs(17))[0], Action::CloseDead);
}

#[test]
fn user_close_never_reconnects() {
    let t0 = Instant::now();
    let mut rc = open_at(ReconnectConfig::default(), 0.5, t0);
    assert_eq!(rc.close_requested(t0), [Action::Close]);
    assert_eq!(rc.state(), ConnectionState::Closing);
    assert_eq!(rc.poll_timeout(), None);
    assert_eq!(rc.handle_timeout(t0 + secs(60)), []);
    assert_eq!(rc.closed(t0 + secs(1), Some(1000)), []);
    assert_eq!(rc.state(), ConnectionState::Closed);

    // While waiting to reconnect: Closed at once, the timer is gone.
    let mut rc = open_at(no_heartbeat(), 0.5, t0);
    rc.closed(t0, None);
    assert_eq!(rc.close_requested(t0), []);
    assert_eq!(rc.state(), ConnectionState::Closed);
    assert_eq!(rc.poll_timeout(), None);
    assert_eq!(rc.handle_timeout(t0 + secs(60)), []);

    // While connecting: abandon the attempt; a late success is ignored.
    let mut rc = Reconnector::new(no_heartbeat(), || 0.5);
    rc.connect_requested(t0);
    assert_eq!(rc.close_requested(t0), [Action::Close]);
    assert_eq!(rc.state(), ConnectionState::Closed);
    rc.opened(t0);
    assert_eq!(rc.state(), ConnectionState::Closed);
}

#[test]
fn connect_request_while_reconnecting_skips_the_wait() {
    let t0 = Instant::now();
    let mut rc = Reconnector::new(no_heartbeat(), || 0.5);
    rc.connect_requested(t0);
    rc.connect_failed(t0);
    rc.handle_timeout(t0 + secs(1));
    rc.connect_failed(t0 + secs(1));
    assert_eq!(rc.state(), reconnecting(2, ms(500)));
    assert_eq!(rc.connect_requested(t0 + secs(1)), [Action::Connect]);
    assert_eq!(rc.state(), ConnectionState::Connecting);
    // The counter is kept: this is still the same outage.
    rc.connect_failed(t0 + secs(1));
    assert_eq!(rc.state(), reconnecting(3, secs(1)));
    // Requests in other states change nothing.
    rc.handle_timeout(t0 + secs(2));
    assert_eq!(rc.connect_requested(t0 + secs(2)), []);
    rc.opened(t0 + secs(2));
    assert_eq!(rc.connect_requested(t0 + secs(2)), []);
    assert_eq!(rc.state(), ConnectionState::Open);
}

#[test]
fn scripted_jitter_is_used_once_per_scheduled_attempt() {
    let mut samples = [0.25, 0.75, 0.1].into_iter().cycle();
    let t0 = Instant::now();
    let mut rc = Reconnector::new(no_heartbeat(), move || samples.next().unwrap_or(0.0));
    rc.connect_requested(t0);
    let mut delays = Vec::new();
    for _ in 0..3 {
        rc.connect_failed(t0);
        if let ConnectionState::Reconnecting { delay, .. } = rc.state() {
            delays.push(delay);
        }
        rc.handle_timeout(t0 + secs(60));
    }
    assert_eq!(delays, [ms(125), ms(750), ms(200)]);
}

/// One input to the state machine, for the property test below.
#[derive(Debug, Clone)]
enum Input {
    ConnectRequested,
    Opened,
    ConnectFailed,
    Closed(Option<u16>),
    CloseRequested,
    Pong,
    Timeout,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::ConnectRequested),
        Just(Input::Opened),
        Just(Input::ConnectFailed),
        proptest::option::of(prop_oneof![
            Just(1000u16),
            Just(1008),
            Just(1006),
            any::<u16>()
        ])
        .prop_map(Input::Closed),
        Just(Input::CloseRequested),
        Just(Input::Pong),
        Just(Input::Timeout),
    ]
}

proptest! {
    #[test]
    fn any_input_sequence_keeps_the_invariants(
        steps in proptest::collection::vec((input(), 0u64..40_000), 0..64),
        u in 0.0f64..1.0,
        max_attempts in proptest::option::of(0u32..5),
    ) {
        let config = ReconnectConfig {
            backoff: Backoff { max_attempts, ..Backoff::default() },
            ..ReconnectConfig::default()
        };
        let max = config.backoff.max;
        let mut rc = Reconnector::new(config, move || u);
        let mut now = Instant::now();
        for (step, advance_ms) in steps {
            now += ms(advance_ms);
            let actions = match step {
                Input::ConnectRequested => rc.connect_requested(now),
                Input::Opened => { rc.opened(now); Vec::new() }
                Input::ConnectFailed => rc.connect_failed(now),
                Input::Closed(code) => rc.closed(now, code),
                Input::CloseRequested => rc.close_requested(now),
                Input::Pong => { rc.pong_received(now); Vec::new() }
                Input::Timeout => match rc.poll_timeout() {
                    Some(at) => { now = now.max(at); rc.handle_timeout(now) }
                    None => rc.handle_timeout(now),
                },
            };
            if let ConnectionState::Reconnecting { attempt, delay } = rc.state() {
                prop_assert!(delay <= max);
                prop_assert!(attempt >= 1);
                prop_assert!(max_attempts.is_none_or(|m| attempt <= m));
                prop_assert!(rc.poll_timeout().is_some());
            }
            if let Some(&Action::WaitUntil(at)) = actions.last() {
                let ConnectionState::Reconnecting { delay, .. } = rc.state() else {
                    return Err(TestCaseError::fail("WaitUntil outside Reconnecting"));
                };
                prop_assert_eq!(at, now + delay);
                prop_assert_eq!(rc.poll_timeout(), Some(at));
            }
            if actions.contains(&Action::GiveUp) {
                prop_assert_eq!(rc.state(), ConnectionState::Closed);
            }
            if actions.contains(&Action::Connect) {
                prop_assert_eq!(rc.state(), ConnectionState::Connecting);
            }
            if matches!(rc.state(), ConnectionState::Closed | ConnectionState::Closing | ConnectionState::Connecting) {
                prop_assert_eq!(rc.poll_timeout(), None);
            }
        }
    }
}
