//! Reading error answers from Sage People and Salesforce, and deciding what each one means for
//! the caller.
//!
//! Three body shapes exist: the Sage People envelope
//! `{"error":{"code","message","target","innererror":{"code"}}}`, the Salesforce array
//! `[{"message","errorCode","fields"}]` and the OAuth token endpoint's
//! `{"error","error_description"}`. Classification is pure: status and body in, [`Error`] out.

use serde_json::Value;

use crate::config::Credentials;
use crate::error::{Error, ErrorKind};

/// Longest body excerpt quoted in a message when the body is not a known error shape.
const EXCERPT_CHARS: usize = 200;

/// How deep an `innererror` chain is followed; deeper levels are ignored.
const MAX_INNER_DEPTH: usize = 16;

/// The limit named in a `REQUEST_LIMIT_EXCEEDED` that asks to back off for seconds rather than
/// to stop the run: too many long-running requests at once in the org.
const CONCURRENT_LIMIT: &str = "ConcurrentPerOrgLongTxn";

/// Every inner error code of the Sage People API 4.8 (the OpenAPI's `InnerError.code`).
/// All but `UNKNOWN_EXCEPTION` say that the request or the org's set-up is wrong: no retry helps.
pub const PUBLISHED_INNER_CODES: [&str; 27] = [
    "MISSING_API_PERMISSION",
    "FIELD_ERROR",
    "INACCESSIBLE_FIELD",
    "INVALID_RELATIONSHIP",
    "INVALID_HEADER",
    "INVALID_ACCEPT_HEADER",
    "INVALID_QUERY_STRING",
    "INVALID_MARKER",
    "INVALID_FILTER",
    "SYNTAX_ERROR",
    "UNEXPECTED_TOKEN",
    "UNTERMINATED_LITERAL",
    "GROUPING_TOO_DEEP",
    "DATA_TYPE_MISMATCH",
    "UNKNOWN_IDENTIFIER",
    "INVALID_OPERATION",
    "INVALID_PARAMETER",
    "MISSING_NAMED_CREDENTIAL",
    "ABSENCE_BALANCE_CALCULATION_NOT_ENABLED",
    "OBJECT_NOT_ACCESSIBLE",
    "CANNOT_DETERMINE_OPERATOR_PRECEDENCE",
    "UNKNOWN_EXCEPTION",
    "INVALID_REQUEST_BODY",
    "DEPENDENCY_NOT_INSTALLED",
    "CONTENT_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "INVALID_PAYDETAILS_DOCUMENT",
];

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

    /// Whether Salesforce's message says the concurrent long-running request limit, not the
    /// daily quota, was hit.
    fn is_concurrent_limit(&self) -> bool {
        self.message
            .as_deref()
            .is_some_and(|m| m.contains(CONCURRENT_LIMIT))
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
    fn describe(&self, status: u16) -> String {
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

/// The request an error answer belongs to, for messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// The API host (`acme.my.salesforce.com`).
    pub host: &'a str,
    /// What was asked, as a phrase: `listing employees`, `reading employee a2G...`.
    pub what: &'a str,
    /// The `$filter` sent, if any.
    pub filter: Option<&'a str>,
    /// The `marker` sent, if any.
    pub marker: Option<&'a str>,
}

/// Whether a status is worth retrying whatever the body says.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 420 | 429) || (500..=599).contains(&status)
}

