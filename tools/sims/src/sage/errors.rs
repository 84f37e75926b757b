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

/// `503 SERVER_UNAVAILABLE`.
pub(crate) fn unavailable() -> Response {
    salesforce(
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_UNAVAILABLE",
        "Server temporarily unavailable, please try again later.",
    )
}

/// The Sage People error envelope.
pub(crate) fn envelope(
    status: StatusCode,
    code: &str,
    message: &str,
    target: &str,
    inner: &str,
) -> Response {
    let body = json!({"error": {
        "code": code,
        "message": message,
        "target": target,
        "innererror": {"code": inner},
        "details": [],
    }});
    (status, Json(body)).into_response()
}

/// `400 REQUEST_ERROR / INVALID_FILTER`.
pub(crate) fn invalid_filter(message: &str) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        "REQUEST_ERROR",
        message,
        "$filter",
        "INVALID_FILTER",
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
