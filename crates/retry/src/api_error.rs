//! The error skeleton both API clients share, after nats.rs's `Error<Kind>`: one struct, generic
//! over the client's own kind enum (what the caller should do), carrying an operator-facing
//! message, what the server's answer said and a chained cause. Each client names it `Error`
//! (`pub type Error = ApiError<ErrorKind>`) and words its messages itself; its kind says, through
//! [`ApiErrorKind`], which failures [`retry`](crate::retry) tries again.

use std::time::Duration;

use crate::{Spent, Transient};

/// The lower-level cause an error chains as its source.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a client's error kind tells the retry loop.
pub trait ApiErrorKind: Copy {
    /// Whether a call failing this way may succeed if it is made again.
    fn is_transient(self) -> bool;

    /// What to do about a failure of this kind that outlasted the retries, said after how hard
    /// the call tried (`gave up after 6 attempts over 12.3 s; retry the run later`); `None`
    /// when the message already says it. Per kind, because what follows a spent budget can
    /// differ: an outage is resumed later, an answer that breaks the contract is not.
    fn after_retries(self) -> Option<&'static str> {
        None
    }
}

/// A failed API call. Its `Display` is the operator-facing message; the clients never put a
/// secret or a token in it.
///
/// Each client fills in what its API's answers carry: the Oomnitza client the `Retry-After` and
/// a body excerpt, the Sage People client the error code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError<K> {
    kind: K,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    code: Option<String>,
    body_excerpt: Option<String>,
    #[source]
    source: Option<Cause>,
}

impl<K: Copy> ApiError<K> {
    /// An error of `kind` with an operator-facing `message`.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            code: None,
            body_excerpt: None,
            source: None,
        }
    }

    /// Chains the lower-level cause.
    pub fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Replaces the operator-facing message, keeping the kind and the answer's details.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Records the HTTP status of the answer that caused the error.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Records how long the server asked the client to wait (`Retry-After`).
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Records the server's error code (`INVALID_MARKER`, `invalid_grant`, ...).
    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    /// Records an excerpt of the answer's body.
    pub fn with_body_excerpt(mut self, body_excerpt: Option<String>) -> Self {
        self.body_excerpt = body_excerpt;
        self
    }

    /// What the caller should do about it.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The HTTP status of the answer that caused the error, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// How long the server asked the client to wait (`Retry-After`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The most specific error code the server gave (`INVALID_MARKER`,
    /// `REQUEST_LIMIT_EXCEEDED`, `invalid_grant`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The start of the server's answer, for dead letters and reports (the Oomnitza client
    /// keeps its first 500 characters).
    pub fn body_excerpt(&self) -> Option<&str> {
        self.body_excerpt.as_deref()
    }
}

impl<K: ApiErrorKind> Transient for ApiError<K> {
    fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn exhausted(self, spent: Spent) -> Self {
        let message = match self.kind.after_retries() {
            Some(advice) => format!("{self} ({spent}; {advice})"),
            None => format!("{self} ({spent})"),
        };
        self.with_message(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's kinds: one worth retrying, one not.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Plain {
        Busy,
        Refused,
    }

    /// A client's kind that says what to do once the retries are spent.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Advised;

    impl ApiErrorKind for Plain {
        fn is_transient(self) -> bool {
            self == Plain::Busy
        }
    }

    impl ApiErrorKind for Advised {
        fn is_transient(self) -> bool {
            true
        }

        fn after_retries(self) -> Option<&'static str> {
            Some("try again tomorrow")
        }
    }

    const SPENT: Spent = Spent {
        attempts: 3,
        elapsed: Duration::from_millis(1_500),
    };

    #[test]
    fn the_kind_decides_what_is_retried() {
        assert!(ApiError::new(Plain::Busy, "busy").is_transient());
        assert!(!ApiError::new(Plain::Refused, "refused").is_transient());
    }

    #[test]
    fn an_exhausted_error_says_how_hard_it_tried_and_keeps_the_answer() {
        let error = ApiError::new(Plain::Busy, "h is busy")
            .with_status(503)
            .with_retry_after(Some(Duration::from_secs(2)))
            .with_code(Some("BUSY".to_owned()))
            .with_body_excerpt(Some("later".to_owned()))
            .exhausted(SPENT);
        assert_eq!(
            error.to_string(),
            "h is busy (gave up after 3 attempts over 1.5 s)"
        );
        assert_eq!(error.kind(), Plain::Busy);
        assert_eq!(error.status(), Some(503));
        assert_eq!(Transient::retry_after(&error), Some(Duration::from_secs(2)));
        assert_eq!(error.code(), Some("BUSY"));
        assert_eq!(error.body_excerpt(), Some("later"));

        let advised = ApiError::new(Advised, "h is down").exhausted(SPENT);
        assert_eq!(
            advised.to_string(),
            "h is down (gave up after 3 attempts over 1.5 s; try again tomorrow)"
        );
    }

    #[test]
    fn the_source_is_chained() {
        let cause = std::io::Error::other("reset");
        let error = ApiError::new(Plain::Busy, "h failed").with_source(cause);
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("reset"));
    }
}