/// Classifies a non-2xx answer of the Employees API.
///
/// `401` comes out as [`ErrorKind::Authentication`] with status 401; the caller renews the token
/// once before it lets that error through.
pub(crate) fn classify_api(status: u16, fault: Fault, request: &Request<'_>) -> Error {
    let Request {
        host,
        what,
        filter,
        marker,
    } = *request;
    let said = fault.describe(status);
    let field = match fault.target.as_deref().filter(|t| !t.is_empty()) {
        Some(target) => format!("the field {target}"),
        None => "a field the Employees API reads".to_owned(),
    };
    let object = match fault.target.as_deref() {
        Some(target) => target.to_owned(),
        None => {
            "the Sage People objects the Employees API reads (team members, employments)".to_owned()
        }
    };
    let fix = fault
        .code
        .as_deref()
        .and_then(|code| configuration_fix(code, &field, &object, filter));
    let (kind, message) = match (status, fault.code.as_deref()) {
        (401, _) => (
            ErrorKind::Authentication,
            format!("Salesforce at {host} refused the access token while {what} ({said})"),
        ),
        (_, Some("REQUEST_LIMIT_EXCEEDED")) if fault.is_concurrent_limit() => (
            ErrorKind::Transient,
            format!(
                "the Salesforce org at {host} has too many long-running requests at once while \
                 {what} ({said}); backing off and trying again (if this persists, other \
                 integrations of the org are holding long requests)"
            ),
        ),
        (_, Some("REQUEST_LIMIT_EXCEEDED")) => (
            ErrorKind::QuotaExhausted,
            format!(
                "the Salesforce org at {host} has used up its API request limit while {what} \
                 ({said}); the run stops here with its checkpoint kept: run it again once the \
                 org's rolling 24-hour API usage has dropped (Setup > Company Information > \
                 API Requests, Last 24 Hours)"
            ),
        ),
        (_, Some("INVALID_MARKER")) => (
            ErrorKind::InvalidMarker,
            format!(
                "Sage People at {host} refused the paging marker {} while {what} ({said}); \
                 restart the listing from the beginning",
                marker.unwrap_or("(none)")
            ),
        ),
        (_, Some(_)) if fix.is_some() => (
            ErrorKind::Configuration,
            format!(
                "Sage People at {host} refused {what} ({said}): {}",
                fix.as_deref().unwrap_or_default()
            ),
        ),
        (_, Some("SERVER_UNAVAILABLE")) => (
            ErrorKind::Transient,
            format!("Salesforce at {host} is unavailable while {what} ({said})"),
        ),
        (status, _) if is_transient_status(status) => (
            ErrorKind::Transient,
            format!("Sage People at {host} failed while {what} ({said})"),
        ),
        (404, _) => (
            ErrorKind::Configuration,
            format!(
                "Sage People at {host} has no Employees API v4 ({said} while {what}); check that \
                 the login URL belongs to the Sage People org and that its Sage People package \
                 includes the Employees API"
            ),
        ),
        (403, _) => (
            ErrorKind::Configuration,
            format!(
                "Sage People at {host} forbade {what} ({said}); give the integration user the \
                 Sage People \"Employees API\" permission set and Read / View All access to \
                 team members, then run again"
            ),
        ),
        (400..=499, _) => (
            ErrorKind::Configuration,
            format!(
                "Sage People at {host} refused {what} ({said}); check the integration's filter \
                 and the integration user's access in Sage People, then run again"
            ),
        ),
        _ => (
            ErrorKind::InvalidResponse,
            format!("Sage People at {host} gave an unexpected answer while {what} ({said})"),
        ),
    };
    Error::new(kind, message)
        .with_status(status)
        .with_code(fault.code)
}

