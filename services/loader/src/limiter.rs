//! The loader-wide rate limit on bulk requests, adaptive (AIMD): every request waits for a
//! permit; a 429 halves the rate (down to a floor), each success adds a small step back (up to
//! the ceiling). While Oomnitza keeps throttling, the replica settles just under the rate
//! Oomnitza accepts instead of hammering it.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// An adaptive rate limit shared by one replica's deliveries.
#[derive(Clone, Debug)]
pub struct AdaptiveLimiter {
    inner: Arc<Mutex<State>>,
    min: f64,
    max: f64,
    step: f64,
}

#[derive(Debug)]
struct State {
    rate: f64,
    limiter: Arc<DefaultDirectRateLimiter>,
}

fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(quota))
}

impl AdaptiveLimiter {
    /// Starts at `max` requests per second; never goes below `min`; recovers by `step` per
    /// successful request.
    pub fn new(min: f64, max: f64, step: f64) -> AdaptiveLimiter {
        let max = max.max(min);
        metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_RATE_LIMIT).set(max);
        AdaptiveLimiter {
            inner: Arc::new(Mutex::new(State {
                rate: max,
                limiter: limiter(max),
            })),
            min,
            max,
            step,
        }
    }

    /// Waits for permission to send one request.
    pub async fn acquire(&self) {
        let limiter = match self.inner.lock() {
            Ok(state) => state.limiter.clone(),
            Err(_) => return,
        };
        limiter.until_ready().await;
    }

    /// The current rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.inner.lock().map_or(self.max, |s| s.rate)
    }

    /// Oomnitza throttled a request: halve the rate.
    pub fn on_throttled(&self) {
        self.set(|rate| (rate / 2.0).max(self.min));
    }

    /// A request went through: creep back up.
    pub fn on_success(&self) {
        self.set(|rate| (rate + self.step).min(self.max));
    }

    fn set(&self, next: impl FnOnce(f64) -> f64) {
        if let Ok(mut state) = self.inner.lock() {
            let rate = next(state.rate);
            // Rebuilding the limiter resets its bucket; only do it on a real change.
            if (rate - state.rate).abs() >= f64::EPSILON.max(state.rate * 0.01) {
                state.rate = rate;
                state.limiter = limiter(rate);
                metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_RATE_LIMIT).set(rate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_and_success_recovers_additively() {
        let limiter = AdaptiveLimiter::new(1.0, 100.0, 5.0);
        assert_eq!(limiter.rate(), 100.0);
        limiter.on_throttled();
        limiter.on_throttled();
        assert_eq!(limiter.rate(), 25.0);
        limiter.on_success();
        assert_eq!(limiter.rate(), 30.0);
        for _ in 0..100 {
            limiter.on_throttled();
        }
        assert_eq!(limiter.rate(), 1.0, "never below the floor");
        for _ in 0..100 {
            limiter.on_success();
        }
        assert_eq!(limiter.rate(), 100.0, "never above the ceiling");
    }

    #[tokio::test]
    async fn permits_are_never_handed_out_faster_than_the_rate() {
        let limiter = AdaptiveLimiter::new(1.0, 10.0, 1.0);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // At 10/s the first permit is immediate and the next four come 100 ms apart.
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
    }
}
