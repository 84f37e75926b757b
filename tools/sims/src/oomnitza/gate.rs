//! Authentication and the checks every `/api/v2` and `/api/v3` request passes before its
//! handler runs: latency, outage (`503`: the whole API, the bulk or users endpoints alone, or
//! portion reads alone), rate limit (`429` + `Retry-After`), transient failure (`503`),
//! `Authorization2` (`401`), the session's `X-CSRF-Token` (counted; `403` only if
//! [`super::OomnitzaBehavior::require_csrf_echo`]), rights (`403`: every request, or those
//! to the paths listed in `forbidden_paths`). Also
//! `POST /api/request_token` (a password session, answered with an `X-CSRF-Token` header, as
//! Oomnitza's connector expects) and the connector's token check
//! `GET /api/v2/mappings?name=AuthTest` (which gives the API token an `X-CSRF-Token` with
//! [`super::OomnitzaBehavior::csrf_for_api_token`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::Shared;
use crate::faults::{pass, wait_latency};
use crate::rng::mix;
use crate::sync::lock;

/// The header a session's anti-CSRF token travels in, both ways.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// An Oomnitza-style JSON error: `{"error": <kind>, "message": <text>}`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": kind, "message": message}))).into_response()
}

/// `400` `bad_request`: a request Oomnitza cannot read.
pub(crate) fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// `404` `not_found`: what the request names is not there.
pub(crate) fn not_found(message: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

/// Axum middleware wrapped around the `/api/v3` routes.
pub(crate) async fn api_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let mut csrf = None;
    lock(&shared.requests).api_requests += 1;
    let latency = lock(&shared.control).faults.latency_ms;
    let path = request.uri().path().to_owned();
    let portion_read = request.method() == axum::http::Method::GET && is_portion(&path);
    let response = pass(&shared.flight, latency, request, next, |headers| {
        refusal(&shared, headers, &path, portion_read, &mut csrf)
    })
    .await;
    let status = response.status();
    let mut requests = lock(&shared.requests);
    match csrf {
        Some(true) => requests.csrf_echoed += 1,
        Some(false) => requests.csrf_missing += 1,
        None => {}
    }
    *requests.status_counts.entry(status.as_u16()).or_default() += 1;
    if status == StatusCode::TOO_MANY_REQUESTS {
        requests.requests_429 += 1;
    }
    drop(requests);
    tracing::debug!(status = status.as_u16(), "oomnitza api call");
    response
}

/// Whether `path` names one portion (`/api/v3/bulk/{portion}`), not its finalize.
fn is_portion(path: &str) -> bool {
    path.strip_prefix("/api/v3/bulk/")
        .is_some_and(|portion| !portion.is_empty() && !portion.contains('/'))
}

/// The path of the credential check, which is how an API token gets its `X-CSRF-Token`, so it
/// need not echo one.
const CREDENTIAL_CHECK: &str = "/api/v2/mappings";

/// The answer that refuses this request (to `path`; `portion_read`: a read of a portion's
/// state), or `None` to let it through. `csrf` is set where a token is expected: whether the
/// request echoed the session's `X-CSRF-Token`.
fn refusal(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    portion_read: bool,
    csrf: &mut Option<bool>,
) -> Option<Response> {
    let mut control = lock(&shared.control);
    if control.in_outage(path) || (portion_read && control.faults.portion_reads_failing) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Oomnitza is unavailable",
        ));
    }
    if !control.admit_rate() {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many requests, slow down",
        );
        // "Sometimes with Retry-After": only when the faults give one.
        if let Some(secs) = control.faults.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return Some(response);
    }
    let rate = control.faults.transient_failure_rate;
    if control.rng.chance(rate) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable, try again",
        ));
    }
    let token = headers
        .get("authorization2")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match token {
        None | Some("") => {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The Authorization2 header is missing",
            ));
        }
        Some(t) => {
            let expected = if t == shared.config.api_token {
                let expects = control.behavior.csrf_for_api_token && path != CREDENTIAL_CHECK;
                // Before any credential check nothing was issued: nothing can be echoed.
                expects.then(|| control.api_token_csrf.clone().unwrap_or_default())
            } else {
                match control.sessions.get(t) {
                    Some(expected) => Some(expected.clone()),
                    None => {
                        return Some(error(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "The API token is not valid",
                        ));
                    }
                }
            };
            if let Some(expected) = expected {
                let echoed = headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| !expected.is_empty() && v == expected);
                *csrf = Some(echoed);
                if !echoed && control.behavior.require_csrf_echo {
                    return Some(error(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "The X-CSRF-Token header is missing or does not match the session's",
                    ));
                }
            }
        }
    }
    let faults = &control.faults;
    if faults.forbidden
        || faults
            .forbidden_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The API token has no rights for this request",
        ));
    }
    if faults
        .missing_paths
        .iter()
        .any(|p| path.starts_with(p.as_str()))
    {
        return Some(error(StatusCode::NOT_FOUND, "not_found", "Not found"));
    }
    None
}

/// `POST /api/request_token` with `login` and `password` (form-encoded) → `{"token": ...}`.
pub(crate) async fn request_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let latency = lock(&shared.control).faults.latency_ms;
    wait_latency(latency).await;
    let mut login = None;
    let mut password = None;
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "login" => login = Some(v.into_owned()),
            "password" => password = Some(v.into_owned()),
            _ => {}
        }
    }
    let config = &shared.config;
    if login.as_deref() != Some(config.login.as_str())
        || password.as_deref() != Some(config.password.as_str())
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid login or password",
        );
    }
    let mut control = lock(&shared.control);
    let n = control.sessions.len() as u64 + 1;
    let salt = chrono::Utc::now().timestamp_micros() as u64;
    let token = format!("{:016x}{:016x}", mix(n), mix(n ^ salt));
    let csrf = new_csrf(n, salt);
    control.sessions.insert(token.clone(), csrf.clone());
    drop(control);
    with_csrf(Json(json!({"token": token})).into_response(), &csrf)
}

/// An anti-CSRF token made of `n` and `salt`.
fn new_csrf(n: u64, salt: u64) -> String {
    format!(
        "{:016x}{:016x}",
        mix(!n ^ salt),
        mix(n.rotate_left(17) ^ salt)
    )
}

/// `response` with an `X-CSRF-Token` header of `csrf`.
fn with_csrf(mut response: Response, csrf: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(csrf) {
        response.headers_mut().insert(CSRF_HEADER, value);
    }
    response
}

/// `GET /api/v2/mappings?name=...`: the integration field mappings stored under that name.
/// Oomnitza's connector reads `name=AuthTest` to check a token (the gate has answered `401` or
/// `403` by then); this tenant stores no mappings, so every name answers an empty object. With
/// [`super::OomnitzaBehavior::csrf_for_api_token`], the API token's answer carries the
/// `X-CSRF-Token` its later requests echo (issued once, then the same).
pub(crate) async fn mappings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let named = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "name" || (k == "connector_id" && !v.is_empty()));
    if !named {
        return bad_request("name (or connector_id) is required");
    }
    let answer = Json(json!({})).into_response();
    let api_token = headers
        .get("authorization2")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim() == shared.config.api_token);
    let mut control = lock(&shared.control);
    if !(api_token && control.behavior.csrf_for_api_token) {
        return answer;
    }
    let salt = chrono::Utc::now().timestamp_micros() as u64;
    let csrf = control
        .api_token_csrf
        .get_or_insert_with(|| new_csrf(0, salt))
        .clone();
    drop(control);
    with_csrf(answer, &csrf)
}
