//! Retrying transient Sage People failures with the shared policy of every outbound call
//! (`peoplesync_retry`); an error that outlasts it says how many attempts were made over how
//! long.

use std::future::Future;

use peoplesync_retry::{RetryPolicy, Transient};

use crate::error::Error;

impl Transient for Error {
    fn is_transient(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Runs `operation` until it succeeds, fails with a non-retryable error, or the policy's budget
/// is spent; the last error then says how many attempts were made over how long.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, operation: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    peoplesync_retry::retry(policy, "Sage People", operation)
        .await
        .map_err(|gave_up| gave_up.into_error(Error::exhausted))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use peoplesync_retry::Backoff;

    use super::*;
    use crate::config::default_retry_policy;
    use crate::error::ErrorKind;

    #[test]
    fn the_default_policy_keeps_retrying_for_its_two_minutes() {
        let policy = default_retry_policy();
        for unit in [0.0, 0.5, 0.999] {
            let mut backoff = Backoff::new(&policy);
            let mut elapsed = Duration::ZERO;
            while let Some(delay) = backoff.next_delay(elapsed, None, unit) {
                elapsed += delay;
            }
            assert!(
                elapsed > Duration::from_secs(100) && elapsed <= policy.max_elapsed,
                "retries span {elapsed:?} with jitter {unit}: the elapsed budget, not the count, ends them"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_that_outlasts_the_budget_says_so_and_others_come_back_as_they_are() {
        let policy = RetryPolicy {
            max_attempts: 6,
            ..default_retry_policy()
        };
        let down: Result<(), Error> = retry(&policy, || async {
            Err(Error::new(ErrorKind::Transient, "down"))
        })
        .await;
        let error = down.expect_err("always failing");
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.to_string().contains("6 attempts"), "{error}");

        let quota: Result<(), Error> = retry(&policy, || async {
            Err(Error::new(ErrorKind::QuotaExhausted, "quota"))
        })
        .await;
        let error = quota.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::QuotaExhausted);
        assert!(!error.to_string().contains("attempts"), "{error}");
    }
}