/// What to fix for a code that means the request or the org's set-up is wrong, whatever the
/// HTTP status; `None` for codes a retry may cure (`UNKNOWN_EXCEPTION`, unknown codes).
fn configuration_fix(
    code: &str,
    field: &str,
    object: &str,
    filter: Option<&str>,
) -> Option<String> {
    let filter_fix = || match filter {
        Some(filter) => format!(
            "fix the integration's source_filter `{filter}` (operators eq, ne, gt, lt, and, or; \
             nested fields with dots; text in single quotes, e.g. workAddress.country eq \
             'France'), then run again"
        ),
        None => "peoplesync sent no filter, so something between peoplesync and Sage People \
                 rewrites requests, or the login URL is not a Sage People org; check both, then \
                 report it to the peoplesync maintainers"
            .to_owned(),
    };
    Some(match code {
        "MISSING_API_PERMISSION" => "the API user may not use the Employees API; in Salesforce \
             Setup, assign the Sage People \"Employees API\" permission set to the integration \
             user (the External Client App's run-as user), then run again"
            .to_owned(),
        "INACCESSIBLE_FIELD" | "FIELD_ERROR" => format!(
            "the API user cannot read {field}; give the integration user's permission set Read \
             access to it (field-level security), or take it out of the \"Employee API \
             Additional Fields\" field set, then run again"
        ),
        "INVALID_RELATIONSHIP" => format!(
            "a field of the \"Employee API Additional Fields\" field set follows a relationship \
             the API cannot read ({field}); fix or remove it in the field set, then run again"
        ),
        "OBJECT_NOT_ACCESSIBLE" => format!(
            "the API user cannot read an object; give the integration user's permission set \
             Read and View All on {object}, then run again"
        ),
        "INVALID_FILTER"
        | "SYNTAX_ERROR"
        | "UNEXPECTED_TOKEN"
        | "UNTERMINATED_LITERAL"
        | "GROUPING_TOO_DEEP"
        | "DATA_TYPE_MISMATCH"
        | "UNKNOWN_IDENTIFIER"
        | "INVALID_OPERATION"
        | "CANNOT_DETERMINE_OPERATOR_PRECEDENCE"
        | "MALFORMED_QUERY"
        | "INVALID_FIELD" => filter_fix(),
        "INVALID_QUERY_STRING" | "INVALID_PARAMETER" => match filter {
            Some(_) => filter_fix(),
            None => "a query parameter was refused although peoplesync sends only `marker` and \
                     `$filter`; check that nothing between peoplesync and Sage People rewrites \
                     requests, then report it to the peoplesync maintainers"
                .to_owned(),
        },
        "INVALID_ACCEPT_HEADER" | "INVALID_HEADER" => {
            "peoplesync sends `Accept: application/json`, \
             so a proxy between peoplesync and Sage People is rewriting headers: fix the proxy"
                .to_owned()
        }
        "MISSING_NAMED_CREDENTIAL" => "the Sage People org lacks a named credential the API \
             needs; ask the Sage People administrator to set up the named credentials of the \
             Sage People API package, then run again"
            .to_owned(),
        "DEPENDENCY_NOT_INSTALLED" => "a package the Sage People API depends on is not \
             installed in the org; ask the Sage People administrator to install it (see the Sage \
             People API set-up guide), then run again"
            .to_owned(),
        "ABSENCE_BALANCE_CALCULATION_NOT_ENABLED" => "absence balance calculation is not \
             enabled in the org; peoplesync does not read absences, so check that the login URL \
             and the API path are not rewritten, then report it to the peoplesync maintainers"
            .to_owned(),
        "CONTENT_TOO_LARGE" => "the page is too large; take fields out of the \"Employee API \
             Additional Fields\" field set, then run again"
            .to_owned(),
        "INVALID_REQUEST_BODY" | "UNSUPPORTED_MEDIA_TYPE" | "INVALID_PAYDETAILS_DOCUMENT" => {
            "peoplesync only reads and sends no body, so the request was changed on its way; \
             check that nothing between peoplesync and Sage People rewrites requests, then \
             report it to the peoplesync maintainers"
                .to_owned()
        }
        _ => return None,
    })
}

