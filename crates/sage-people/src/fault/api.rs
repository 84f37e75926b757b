//! Classifying a non-2xx answer of the Employees API into what the caller should do: retry,
//! restart the listing, stop with the checkpoint kept, or fail the run with what to fix.

use super::body::Fault;
use super::configuration::configuration_fix;
use crate::error::{Error, ErrorKind};

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
                "the Salesforce org at {host} has too many requests at once while {what} \
                 ({said}); backing off and trying again (if this persists, other integrations \
                 of the org are holding requests open)"
            ),
        ),
        // The contract: a 403 with this code is the used-up quota; a 420 or 429 with it is a
        // transient status like any other.
        (403, Some("REQUEST_LIMIT_EXCEEDED")) => (
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
            format!(
                "Sage People at {host} gave an unexpected answer while {what} ({said}); report \
                 it to the peoplesync maintainers with the Sage People version"
            ),
        ),
    };
    Error::new(kind, message)
        .with_status(status)
        .with_code(fault.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::PUBLISHED_INNER_CODES;
    use peoplesync_retry::ApiErrorKind;

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
                    assert!(!error.kind().is_transient(), "{code} with {status}");
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

    fn limit_exceeded(status: u16, message: &str) -> Error {
        let body = serde_json::json!([{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}]);
        classify_api(
            status,
            Fault::parse(body.to_string().as_bytes()),
            &request(),
        )
    }

    #[test]
    fn every_concurrent_limit_is_transient_and_the_daily_quota_is_not() {
        // Every concurrent limit backs off; the daily quota, and a limit this client does not
        // know, stop the run.
        let cases = [
            (
                "ConcurrentPerOrgLongTxn Limit exceeded.",
                ErrorKind::Transient,
            ),
            (
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                ErrorKind::Transient,
            ),
            ("ConcurrentPerOrgApex Limit exceeded", ErrorKind::Transient),
            ("TotalRequests Limit exceeded.", ErrorKind::QuotaExhausted),
            ("SomeNewLimit Limit exceeded.", ErrorKind::QuotaExhausted),
            ("", ErrorKind::QuotaExhausted),
        ];
        for (message, kind) in cases {
            let error = limit_exceeded(403, message);
            assert_eq!(error.kind(), kind, "{message:?}");
            if kind == ErrorKind::Transient {
                assert!(error.to_string().contains("backing off"), "{message:?}");
            }
        }
        let body = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        // 420 and 429 are transient statuses, whatever code they carry.
        for status in [420, 429] {
            let slow_down = classify_api(status, Fault::parse(body), &request());
            assert_eq!(slow_down.kind(), ErrorKind::Transient, "{status}");
        }
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
}
