//! The backends, their health and the choice of one per request.
//!
//! A backend is *available* when the active checks call it healthy and the passive checks
//! have not ejected it. Every policy chooses among available backends only, and never one
//! the request already tried.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::{BackendConfig, PassiveHealthConfig, Policy};

/// Upper bounds (ms) of the latency histogram buckets in `/metrics`.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// One backend and everything counted about it.
#[derive(Debug)]
pub struct Backend {
    /// Position in the configuration (stable id).
    pub index: usize,
    /// `host:port`.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// What the active checks last decided. Starts healthy, so a proxy serves at once.
    healthy: AtomicBool,
    /// Requests (and upgraded connections) in flight.
    in_flight: AtomicUsize,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed (connect error, timeout, 502/503/504).
    pub failures: AtomicU64,
    /// Sum of time to response headers, in µs, of answered requests.
    pub latency_sum_us: AtomicU64,
    /// Histogram of time to response headers (cumulative counts are built when rendered).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Active check bookkeeping and passive ejection.
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    consecutive_passes: u32,
    consecutive_failures: u32,
    recent_failures: VecDeque<Instant>,
    ejected_until: Option<Instant>,
    /// Smooth weighted round-robin's running weight.
    current_weight: i64,
}

impl Backend {
    fn new(index: usize, cfg: &BackendConfig) -> Backend {
        Backend {
            index,
            address: cfg.address.clone(),
            weight: cfg.weight.max(1),
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_buckets: Default::default(),
            state: Mutex::new(HealthState::default()),
        }
    }

    /// What the active checks last decided.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether passive checks hold it out at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.state.lock().ejected_until.is_some_and(|t| t > now)
    }

    /// Healthy and not ejected.
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Record one active check; returns the new health when it changed.
    pub fn record_check(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        let mut s = self.state.lock();
        if passed {
            s.consecutive_failures = 0;
            s.consecutive_passes = s.consecutive_passes.saturating_add(1);
            if !self.is_healthy() && s.consecutive_passes >= healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
                // A node that came back starts with a clean passive record.
                s.recent_failures.clear();
                s.ejected_until = None;
                return Some(true);
            }
        } else {
            s.consecutive_passes = 0;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if self.is_healthy() && s.consecutive_failures >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Record a failure seen on real traffic; returns true when it ejects the backend.
    pub fn record_failure(&self, passive: &PassiveHealthConfig, now: Instant) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if passive.max_failures == 0 {
            return false;
        }
        let window = Duration::from_millis(passive.window_ms);
        let mut s = self.state.lock();
        while s
            .recent_failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            s.recent_failures.pop_front();
        }
        s.recent_failures.push_back(now);
        if s.recent_failures.len() >= passive.max_failures as usize {
            s.recent_failures.clear();
            s.ejected_until = Some(now + Duration::from_millis(passive.cooldown_ms));
            return true;
        }
        false
    }

    /// Record the time a backend took to answer.
    pub fn record_latency(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let ms = us / 1000;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// A request's claim on a backend: counts it in flight until dropped (for least
/// connections; a streamed body or an upgraded connection holds it to its end).
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// The backend claimed.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The set of backends and the policy that chooses among them.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    policy: Policy,
    next: AtomicUsize,
    /// Smooth weighted round-robin updates all running weights at once.
    wrr: Mutex<()>,
}

impl Pool {
    /// A pool of `backends`, all healthy to start with.
    pub fn new(backends: &[BackendConfig], policy: Policy) -> Pool {
        Pool {
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, b)| Arc::new(Backend::new(i, b)))
                .collect(),
            policy,
            next: AtomicUsize::new(0),
            wrr: Mutex::new(()),
        }
    }

    /// Every backend, in configuration order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Choose a backend for a request with hash key `key` (used by `consistent_hash`),
    /// skipping the indexes in `tried`; `None` when no backend is available.
    pub fn pick(&self, key: &[u8], tried: &[usize], now: Instant) -> Option<InFlight> {
        let candidates: Vec<&Arc<Backend>> = self
            .backends
            .iter()
            .filter(|b| !tried.contains(&b.index) && b.is_available(now))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match self.policy {
            Policy::RoundRobin => self.in_turn(&candidates),
            Policy::WeightedRoundRobin => self.smooth_weighted(&candidates),
            Policy::LeastConnections => {
                let least = candidates.iter().map(|b| b.in_flight()).min().unwrap_or(0);
                let tied: Vec<&Arc<Backend>> = candidates
                    .iter()
                    .copied()
                    .filter(|b| b.in_flight() == least)
                    .collect();
                self.in_turn(&tied)
            }
            Policy::ConsistentHash => rendezvous(&candidates, key),
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        chosen.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            backend: Arc::clone(chosen),
        })
    }

    fn in_turn<'a>(&self, candidates: &[&'a Arc<Backend>]) -> &'a Arc<Backend> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        candidates[n % candidates.len()]
    }

    /// nginx's smooth weighted round-robin: every candidate gains its weight, the largest
    /// is chosen and loses the total.
    fn smooth_weighted<'a>(&self, candidates: &[&'a Arc<Backend>]) -> &'a Arc<Backend> {
        let _guard = self.wrr.lock();
        let total: i64 = candidates.iter().map(|b| i64::from(b.weight)).sum();
        let mut best = candidates[0];
        let mut best_weight = i64::MIN;
        for b in candidates {
            let mut s = b.state.lock();
            s.current_weight += i64::from(b.weight);
            if s.current_weight > best_weight {
                best_weight = s.current_weight;
                best = b;
            }
        }
        best.state.lock().current_weight -= total;
        best
    }
}

