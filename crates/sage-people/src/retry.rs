//! Which Sage People failures are retried under the shared policy of every outbound call
//! (`peoplesync_retry`), and how an error that outlasts it reads: it says how many attempts
//! were made over how long, and, for the failures that pass, that the run can be retried later.

use peoplesync_retry::ApiErrorKind;

use crate::error::ErrorKind;

/// A failure is worth another attempt within the same call when it is transient or the answer
/// was not the documented shape or contract (the org's own answers were always retried, so
/// these are too). Once the retries are spent, the run as a whole can be retried after a
/// transient failure or an undecodable answer; an answer that broke the contract fails the
/// same way again, and its message already says to report it.
impl ApiErrorKind for ErrorKind {
    fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Transient | ErrorKind::Undecodable | ErrorKind::InvalidResponse
        )
    }

    fn after_retries(self) -> Option<&'static str> {
        match self {
            ErrorKind::Transient | ErrorKind::Undecodable => {
                Some("retry the run later, its checkpoint is kept")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use peoplesync_retry::{RetryPolicy, Spent, Transient, retry_call};

    use super::*;
    use crate::config::default_retry_policy;
    use crate::error::Error;

    #[test]
    fn only_transient_and_unusable_answers_are_retried() {
        use ErrorKind::*;
        for kind in [Configuration, Authentication, QuotaExhausted, InvalidMarker] {
            assert!(!kind.is_transient(), "{kind}");
        }
        for kind in [Transient, Undecodable, InvalidResponse] {
            assert!(kind.is_transient(), "{kind}");
        }
    }

    #[test]
    fn only_failures_that_pass_say_the_checkpoint_is_kept_once_the_budget_is_spent() {
        let spent = Spent {
            attempts: 4,
            elapsed: Duration::from_millis(1_200),
        };
        for kind in [ErrorKind::Transient, ErrorKind::Undecodable] {
            let message = Error::new(kind, "m").exhausted(spent).to_string();
            assert!(
                message.ends_with("its checkpoint is kept)"),
                "{kind}: {message}"
            );
        }
        let message = Error::new(ErrorKind::InvalidResponse, "m; report it")
            .exhausted(spent)
            .to_string();
        assert_eq!(
            message,
            "m; report it (gave up after 4 attempts over 1.2 s)"
        );
    }

    #[test]
    fn the_default_policy_keeps_retrying_for_its_two_minutes() {
        let policy = default_retry_policy();
        for unit in [0.0, 0.5, 0.999] {
            let elapsed = policy.span(unit);
            assert!(
                elapsed > Duration::from_secs(100) && elapsed <= policy.max_elapsed,
                "retries span {elapsed:?} with jitter {unit}: the elapsed budget, not the count, ends them"
            );
        }
    }

    #[test]
    fn exhausted_keeps_the_kind_and_says_how_hard_it_tried() {
        let error = Error::new(ErrorKind::Transient, "listing employees at h failed")
            .with_status(503)
            .exhausted(Spent {
                attempts: 6,
                elapsed: Duration::from_millis(12_340),
            });
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(error.status(), Some(503));
        let message = error.to_string();
        assert!(message.contains("6 attempts over 12.3 s"), "{message}");
        assert!(
            message.starts_with("listing employees at h failed"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_that_outlasts_the_budget_says_so_and_others_come_back_as_they_are() {
        let policy = RetryPolicy {
            max_attempts: 6,
            ..default_retry_policy()
        };
        let down: Result<(), Error> = retry_call(&policy, "Sage People", || async {
            Err(Error::new(ErrorKind::Transient, "down"))
        })
        .await;
        let error = down.expect_err("always failing");
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.to_string().contains("6 attempts"), "{error}");

        let quota: Result<(), Error> = retry_call(&policy, "Sage People", || async {
            Err(Error::new(ErrorKind::QuotaExhausted, "quota"))
        })
        .await;
        let error = quota.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::QuotaExhausted);
        assert!(!error.to_string().contains("attempts"), "{error}");
    }
}
