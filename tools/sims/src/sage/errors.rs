//! The three error bodies of Sage People: OAuth errors, Salesforce error arrays, and the
//! Sage People envelope (`{"error": {"code", "message", "target", "innererror", "details"}}`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `400 {"error": <error>, "error_description": <description>}` from the token endpoint.
pub(crate) fn oauth(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The Salesforce error array `[{"message", "errorCode"}]`.
pub(crate) fn salesforce(status: StatusCode, error_code: &str, message: &str) -> Response {
    (
        status,
        Json(json!([{"message": message, "errorCode": error_code}])),
    )
        .into_response()
}

/// `401 INVALID_SESSION_ID`: the token is missing, unknown, revoked or expired.
pub(crate) fn invalid_session() -> Response {
    salesforce(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        "Session expired or invalid",
    )
}

/// `200` with an HTML page: not Salesforce's answer, but what a proxy or portal in front of
/// the org might serve in its place.
pub(crate) fn html_page() -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><head><title>Access gateway</title></head>\
         <body><p>Please sign in to continue.</p></body></html>",
    )
        .into_response()
}

/// `503 SERVER_UNAVAILABLE`.
pub(crate) fn unavailable() -> Response {
    transient(None)
}

/// A transient failure with `status` (one of [`TRANSIENT_STATUSES`]; none or any other answers
/// `503`), in the Salesforce error array.
pub(crate) fn transient(status: Option<u16>) -> Response {
    let (status, code, message) = match status {
        Some(420) => (
            StatusCode::from_u16(420).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            "REQUEST_LIMIT_EXCEEDED",
            "Too many requests at once, please try again later.",
        ),
        Some(429) => (
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMIT_EXCEEDED",
            "Too many requests, please slow down.",
        ),
        Some(500) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred.",
        ),
        Some(502) => (
            StatusCode::BAD_GATEWAY,
            "SERVER_UNAVAILABLE",
            "The gateway could not reach the server.",
        ),
        Some(504) => (
            StatusCode::GATEWAY_TIMEOUT,
            "SERVER_UNAVAILABLE",
            "The gateway could not reach the server.",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable, please try again later.",
        ),
    };
    salesforce(status, code, message)
}

/// The statuses the published contract calls transient, which `transient_status` may be.
pub const TRANSIENT_STATUSES: [u16; 6] = [420, 429, 500, 502, 503, 504];

/// The Sage People error envelope with one inner code.
pub(crate) fn envelope(
    status: StatusCode,
    code: &str,
    message: &str,
    target: &str,
    inner: &str,
) -> Response {
    envelope_chain(status, code, message, target, &[inner])
}

/// The Sage People error envelope whose `innererror` nests `inner` from the most general code
/// to the most specific (the OpenAPI's `InnerError` is hierarchical).
pub(crate) fn envelope_chain(
    status: StatusCode,
    code: &str,
    message: &str,
    target: &str,
    inner: &[&str],
) -> Response {
    let innererror = inner.iter().rev().fold(None, |nested, code| {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), json!(code));
        if let Some(nested) = nested {
            error.insert("innererror".into(), nested);
        }
        Some(serde_json::Value::Object(error))
    });
    let mut error = json!({"code": code, "message": message, "target": target, "details": []});
    if let (Some(inner), Some(map)) = (innererror, error.as_object_mut()) {
        map.insert("innererror".into(), inner);
    }
    (status, Json(json!({"error": error}))).into_response()
}

/// `400 REQUEST_ERROR / INVALID_FILTER`, with the parser's more specific code nested in it
/// (`SYNTAX_ERROR`, `UNEXPECTED_TOKEN`, ...).
pub(crate) fn invalid_filter(message: &str, specific: &str) -> Response {
    envelope_chain(
        StatusCode::BAD_REQUEST,
        "REQUEST_ERROR",
        message,
        "$filter",
        &["INVALID_FILTER", specific],
    )
}

/// `400 REQUEST_ERROR / INVALID_MARKER`.
pub(crate) fn invalid_marker(marker: &str) -> Response {
    let message = format!("The marker '{marker}' is not a valid employee id for this org.");
    envelope(
        StatusCode::BAD_REQUEST,
        "REQUEST_ERROR",
        &message,
        "marker",
        "INVALID_MARKER",
    )
}
