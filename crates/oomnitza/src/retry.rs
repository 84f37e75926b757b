//! Bounded retries for Oomnitza's read and control calls: exponential backoff (backon's
//! schedule) with jitter, capped, at least as long as `Retry-After`, bounded by attempts and by
//! elapsed time. `post_bulk` never comes through here: the loader owns its retries.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::{Error, ErrorKind};

/// The delays between attempts of one call.
#[derive(Debug)]
pub(crate) struct Backoff {
    schedule: ExponentialBackoff,
    max_delay: Duration,
    max_elapsed: Duration,
}

impl Backoff {
    /// A fresh schedule for one call.
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Backoff {
            schedule: ExponentialBuilder::default()
                .with_min_delay(policy.initial_delay)
                .with_max_delay(policy.max_delay)
                .with_factor(2.0)
                .with_max_times(policy.max_attempts.saturating_sub(1))
                .build(),
            max_delay: policy.max_delay,
            max_elapsed: policy.max_elapsed,
        }
    }

    /// The delay before the next attempt, or `None` once attempts or time are used up.
    ///
    /// The backoff delay `d` is spread over `[d/2, d)` by `unit` (random in `[0, 1)`); the
    /// server's `retry_after` is a floor.
    pub(crate) fn next_delay(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let base = self.schedule.next()?.min(self.max_delay);
        let jittered = base.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0);
        let delay = jittered.max(retry_after.unwrap_or(Duration::ZERO));
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

/// Runs `operation` until it succeeds, fails with a non-transient error, or the policy's budget
/// is spent.
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
            Err(error) if error.kind() == ErrorKind::Transient => error,
            Err(error) => return Err(error),
        };
        let unit = rand::rng().random::<f64>();
        match backoff.next_delay(started.elapsed(), error.retry_after(), unit) {
            Some(delay) => {
                tracing::debug!(attempt = attempts, ?delay, error = %error, "retrying Oomnitza call");
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
    use crate::error::Operation;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_elapsed: Duration::from_secs(30),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stop() {
        let mut backoff = Backoff::new(&policy());
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(Duration::ZERO, None, 1.0))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 300]);
    }

    #[test]
    fn retry_after_is_a_floor_within_the_budget() {
        let mut backoff = Backoff::new(&policy());
        assert_eq!(
            backoff.next_delay(Duration::ZERO, Some(Duration::from_secs(2)), 0.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            backoff.next_delay(Duration::from_secs(10), Some(Duration::from_secs(25)), 0.0),
            None
        );
    }

    fn busy() -> Error {
        Error::from_answer(
            "h",
            "reading",
            Operation::Other,
            503,
            Some(Duration::from_secs(1)),
            b"",
            "API token",
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_honouring_retry_after() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<(), Error> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(busy())
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.to_string().contains("4 attempts"), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_returned_at_once() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), Error> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::from_answer(
                "h",
                "reading",
                Operation::Other,
                404,
                None,
                b"",
                "API token",
            ))
        })
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Rejected);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
