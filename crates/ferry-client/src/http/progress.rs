//! Transfer progress for downloads (H8) and multipart uploads (H10).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes done so far, including bytes a resumed download already had.
    pub loaded: u64,
    /// Bytes in all, when known.
    pub total: Option<u64>,
    /// `loaded / total × 100`, when the total is known (100 for an empty transfer).
    pub percentage: Option<f64>,
    /// Recent speed in bytes per second, over the last couple of seconds.
    pub speed: f64,
}

/// A progress callback. It runs on the transfer's task, between chunks: keep it short.
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send + 'static>;

/// How far back the speed looks: long enough to smooth bursts, short enough to follow a
/// change in bandwidth.
const WINDOW: Duration = Duration::from_secs(2);

/// Computes [`Progress`] from byte counts and the time they were seen.
#[derive(Debug)]
pub(crate) struct Meter {
    total: Option<u64>,
    loaded: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    pub fn new(already: u64, total: Option<u64>, now: Instant) -> Meter {
        let mut samples = VecDeque::new();
        samples.push_back((now, already));
        Meter {
            total,
            loaded: already,
            samples,
        }
    }

    pub fn add(&mut self, n: u64, now: Instant) -> Progress {
        self.loaded = self.loaded.saturating_add(n);
        self.samples.push_back((now, self.loaded));
        // Keep one sample older than the window as the speed's baseline.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.progress(now)
    }

    pub fn progress(&self, now: Instant) -> Progress {
        let speed = match self.samples.front() {
            Some((t0, b0)) => {
                let secs = now.saturating_duration_since(*t0).as_secs_f64();
                if secs > 0.0 {
                    self.loaded.saturating_sub(*b0) as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let percentage = self.total.map(|t| {
            if t == 0 {
                100.0
            } else {
                (self.loaded as f64 / t as f64 * 100.0).min(100.0)
            }
        });
        Progress {
            loaded: self.loaded,
            total: self.total,
            percentage,
            speed,
        }
    }
}

/// A meter and a callback shared between the body stream that counts and the task that
/// reports the end.
#[derive(Clone)]
pub(crate) struct SharedProgress {
    inner: Arc<Mutex<(Meter, Option<ProgressFn>)>>,
}

impl SharedProgress {
    pub fn new(total: Option<u64>, callback: Option<ProgressFn>) -> SharedProgress {
        SharedProgress {
            inner: Arc::new(Mutex::new((Meter::new(0, total, Instant::now()), callback))),
        }
    }

    pub fn add(&self, n: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (meter, callback) = &mut *guard;
        let p = meter.add(n, Instant::now());
        if let Some(cb) = callback {
            cb(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_and_speed() {
        let t0 = Instant::now();
        let mut m = Meter::new(0, Some(1000), t0);
        let p = m.add(250, t0 + Duration::from_millis(500));
        assert_eq!(p.loaded, 250);
        assert_eq!(p.percentage, Some(25.0));
        assert!((p.speed - 500.0).abs() < 1e-6, "{}", p.speed);
        let p = m.add(750, t0 + Duration::from_secs(1));
        assert_eq!(p.percentage, Some(100.0));
        assert!((p.speed - 1000.0).abs() < 1e-6, "{}", p.speed);
    }

    #[test]
    fn resumed_bytes_count_as_loaded_not_as_speed() {
        let t0 = Instant::now();
        let mut m = Meter::new(600, Some(1000), t0);
        let p = m.add(100, t0 + Duration::from_secs(1));
        assert_eq!(p.loaded, 700);
        assert_eq!(p.percentage, Some(70.0));
        assert!((p.speed - 100.0).abs() < 1e-6);
    }

    #[test]
    fn speed_follows_the_recent_window() {
        let t0 = Instant::now();
        let mut m = Meter::new(0, None, t0);
        // Fast for 10 s, then slow.
        for s in 1..=10 {
            m.add(1000, t0 + Duration::from_secs(s));
        }
        let mut p = m.progress(t0);
        for s in 11..=14 {
            p = m.add(10, t0 + Duration::from_secs(s));
        }
        assert!(p.speed < 100.0, "{}", p.speed);
        assert_eq!(p.total, None);
        assert_eq!(p.percentage, None);
    }

    #[test]
    fn empty_total_is_complete() {
        let t0 = Instant::now();
        let m = Meter::new(0, Some(0), t0);
        assert_eq!(m.progress(t0).percentage, Some(100.0));
    }
}
