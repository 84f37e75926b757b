//! The error bodies Sage People and Salesforce send, read into one [`Fault`] whatever their
//! shape; an unknown body is kept as an excerpt so messages can still quote it.

use serde_json::Value;

/// Longest body excerpt quoted in a message when the body is not a known error shape.
const EXCERPT_CHARS: usize = 200;

/// How deep an `innererror` chain is followed; deeper levels are ignored.
const MAX_INNER_DEPTH: usize = 16;

/// The word every concurrent limit of a `REQUEST_LIMIT_EXCEEDED` carries in its name
/// (`ConcurrentPerOrgLongTxn`, `ConcurrentRequests`, `ConcurrentPerOrgApex`): too many requests
/// at once in the org, which asks to back off for seconds rather than to stop the run. The daily
/// quota (`TotalRequests`) and any limit Salesforce may name later do not, and stop the run.
const CONCURRENT_LIMIT: &str = "concurrent";

/// The code of the deepest `innererror` that has one: the hierarchy goes from general to
/// specific, so the last code is the one that says most.
fn deepest_inner_code(mut inner: Option<&Value>) -> Option<String> {
    let mut deepest = None;
    for _ in 0..MAX_INNER_DEPTH {
        let Some(level) = inner.filter(|v| v.is_object()) else {
            break;
        };
        if let Some(code) = level
            .get("code")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            deepest = Some(code.to_owned());
        }
        inner = level.get("innererror");
    }
    deepest
}

/// What an error answer said, whatever its shape.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The most specific code: the Sage People inner code, the Salesforce `errorCode`, or the
    /// OAuth `error`.
    pub code: Option<String>,
    /// The Sage People outer code (`REQUEST_ERROR`, `SAGE_PEOPLE_CONFIGURATION`, ...).
    pub outer_code: Option<String>,
    /// The human-readable message, or an excerpt of an unknown body.
    pub message: Option<String>,
    /// What the error is about: the Sage People `target`, or the Salesforce `fields`.
    pub target: Option<String>,
}

impl Fault {
    /// Reads any of the known error shapes; an unknown body becomes an excerpt in `message`.
    pub(crate) fn parse(body: &[u8]) -> Fault {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Fault::from_value(&value).unwrap_or_else(|| Fault::excerpt(body)),
            Err(_) => Fault::excerpt(body),
        }
    }

    fn from_value(value: &Value) -> Option<Fault> {
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        match value {
            // Salesforce: [{"message": "...", "errorCode": "...", "fields": [...]}]
            Value::Array(items) => {
                let first = items.first()?;
                let fields = first.get("fields").and_then(Value::as_array).map(|fields| {
                    fields
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                Some(Fault {
                    code: text(first.get("errorCode")),
                    outer_code: None,
                    message: text(first.get("message")),
                    target: fields.filter(|f| !f.is_empty()),
                })
            }
            Value::Object(map) => match map.get("error")? {
                // Sage People: {"error": {"code", "message", "target", "innererror": {"code"}}}
                Value::Object(error) => {
                    let outer = text(error.get("code"));
                    let inner = deepest_inner_code(error.get("innererror"));
                    Some(Fault {
                        code: inner.or_else(|| outer.clone()),
                        outer_code: outer,
                        message: text(error.get("message")),
                        target: text(error.get("target")),
                    })
                }
                // OAuth: {"error": "invalid_grant", "error_description": "..."}
                Value::String(code) => Some(Fault {
                    code: Some(code.clone()),
                    outer_code: None,
                    message: text(map.get("error_description")),
                    target: None,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether Salesforce's message names one of the org's concurrent-request limits, not the
    /// daily quota, as the limit that was hit.
    pub(super) fn is_concurrent_limit(&self) -> bool {
        self.message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains(CONCURRENT_LIMIT))
    }

    fn excerpt(body: &[u8]) -> Fault {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        Fault {
            message: (!text.is_empty()).then(|| text.chars().take(EXCERPT_CHARS).collect()),
            ..Fault::default()
        }
    }

    /// `503 SERVER_UNAVAILABLE: Server is busy`, for messages.
    pub(super) fn describe(&self, status: u16) -> String {
        let mut out = status.to_string();
        if let Some(code) = &self.code {
            out.push(' ');
            out.push_str(code);
        }
        if let Some(message) = &self.message {
            out.push_str(": ");
            out.push_str(message);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sage_people_envelope() {
        let body = br#"{"error":{"code":"REQUEST_ERROR","message":"Bad marker","target":"marker","innererror":{"code":"INVALID_MARKER"},"details":[]}}"#;
        assert_eq!(
            Fault::parse(body),
            Fault {
                code: Some("INVALID_MARKER".into()),
                outer_code: Some("REQUEST_ERROR".into()),
                message: Some("Bad marker".into()),
                target: Some("marker".into()),
            }
        );
    }

    #[test]
    fn parses_the_envelope_without_inner_error() {
        let body = br#"{"error":{"code":"INTERNAL_API_ERROR","message":"oops"}}"#;
        let fault = Fault::parse(body);
        assert_eq!(fault.code.as_deref(), Some("INTERNAL_API_ERROR"));
        assert_eq!(fault.message.as_deref(), Some("oops"));
    }

    #[test]
    fn parses_the_salesforce_array() {
        let body = br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID","fields":["A","B"]}]"#;
        assert_eq!(
            Fault::parse(body),
            Fault {
                code: Some("INVALID_SESSION_ID".into()),
                outer_code: None,
                message: Some("Session expired or invalid".into()),
                target: Some("A, B".into()),
            }
        );
    }

    #[test]
    fn parses_the_oauth_error() {
        let body = br#"{"error":"invalid_grant","error_description":"authentication failure"}"#;
        let fault = Fault::parse(body);
        assert_eq!(fault.code.as_deref(), Some("invalid_grant"));
        assert_eq!(fault.message.as_deref(), Some("authentication failure"));
    }

    #[test]
    fn quotes_an_unknown_body() {
        let fault = Fault::parse(b"<html>Bad Gateway</html>");
        assert_eq!(fault.code, None);
        assert_eq!(fault.message.as_deref(), Some("<html>Bad Gateway</html>"));
        assert_eq!(Fault::parse(b"  "), Fault::default());
        let long = "x".repeat(1000);
        assert_eq!(
            Fault::parse(long.as_bytes()).message.map(|m| m.len()),
            Some(200)
        );
    }
}