/// Highest-random-weight hashing: each backend scores `hash(key, backend)`, weighted as in
/// Schindelhauer & Schomaker's logarithmic method; the highest score wins. A backend that
/// leaves moves only the keys it owned.
fn rendezvous<'a>(candidates: &[&'a Arc<Backend>], key: &[u8]) -> &'a Arc<Backend> {
    let mut best = candidates[0];
    let mut best_score = f64::MIN;
    for b in candidates {
        let mut h = StableHasher::default();
        key.hash(&mut h);
        b.address.hash(&mut h);
        // Uniform in (0, 1): the top 53 bits, never 0.
        let u = ((h.finish() >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
        let score = -f64::from(b.weight) / u.ln();
        if score > best_score {
            best_score = score;
            best = b;
        }
    }
    best
}

/// FNV-1a, 64 bits: stable across processes and releases, unlike `DefaultHasher`, so two
/// proxies in front of the same nodes send a key to the same node.
struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        // A final avalanche (splitmix64), so that similar keys spread.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32], policy: Policy) -> Pool {
        let cfg: Vec<BackendConfig> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| BackendConfig {
                address: format!("127.0.0.1:{}", 9000 + i),
                weight: *w,
            })
            .collect();
        Pool::new(&cfg, policy)
    }

    fn counts(p: &Pool, n: usize, key: impl Fn(usize) -> Vec<u8>) -> Vec<usize> {
        let mut c = vec![0; p.backends().len()];
        for i in 0..n {
            let f = p
                .pick(&key(i), &[], Instant::now())
                .expect("one is available");
            c[f.backend().index] += 1;
        }
        c
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_by_weight() {
        let p = pool(&[1, 2, 3], Policy::WeightedRoundRobin);
        let order: Vec<usize> = (0..6)
            .map(|_| {
                p.pick(b"", &[], Instant::now())
                    .expect("available")
                    .backend()
                    .index
            })
            .collect();
        assert_eq!(order, vec![2, 1, 0, 2, 1, 2]);
        assert_eq!(counts(&p, 600, |_| Vec::new()), vec![100, 200, 300]);
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_backend_that_left() {
        let p = pool(&[1, 1, 1], Policy::ConsistentHash);
        let now = Instant::now();
        let before: Vec<usize> = (0..300)
            .map(|i| {
                p.pick(format!("k{i}").as_bytes(), &[], now)
                    .expect("available")
                    .backend()
                    .index
            })
            .collect();
        let c = counts(&p, 300, |i| format!("k{i}").into_bytes());
        assert!(c.iter().all(|n| (60..=140).contains(n)), "{c:?}");
        p.backends()[1].healthy.store(false, Ordering::Relaxed);
        for (i, was) in before.iter().enumerate() {
            let now_on = p
                .pick(format!("k{i}").as_bytes(), &[], now)
                .expect("available")
                .backend()
                .index;
            if *was != 1 {
                assert_eq!(now_on, *was, "key k{i} moved although its node stayed");
            } else {
                assert_ne!(now_on, 1);
            }
        }
    }

    #[test]
    fn passive_failures_eject_for_the_cooldown() {
        let p = pool(&[1, 1], Policy::RoundRobin);
        let passive = PassiveHealthConfig {
            max_failures: 2,
            window_ms: 1000,
            cooldown_ms: 5000,
        };
        let t0 = Instant::now();
        let b = &p.backends()[0];
        assert!(!b.record_failure(&passive, t0));
        assert!(b.record_failure(&passive, t0 + Duration::from_millis(10)));
        assert!(!b.is_available(t0 + Duration::from_millis(20)));
        assert!(b.is_available(t0 + Duration::from_millis(5100)));
        // Only the other one is picked meanwhile, and a tried one is never picked again.
        let now = t0 + Duration::from_millis(20);
        for _ in 0..4 {
            assert_eq!(p.pick(b"", &[], now).expect("b").backend().index, 1);
        }
        assert!(p.pick(b"", &[1], now).is_none());
    }

    #[test]
    fn in_flight_counts_follow_the_claims() {
        let p = pool(&[1, 1], Policy::LeastConnections);
        let now = Instant::now();
        let a = p.pick(b"", &[], now).expect("a");
        let second = p.pick(b"", &[], now).expect("b");
        assert_ne!(a.backend().index, second.backend().index);
        let freed = a.backend().index;
        drop(a);
        let third = p.pick(b"", &[], now).expect("c");
        assert_eq!(
            third.backend().index,
            freed,
            "the idle backend gets the next request"
        );
        drop((second, third));
        assert!(p.backends().iter().all(|b| b.in_flight() == 0));
    }
}
