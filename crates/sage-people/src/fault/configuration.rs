//! What to fix when an answer's code says the request or the org's set-up is wrong: the
//! published inner codes of the Sage People API and, for each, the operator's remedy.

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

/// Whether `code` refuses a `$filter` for what it says: Sage People's filter codes and
/// Salesforce's query codes.
fn is_filter_code(code: &str) -> bool {
    matches!(
        code,
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
            | "INVALID_FIELD"
    )
}

/// Whether `code`, answered to a request that carried a `$filter`, says the filter was refused.
pub(crate) fn refuses_filter(code: &str) -> bool {
    is_filter_code(code) || matches!(code, "INVALID_QUERY_STRING" | "INVALID_PARAMETER")
}

/// Whether `code` says the request or the org's set-up is wrong — a code [`configuration_fix`]
/// has a remedy for — so no retry, and no other reading of the answer, helps.
pub(crate) fn is_configuration_code(code: &str) -> bool {
    configuration_fix(code, "", "", None).is_some()
}

/// What to fix for a code that means the request or the org's set-up is wrong, whatever the
/// HTTP status; `None` for codes a retry may cure (`UNKNOWN_EXCEPTION`, unknown codes).
pub(super) fn configuration_fix(
    code: &str,
    field: &str,
    object: &str,
    filter: Option<&str>,
) -> Option<String> {
    let filter_fix = || match filter {
        Some(filter) => format!(
            "fix the integration's source_filter `{filter}` (comparisons eq, ne, gt, ge, lt, \
             le joined by and / or, negated with not; nested fields with dots; text in single \
             quotes, dates bare as 2024-01-31, e.g. workAddress.country eq 'France'), then run \
             again"
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
        code if is_filter_code(code) => filter_fix(),
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
