//! Retrying transient failures: exponential backoff (backon's schedule) with jitter, each delay
//! capped, bounded by the number of attempts and by the time elapsed since the first attempt.
//!
//! The schedule is pure ([`Backoff`]); [`retry`] drives an async operation with it on tokio's
//! clock, so tests can run it under `tokio::time::pause`.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::Error;

/// The delays between attempts of one operation.
#[derive(Debug)]
pub(crate) struct Backoff {
    schedule: ExponentialBackoff,
    max_delay: Duration,
    max_elapsed: Duration,
}

impl Backoff {
    /// A fresh schedule for one operation.
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let retries = policy.max_attempts.saturating_sub(1);
        let schedule = ExponentialBuilder::default()
            .with_min_delay(policy.initial_delay)
            .with_max_delay(policy.max_delay)
            .with_factor(2.0)
            .with_max_times(retries)
            .build();
        Backoff {
            schedule,
            max_delay: policy.max_delay,
            max_elapsed: policy.max_elapsed,
        }
    }

    /// The delay before the next attempt, or `None` once attempts or time are used up.
    ///
    /// `elapsed` is the time since the first attempt started; `unit` is a random number in
    /// `[0, 1)` that spreads the delay over `[d/2, d)` ("equal jitter"), so clients that failed
    /// together do not retry together, while the cap still holds.
    pub(crate) fn next_delay(&mut self, elapsed: Duration, unit: f64) -> Option<Duration> {
        let base = self.schedule.next()?.min(self.max_delay);
        let delay = base.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0);
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

/// Runs `operation` until it succeeds, fails with a non-retryable error, or the policy's budget
/// is spent; the last error then says how many attempts were made over how long.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, mut operation: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(policy);
    let mut attempts = 0usize;
    loop {
        attempts += 1;
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if error.kind().is_retryable() => error,
            Err(error) => return Err(error),
        };
        let unit = rand::rng().random::<f64>();
        match backoff.next_delay(started.elapsed(), unit) {
            Some(delay) => {
                tracing::debug!(attempt = attempts, ?delay, error = %error, "retrying Sage People call");
                tokio::time::sleep(delay).await;
            }
            None => return Err(error.exhausted(attempts, started.elapsed())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::ErrorKind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(120),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = Backoff::new(&policy());
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(Duration::ZERO, 1.0))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let mut low = Backoff::new(&policy());
        assert_eq!(
            low.next_delay(Duration::ZERO, 0.0),
            Some(Duration::from_millis(100))
        );
        let mut mid = Backoff::new(&policy());
        assert_eq!(
            mid.next_delay(Duration::ZERO, 0.5),
            Some(Duration::from_millis(150))
        );
    }

    #[test]
    fn stops_when_the_elapsed_budget_would_be_crossed() {
        let mut backoff = Backoff::new(&RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            ..policy()
        });
        assert!(
            backoff
                .next_delay(Duration::from_millis(4_700), 1.0)
                .is_some()
        );
        assert!(
            backoff
                .next_delay(Duration::from_millis(4_700), 1.0)
                .is_none()
        );
    }

    #[test]
    fn the_default_policy_keeps_retrying_for_its_two_minutes() {
        let policy = RetryPolicy::default();
        for unit in [0.0, 0.5, 0.999] {
            let mut backoff = Backoff::new(&policy);
            let mut elapsed = Duration::ZERO;
            while let Some(delay) = backoff.next_delay(elapsed, unit) {
                elapsed += delay;
            }
            assert!(
                elapsed > Duration::from_secs(100) && elapsed <= policy.max_elapsed,
                "retries span {elapsed:?} with jitter {unit}: the elapsed budget, not the count, ends them"
            );
        }
    }

    #[test]
    fn one_attempt_means_no_retry() {
        for max_attempts in [0, 1] {
            let mut backoff = Backoff::new(&RetryPolicy {
                max_attempts,
                ..policy()
            });
            assert_eq!(backoff.next_delay(Duration::ZERO, 0.5), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_the_attempts_run_out() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<(), Error> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorKind::Transient, "down"))
        })
        .await;
        let error = result.expect_err("always failing");
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.to_string().contains("6 attempts"), "{error}");
        // Five delays of at least half of 200, 400, 800, 1000, 1000 ms, and at most their sum.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1_700), "{waited:?}");
        assert!(waited <= Duration::from_millis(3_400), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_failures_is_returned() {
        let calls = AtomicUsize::new(0);
        let value = retry(&policy(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Error::new(ErrorKind::InvalidResponse, "cut"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(value.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_returned_at_once() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), Error> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorKind::QuotaExhausted, "quota"))
        })
        .await;
        assert_eq!(result.map_err(|e| e.kind()), Err(ErrorKind::QuotaExhausted));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_elapsed_budget_bounds_slow_attempts() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(10),
            ..policy()
        };
        let result: Result<(), Error> = retry(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err(Error::new(ErrorKind::Transient, "slow"))
        })
        .await;
        assert!(result.is_err());
        let calls = calls.load(Ordering::SeqCst);
        assert!((3..=4).contains(&calls), "{calls}");
    }
}
