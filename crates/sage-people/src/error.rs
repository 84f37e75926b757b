//! The error every Sage People call returns: an [`ErrorKind`] that tells the caller what to do
//! (fail the run, restart the listing, stop and resume later, retry the run later) and an
//! operator-facing message that says what happened, to what, and what to fix.
//!
//! Modelled on nats.rs's `Error<Kind>`: one struct, a `kind()` to match on, a source to chain.

use std::fmt;

use peoplesync_retry::transport::NoAnswer;

/// What the caller should do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Sage People or Salesforce is set up wrongly for this integration (missing permission set,
    /// field or object access, bad filter, bad credentials, grant not enabled): fail the run at
    /// once; the message says what to grant or fix.
    Configuration,
    /// A freshly issued token was refused again with `401 INVALID_SESSION_ID`: stop the run and
    /// have the operator check the External Client App's session policies and the API user.
    Authentication,
    /// The org's API request limit is used up (`403 REQUEST_LIMIT_EXCEEDED`): stop the run, keep
    /// the checkpoint, resume later; do not hammer.
    QuotaExhausted,
    /// Sage People refused the paging marker (`INVALID_MARKER`): restart the listing.
    InvalidMarker,
    /// Retries ran out on 5xx, 420, 429, connection errors, timeouts or cut-off bodies: retry the
    /// run later.
    Transient,
    /// A successful answer whose body is not the documented shape, even after retries: stop the
    /// run and report it.
    InvalidResponse,
}

impl ErrorKind {
    /// Whether a call failing this way is worth retrying within the same operation.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::InvalidResponse)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Configuration => "configuration",
            ErrorKind::Authentication => "authentication",
            ErrorKind::QuotaExhausted => "quota exhausted",
            ErrorKind::InvalidMarker => "invalid marker",
            ErrorKind::Transient => "transient",
            ErrorKind::InvalidResponse => "invalid response",
        })
    }
}

/// The lower-level cause an error chains as its source.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed Sage People call. Its `Display` is the operator-facing message; it never contains
/// a secret or a token.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    code: Option<String>,
    #[source]
    source: Option<Cause>,
}

impl Error {
    /// An error of `kind` with an operator-facing `message`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
            code: None,
            source: None,
        }
    }

    /// Records the HTTP status that caused the error.
    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Records the Salesforce / Sage People error code (`INVALID_MARKER`, `invalid_grant`, ...).
    pub(crate) fn with_code(mut self, code: Option<String>) -> Self {
        self.code = code;
        self
    }

    /// Chains the lower-level cause.
    pub(crate) fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status of the answer that caused the error, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The most specific error code Salesforce or Sage People gave (`INVALID_MARKER`,
    /// `REQUEST_LIMIT_EXCEEDED`, `invalid_grant`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Replaces the operator-facing message, keeping kind, status and code.
    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// A transport-level failure (connection refused or reset, timeout, body cut off) while
    /// `what` was sent to `host`.
    pub(crate) fn transport(host: &str, what: &str, failure: NoAnswer) -> Self {
        let message = format!("{what} at {host} failed: {failure}");
        Error::new(ErrorKind::Transient, message).with_source(failure.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_and_invalid_response_are_retried() {
        use ErrorKind::*;
        for kind in [Configuration, Authentication, QuotaExhausted, InvalidMarker] {
            assert!(!kind.is_retryable(), "{kind}");
        }
        assert!(Transient.is_retryable());
        assert!(InvalidResponse.is_retryable());
    }
}
