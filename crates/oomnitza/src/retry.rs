//! Which Oomnitza failures are retried under the shared policy of every outbound call
//! (`peoplesync_retry`), honouring `Retry-After`, and how an error that outlasts it reads. The
//! read and control calls retry here; `post_bulk` does not: the loader owns its retries (with
//! the same policy and this classification).

use peoplesync_retry::ApiErrorKind;

use crate::error::ErrorKind;

/// Only [`ErrorKind::Transient`] is retried; its message already says the request can be sent
/// again later, so an error that outlasts the retries only adds how hard the call tried.
impl ApiErrorKind for ErrorKind {
    fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use peoplesync_retry::{RetryPolicy, retry_call};

    use super::*;
    use crate::error::{Error, Operation, answer_error};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_elapsed: Duration::from_secs(30),
        }
    }

    fn answer(status: u16, retry_after: Option<Duration>) -> Error {
        answer_error(
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
        let result: Result<(), Error> = retry_call(&policy(), "Oomnitza", || async {
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
        let result: Result<(), Error> = retry_call(&policy(), "Oomnitza", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(answer(404, None))
        })
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Rejected);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
