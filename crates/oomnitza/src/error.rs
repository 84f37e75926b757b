//! The error every Oomnitza call returns: an [`ErrorKind`] that tells the loader what to do
//! (retry later, isolate bad records, stop sending to a portion, stop loading), the HTTP status,
//! the server's `Retry-After` and an excerpt of the body, and an operator-facing message.
//!
//! The struct is the one both API clients share (`peoplesync_retry::ApiError`, modelled on
//! nats.rs's `Error<Kind>`); this module gives it Oomnitza's kinds and words. Classification is
//! pure: status in, kind out.

use std::fmt;
use std::time::Duration;

use peoplesync_retry::transport::NoAnswer;

/// Longest body excerpt kept on an error, in characters.
pub const BODY_EXCERPT_CHARS: usize = 500;

/// What the caller should do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Oomnitza is busy or failing (408, 429, 5xx, timeout, connection reset): send the same
    /// request again later, after [`Error::retry_after`] when given.
    Transient,
    /// Oomnitza will never accept this body (400, 404, 422 and other 4xx): for a bulk post,
    /// split the batch to isolate the bad records and dead-letter them.
    Rejected,
    /// The portion is closed (409 on a bulk post: it is finalized): stop sending to it. A
    /// canceled portion is not published to refuse posts; poll
    /// [`OomnitzaClient::portion`](crate::OomnitzaClient::portion) to learn of a cancel.
    Closed,
    /// Bad credentials (401) or missing rights (403): stop loading, report it, retry slowly.
    Unauthorized,
    /// A successful answer whose body is not the expected shape: report it.
    InvalidResponse,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Closed => "closed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidResponse => "invalid response",
        })
    }
}

/// Which kind of request an answer belongs to, where that changes its meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `POST /api/v3/bulk`: a 409 means the portion is closed.
    BulkPost,
    /// Anything else.
    Other,
}

/// What an HTTP status means for the caller.
///
/// Oomnitza's contract: a 2xx means accepted, a 4xx other than 408/429 means this body will never
/// be accepted, anything else may succeed later.
pub(crate) fn classify(status: u16, operation: Operation) -> ErrorKind {
    match status {
        408 | 429 => ErrorKind::Transient,
        401 | 403 => ErrorKind::Unauthorized,
        409 if operation == Operation::BulkPost => ErrorKind::Closed,
        400..=499 => ErrorKind::Rejected,
        _ => ErrorKind::Transient,
    }
}

