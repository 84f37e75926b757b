//! Which Oomnitza failures are retried under the shared policy of every outbound call
//! (`peoplesync_retry`), honouring `Retry-After`, and how an error that outlasts it reads. The
//! read and control calls retry here; `post_bulk` does not: the loader owns its retries (with
//! the same policy and this classification).

use std::time::Duration;

use peoplesync_retry::{Spent, Transient};

use crate::error::{Error, ErrorKind};

impl Transient for Error {
    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }

    fn exhausted(self, spent: Spent) -> Self {
        let message = format!("{self} ({spent})");
        self.with_message(message)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use peoplesync_retry::{RetryPolicy, retry_call};

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