/// Classifies a non-2xx answer of the OAuth token endpoint.
///
/// `audience` is the JWT `aud` actually used, for the JWT bearer grant's hints.
pub(crate) fn classify_token(
    status: u16,
    fault: Fault,
    credentials: &Credentials,
    audience: &str,
    host: &str,
) -> Error {
    let grant = credentials.grant_name();
    let said = fault.describe(status);
    let (kind, message) = match fault.code.as_deref() {
        _ if is_transient_status(status) => (
            ErrorKind::Transient,
            format!(
                "the Salesforce token endpoint at {host} failed for the {grant} grant ({said})"
            ),
        ),
        Some("invalid_client" | "invalid_client_id") => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} refused the External Client App's credentials for the \
                 {grant} grant ({said}); check the consumer key{} configured for peoplesync \
                 against the External Client App in this org, then run again",
                if matches!(credentials, Credentials::JwtBearer { .. }) {
                    ""
                } else {
                    " and consumer secret"
                }
            ),
        ),
        Some("unsupported_grant_type") => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} does not allow the {grant} grant ({said}); enable the \
                 {grant} flow in the External Client App's OAuth settings, or configure another \
                 grant, then run again"
            ),
        ),
        Some("invalid_grant") => (
            ErrorKind::Configuration,
            invalid_grant(credentials, audience, host, &said),
        ),
        _ => (
            ErrorKind::Configuration,
            format!(
                "Salesforce at {host} refused the token request for the {grant} grant ({said}); \
                 check the login URL and the credentials configured for peoplesync, then run \
                 again"
            ),
        ),
    };
    Error::new(kind, message)
        .with_status(status)
        .with_code(fault.code)
}