/// Reads `Retry-After`: delay-seconds, or an HTTP-date relative to `now`. A date in the past
/// means "now" (zero).
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The first [`BODY_EXCERPT_CHARS`] characters of a body, trimmed; `None` when empty.
pub(crate) fn excerpt(body: &[u8]) -> Option<String> {
    // Decoding only a prefix keeps this cheap on a large body; 4 bytes per char at most.
    let prefix = &body[..body.len().min(BODY_EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(prefix);
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(BODY_EXCERPT_CHARS).collect())
}

/// A failed Oomnitza call: the clients' shared skeleton with this client's [`ErrorKind`]. Its
/// `Display` is the operator-facing message; it never contains a token or password. It carries
/// the HTTP status, the server's `Retry-After` and the first [`BODY_EXCERPT_CHARS`] characters
/// of the answer, where there was one.
pub type Error = peoplesync_retry::ApiError<ErrorKind>;

/// An error answer from Oomnitza: `status` to `what` at `host`.
pub(crate) fn answer_error(
    host: &str,
    what: &str,
    operation: Operation,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    auth: &str,
) -> Error {
    let kind = classify(status, operation);
    let body_excerpt = excerpt(body);
    let said = match &body_excerpt {
        Some(text) => format!("{status}: {text}"),
        None => status.to_string(),
    };
    let message = match (kind, status) {
        (ErrorKind::Transient, _) => {
            let wait = match retry_after {
                Some(delay) => format!(", asking to wait {} s", delay.as_secs()),
                None => String::new(),
            };
            format!(
                "Oomnitza at {host} is busy or failing: it answered {what} with {said}{wait}; the request can be sent again later"
            )
        }
        (ErrorKind::Closed, _) => format!(
            "Oomnitza at {host} refused {what} because the portion is closed ({said}); \
             stop sending to this portion"
        ),
        (ErrorKind::Unauthorized, 403) => format!(
            "Oomnitza at {host} forbade {what} to the user of the configured {auth} ({said}); \
             give that user the rights to read and write users and run integrations, then \
             resume loading"
        ),
        (ErrorKind::Unauthorized, _) if auth.starts_with("API token") => format!(
            "Oomnitza at {host} refused the configured API token while {what} ({said}); \
             create a new API token under Configuration > Security > API tokens, configure \
             it, then resume loading"
        ),
        (ErrorKind::Unauthorized, _) => format!(
            "Oomnitza at {host} refused the token obtained with the configured {auth} while \
             {what} ({said}); check that login's account in Oomnitza, or configure an API \
             token instead, then resume loading"
        ),
        (ErrorKind::Rejected, _) if operation == Operation::BulkPost => format!(
            "Oomnitza at {host} refused {what} ({said}); this body will never be accepted as \
             it is: isolate the bad records and dead-letter them"
        ),
        _ => format!("Oomnitza at {host} refused {what} ({said})"),
    };
    Error::new(kind, message)
        .with_status(status)
        .with_retry_after(retry_after)
        .with_body_excerpt(body_excerpt)
}

/// A transport-level failure (connection refused or reset, timeout, body cut off).
pub(crate) fn transport_error(host: &str, what: &str, failure: NoAnswer) -> Error {
    let message =
        format!("{what} at Oomnitza {host} failed: {failure}; the request can be sent again later");
    Error::new(ErrorKind::Transient, message).with_source(failure.source)
}

/// A 2xx answer whose body is not the expected shape.
pub(crate) fn invalid_response(
    host: &str,
    what: &str,
    body: &[u8],
    error: serde_json::Error,
) -> Error {
    Error::new(
        ErrorKind::InvalidResponse,
        format!(
            "Oomnitza at {host} answered {what} with a body that is not the expected shape \
             ({error}); report it to the peoplesync maintainers with the Oomnitza version"
        ),
    )
    .with_source(error)
    .with_body_excerpt(excerpt(body))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn statuses_are_classified_by_what_to_do() {
        use ErrorKind::*;
        let cases = [
            (408, Transient),
            (429, Transient),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (504, Transient),
            (599, Transient),
            (401, Unauthorized),
            (403, Unauthorized),
            (400, Rejected),
            (404, Rejected),
            (413, Rejected),
            (422, Rejected),
            (409, Closed),
        ];
        for (status, kind) in cases {
            assert_eq!(classify(status, Operation::BulkPost), kind, "{status}");
        }
        assert_eq!(classify(409, Operation::Other), Rejected);
        assert_eq!(classify(302, Operation::Other), Transient);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 28, 0)
            .unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "soon", "-1", "1.5"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn excerpts_are_bounded_and_char_safe() {
        assert_eq!(excerpt(b""), None);
        assert_eq!(excerpt(b"  \n"), None);
        assert_eq!(
            excerpt(b" {\"error\":\"x\"} ").as_deref(),
            Some("{\"error\":\"x\"}")
        );
        let long = "é".repeat(2_000);
        let cut = excerpt(long.as_bytes()).unwrap();
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn answers_keep_status_retry_after_and_excerpt() {
        let error = answer_error(
            "acme.oomnitza.com",
            "posting 2 users to portion p",
            Operation::BulkPost,
            429,
            Some(Duration::from_secs(7)),
            b"slow down",
            "API token",
        );
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(error.status(), Some(429));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.body_excerpt(), Some("slow down"));
        assert!(error.to_string().contains("wait 7 s"), "{error}");

        let error = answer_error(
            "h",
            "posting",
            Operation::BulkPost,
            422,
            None,
            b"{\"bad\":1}",
            "API token",
        );
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(
            error.to_string().contains("isolate the bad records"),
            "{error}"
        );

        let error = answer_error(
            "h",
            "reading users",
            Operation::Other,
            401,
            None,
            b"",
            "API token",
        );
        assert_eq!(error.kind(), ErrorKind::Unauthorized);
        assert!(error.to_string().contains("API tokens"), "{error}");
        assert_eq!(error.body_excerpt(), None);
    }
}
