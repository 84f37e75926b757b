//! The error every Sage People call returns: an [`ErrorKind`] that tells the caller what to do
//! (fail the run, restart the listing, stop and resume later, retry the run later) and an
//! operator-facing message that says what happened, to what, and what to fix.
//!
//! The struct is the one both API clients share (`peoplesync_retry::ApiError`, modelled on
//! nats.rs's `Error<Kind>`: one struct, a `kind()` to match on, a source to chain); this module
//! gives it Sage People's kinds.

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
    /// A successful answer whose body could not be decoded as the documented JSON (an HTML
    /// page, JSON of another structure), even after retries: something may be answering in
    /// the org's place (a proxy or portal serving its own page), which passes when it does.
    /// Stop the run, keep its checkpoint and retry it later; report it if it persists.
    Undecodable,
    /// A successful answer that decoded but breaks what the client relies on (a page whose last
    /// employee has no string `id`, a page not past its marker, an unusable `instance_url`, a
    /// status the API does not use), even after retries. It fails the same way every time, so
    /// resuming at the same place cannot help: fail the run (the next one starts afresh) and
    /// report it.
    InvalidResponse,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Configuration => "configuration",
            ErrorKind::Authentication => "authentication",
            ErrorKind::QuotaExhausted => "quota exhausted",
            ErrorKind::InvalidMarker => "invalid marker",
            ErrorKind::Transient => "transient",
            ErrorKind::Undecodable => "undecodable response",
            ErrorKind::InvalidResponse => "invalid response",
        })
    }
}

/// A failed Sage People call: the clients' shared skeleton with this client's [`ErrorKind`]. Its
/// `Display` is the operator-facing message; it never contains a secret or a token. It carries
/// the HTTP status and the most specific error code Salesforce or Sage People gave, where there
/// was an answer.
pub type Error = peoplesync_retry::ApiError<ErrorKind>;

/// A transport-level failure (connection refused or reset, timeout, body cut off) while `what`
/// was sent to `host`.
pub(crate) fn transport_error(host: &str, what: &str, failure: NoAnswer) -> Error {
    let message = format!("{what} at {host} failed: {failure}");
    Error::new(ErrorKind::Transient, message).with_source(failure.source)
}

/// What the other side answered to a failed call, for a message that replaces the error's
/// own: `400 INVALID_FILTER`, `403`, or `no answer`.
pub(crate) fn answer_of(error: &Error) -> String {
    match (error.status(), error.code()) {
        (Some(status), Some(code)) => format!("{status} {code}"),
        (Some(status), None) => status.to_string(),
        _ => "no answer".to_owned(),
    }
}