/// `invalid_grant` has a different usual cause for each grant.
fn invalid_grant(credentials: &Credentials, audience: &str, host: &str, said: &str) -> String {
    match credentials {
        Credentials::ClientCredentials { .. } => format!(
            "Salesforce at {host} refused the client credentials grant ({said}); in the External \
             Client App, enable the client credentials flow and set its run-as user to the \
             active integration user, then run again"
        ),
        Credentials::JwtBearer { username, .. } => format!(
            "Salesforce at {host} refused the JWT bearer assertion for {username} ({said}); check \
             that the certificate uploaded to the External Client App matches peoplesync's \
             private key, that {username} is an active user pre-authorised for the app (admin \
             approved users, with their profile or permission set added to the app's policies), \
             and that the audience `{audience}` is what Salesforce expects: \
             https://login.salesforce.com (https://test.salesforce.com for a sandbox) or an \
             Experience Cloud site URL, never the My Domain host (leave `audience` unset for the \
             default), then run again"
        ),
        Credentials::Password { username, .. } => format!(
            "Salesforce at {host} refused the username-password grant for {username} ({said}); \
             check the password and that the current security token is appended to it, that the \
             user is active and not locked out, and that peoplesync's address is within the \
             user's login IP ranges, then run again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn request() -> Request<'static> {
        Request {
            host: "acme.my.salesforce.com",
            what: "listing employees",
            filter: Some("workAddress.country eq 'France'"),
            marker: Some("a2G000000000042"),
        }
    }

    fn sage(status: u16, inner: &str) -> Error {
        let body = format!(
            r#"{{"error":{{"code":"REQUEST_ERROR","message":"boom","target":"fHCM2__Team_Member__c.Secret__c","innererror":{{"code":"{inner}"}},"details":[]}}}}"#
        );
        classify_api(status, Fault::parse(body.as_bytes()), &request())
    }

    fn salesforce(status: u16, code: &str) -> Error {
        let body = format!(r#"[{{"message":"boom","errorCode":"{code}"}}]"#);
        classify_api(status, Fault::parse(body.as_bytes()), &request())
    }

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

    #[test]
    fn configuration_codes_fail_the_run_and_say_what_to_fix() {
        let cases = [
            (
                403,
                "MISSING_API_PERMISSION",
                "\"Employees API\" permission set",
            ),
            (
                403,
                "INACCESSIBLE_FIELD",
                "read the field fHCM2__Team_Member__c.Secret__c",
            ),
            (403, "OBJECT_NOT_ACCESSIBLE", "Read and View All"),
            (400, "INVALID_FILTER", "fix the integration's source_filter"),
            (400, "INVALID_ACCEPT_HEADER", "proxy"),
            (413, "CONTENT_TOO_LARGE", "Employee API Additional Fields"),
        ];
        for (status, code, hint) in cases {
            let error = sage(status, code);
            assert_eq!(error.kind(), ErrorKind::Configuration, "{code}");
            assert_eq!(error.code(), Some(code));
            assert_eq!(error.status(), Some(status));
            let message = error.to_string();
            assert!(message.contains(hint), "{code}: {message}");
            assert!(
                message.contains("acme.my.salesforce.com"),
                "{code}: {message}"
            );
        }
        for code in ["MALFORMED_QUERY", "INVALID_FIELD", "INVALID_FILTER"] {
            let error = salesforce(400, code);
            assert_eq!(error.kind(), ErrorKind::Configuration, "{code}");
            assert!(
                error
                    .to_string()
                    .contains("workAddress.country eq 'France'")
            );
        }
    }

    /// Every published inner code, whatever the HTTP status it comes with: the fatal ones are
    /// configuration errors (never retried), `UNKNOWN_EXCEPTION` goes by the status.
    #[test]
    fn every_published_inner_code_is_classified_whatever_the_status() {
        use ErrorKind::*;
        let table: [(&str, ErrorKind); 27] = [
            ("MISSING_API_PERMISSION", Configuration),
            ("FIELD_ERROR", Configuration),
            ("INACCESSIBLE_FIELD", Configuration),
            ("INVALID_RELATIONSHIP", Configuration),
            ("INVALID_HEADER", Configuration),
            ("INVALID_ACCEPT_HEADER", Configuration),
            ("INVALID_QUERY_STRING", Configuration),
            ("INVALID_MARKER", InvalidMarker),
            ("INVALID_FILTER", Configuration),
            ("SYNTAX_ERROR", Configuration),
            ("UNEXPECTED_TOKEN", Configuration),
            ("UNTERMINATED_LITERAL", Configuration),
            ("GROUPING_TOO_DEEP", Configuration),
            ("DATA_TYPE_MISMATCH", Configuration),
            ("UNKNOWN_IDENTIFIER", Configuration),
            ("INVALID_OPERATION", Configuration),
            ("INVALID_PARAMETER", Configuration),
            ("MISSING_NAMED_CREDENTIAL", Configuration),
            ("ABSENCE_BALANCE_CALCULATION_NOT_ENABLED", Configuration),
            ("OBJECT_NOT_ACCESSIBLE", Configuration),
            ("CANNOT_DETERMINE_OPERATOR_PRECEDENCE", Configuration),
            ("UNKNOWN_EXCEPTION", Transient),
            ("INVALID_REQUEST_BODY", Configuration),
            ("DEPENDENCY_NOT_INSTALLED", Configuration),
            ("CONTENT_TOO_LARGE", Configuration),
            ("UNSUPPORTED_MEDIA_TYPE", Configuration),
            ("INVALID_PAYDETAILS_DOCUMENT", Configuration),
        ];
        let listed: Vec<&str> = table.iter().map(|(code, _)| *code).collect();
        assert_eq!(
            listed, PUBLISHED_INNER_CODES,
            "the table covers the published list"
        );
        for (code, kind) in table {
            for status in [400, 403, 406, 413, 415, 500, 503] {
                let error = sage(status, code);
                let expected = match kind {
                    // UNKNOWN_EXCEPTION says nothing: the status decides.
                    Transient if status < 500 => Configuration,
                    other => other,
                };
                assert_eq!(error.kind(), expected, "{code} with {status}");
                assert_eq!(error.code(), Some(code));
                if expected == Configuration {
                    assert!(!error.kind().is_retryable(), "{code} with {status}");
                    assert!(
                        error.to_string().contains("then run again")
                            || error.to_string().contains("report it")
                            || error.to_string().contains("fix the proxy"),
                        "{code}: says what to do: {error}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_deepest_inner_error_gives_the_code() {
        let body = br#"{"error":{"code":"REQUEST_ERROR","message":"Bad filter","target":"$filter",
            "innererror":{"code":"INVALID_FILTER","innererror":{"code":"UNTERMINATED_LITERAL",
            "innererror":{"message":"no code at this level"}}}}}"#;
        let fault = Fault::parse(body);
        assert_eq!(fault.code.as_deref(), Some("UNTERMINATED_LITERAL"));
        assert_eq!(fault.outer_code.as_deref(), Some("REQUEST_ERROR"));
        let error = classify_api(500, fault, &request());
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("source_filter"), "{error}");
    }

    #[test]
    fn the_concurrent_request_limit_is_transient_and_the_daily_quota_is_not() {
        let body = br#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let concurrent = classify_api(403, Fault::parse(body), &request());
        assert_eq!(concurrent.kind(), ErrorKind::Transient);
        assert!(concurrent.to_string().contains("backing off"));
        let body = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let daily = classify_api(403, Fault::parse(body), &request());
        assert_eq!(daily.kind(), ErrorKind::QuotaExhausted);
    }

    #[test]
    fn quota_marker_and_session_errors() {
        let quota = salesforce(403, "REQUEST_LIMIT_EXCEEDED");
        assert_eq!(quota.kind(), ErrorKind::QuotaExhausted);
        assert!(quota.to_string().contains("checkpoint kept"));
        let marker = sage(400, "INVALID_MARKER");
        assert_eq!(marker.kind(), ErrorKind::InvalidMarker);
        assert!(marker.to_string().contains("a2G000000000042"));
        let session = salesforce(401, "INVALID_SESSION_ID");
        assert_eq!(session.kind(), ErrorKind::Authentication);
        assert_eq!(session.status(), Some(401));
    }

    #[test]
    fn server_failures_are_transient() {
        for status in [408, 420, 429, 500, 502, 503, 504] {
            assert_eq!(
                salesforce(status, "X").kind(),
                ErrorKind::Transient,
                "{status}"
            );
        }
        assert_eq!(
            salesforce(503, "SERVER_UNAVAILABLE").kind(),
            ErrorKind::Transient
        );
        let bare = classify_api(502, Fault::parse(b""), &request());
        assert_eq!(bare.kind(), ErrorKind::Transient);
    }

    #[test]
    fn other_client_errors_are_configuration() {
        for status in [400, 403, 404, 405] {
            let error = classify_api(status, Fault::default(), &request());
            assert_eq!(error.kind(), ErrorKind::Configuration, "{status}");
        }
    }

    fn token_error(credentials: &Credentials, status: u16, code: &str) -> Error {
        let body = format!(r#"{{"error":"{code}","error_description":"nope"}}"#);
        classify_token(
            status,
            Fault::parse(body.as_bytes()),
            credentials,
            "https://login.salesforce.com",
            "login.salesforce.com",
        )
    }

    #[test]
    fn token_errors_name_the_grant_and_host() {
        let client = Credentials::ClientCredentials {
            client_id: "id".into(),
            client_secret: SecretString::from("s3cr3t"),
        };
        let jwt = Credentials::JwtBearer {
            client_id: "id".into(),
            username: "api@acme.test".into(),
            audience: None,
            private_key_pem: SecretString::from("pem"),
        };
        let password = Credentials::Password {
            client_id: "id".into(),
            client_secret: SecretString::from("s3cr3t"),
            username: "api@acme.test".into(),
            password: SecretString::from("pw"),
        };
        for credentials in [&client, &jwt, &password] {
            for code in ["invalid_client", "invalid_grant", "unsupported_grant_type"] {
                let error = token_error(credentials, 400, code);
                assert_eq!(error.kind(), ErrorKind::Configuration);
                assert_eq!(error.code(), Some(code));
                let message = error.to_string();
                assert!(message.contains(credentials.grant_name()), "{message}");
                assert!(message.contains("login.salesforce.com"), "{message}");
            }
        }
        assert!(
            token_error(&jwt, 400, "invalid_grant")
                .to_string()
                .contains("certificate")
        );
        assert!(
            token_error(&password, 400, "invalid_grant")
                .to_string()
                .contains("security token")
        );
        assert!(
            token_error(&client, 400, "invalid_grant")
                .to_string()
                .contains("run-as user")
        );
        assert_eq!(token_error(&client, 503, "x").kind(), ErrorKind::Transient);
    }
}
