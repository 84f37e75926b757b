//! Bounded retries for Oomnitza's read and control calls with the shared policy of every
//! outbound call (`peoplesync_retry`), honouring `Retry-After`. `post_bulk` never comes through
//! here: the loader owns its retries (with the same policy).

use std::future::Future;
use std::time::Duration;

use peoplesync_retry::{RetryPolicy, Transient};

use crate::error::{Error, ErrorKind};

impl Transient for Error {
    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// Runs `operation` until it succeeds, fails with a non-transient error, or the policy's budget
/// is spent; the last error then says how many attempts were made over how long.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, operation: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    peoplesync_retry::retry(policy, "Oomnitza", operation)
        .await
        .map_err(|gave_up| gave_up.into_error(Error::exhausted))
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

    fn answer(status: u16, retry_after: Option<Duration>) -> Error {
        Error::from_answer(
            "h",
            "reading",
            Operation::Other,
            status,
            retry_after,
            b"",
            "API token",
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_honouring_retry_after() {
        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), Error> = retry(&policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(answer(503, Some(Duration::from_secs(1))))
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
            Err(answer(404, None))
        })
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Rejected);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
