//! The checks every Employees API call passes before its handler runs, in the platform's
//! order: latency, then (in front of the platform) an HTML page in place of the API, outage,
//! session, quota (then the call counts), transient failure, `Accept`, configuration errors. Every API response is counted, and leaves with `Sforce-Limit-Info`
//! unless the simulator is set to omit it. [`session_gate`] guards the REST API
//! (`/services/data`) routes with the session check alone.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::errors;
use super::state::Shared;
use crate::faults::pass;
use crate::sync::lock;

/// Axum middleware wrapped around the Employees API routes.
pub(crate) async fn api_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    lock(&shared.stats).api_requests += 1;
    let (latency, html_page) = {
        let mut control = lock(&shared.control);
        let rate = control.faults.html_page_rate;
        (control.faults.latency_ms, control.rng.chance(rate))
    };
    let mut response = pass(&shared.flight, latency, request, next, |headers| {
        if html_page {
            return Some(errors::html_page());
        }
        refusal(&shared, headers)
    })
    .await;

    if shared.config.limit_info_header && !html_page {
        add_limit_info(&shared, &mut response);
    }
    let status = response.status();
    let mut stats = lock(&shared.stats);
    *stats.status_counts.entry(status.as_u16()).or_default() += 1;
    if status == StatusCode::UNAUTHORIZED {
        stats.unauthorized += 1;
    }
    drop(stats);
    tracing::debug!(status = status.as_u16(), "sage api call");
    response
}

/// Middleware of the REST API routes: a valid session is all they need; their responses always
/// carry `Sforce-Limit-Info`, as Salesforce documents for `/services/data`. They do not count
/// against the quota (whether `/limits` itself counts is not published).
pub(crate) async fn session_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let valid = {
        let control = lock(&shared.control);
        bearer(request.headers()).is_some_and(|t| control.tokens.contains_key(t))
    };
    let mut response = if valid {
        next.run(request).await
    } else {
        errors::invalid_session()
    };
    add_limit_info(&shared, &mut response);
    response
}

/// `Sforce-Limit-Info: api-usage=<used>/<allowed>`.
fn add_limit_info(shared: &Shared, response: &mut Response) {
    let usage = format!(
        "api-usage={}/{}",
        lock(&shared.control).api_usage,
        shared.config.api_quota
    );
    if let Ok(value) = HeaderValue::from_str(&usage) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
}

/// The answer that refuses this call, or `None` to let it through (and count it).
fn refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let mut guard = lock(&shared.control);
    let control = &mut *guard;
    if control.in_outage() {
        return Some(errors::unavailable());
    }

    let expiry = control.faults.token_expiry_after;
    let Some(token_use) = bearer(headers).and_then(|t| control.tokens.get_mut(t)) else {
        return Some(errors::invalid_session());
    };
    if expiry.is_some_and(|limit| token_use.calls >= limit) {
        return Some(errors::invalid_session());
    }

    if control.faults.concurrent_limit_calls > 0 {
        control.faults.concurrent_limit_calls -= 1;
        return Some(errors::salesforce(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            control.faults.concurrent_limit.message(),
        ));
    }
    if control.api_usage >= shared.config.api_quota {
        return Some(errors::salesforce(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    token_use.calls += 1;
    control.api_usage += 1;

    let rate = control.faults.transient_failure_rate;
    if control.rng.chance(rate) {
        return Some(errors::transient(control.faults.transient_status));
    }
    if !accepts_json(headers) {
        return Some(errors::envelope(
            StatusCode::NOT_ACCEPTABLE,
            "REQUEST_ERROR",
            "The Accept header must include application/json.",
            "Accept",
            "INVALID_ACCEPT_HEADER",
        ));
    }
    if let Some(code) = &control.faults.config_error {
        return Some(config_error(code, &control.faults));
    }
    None
}

/// The answer of an org whose API user lacks access (or whose configured filter is invalid).
fn config_error(chain: &str, faults: &super::SageFaults) -> Response {
    let codes: Vec<&str> = chain
        .split('/')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let code = codes.first().copied().unwrap_or("UNKNOWN_EXCEPTION");
    let (default_status, category, default_target) = if code == "INVALID_FILTER" {
        (StatusCode::BAD_REQUEST, "REQUEST_ERROR", "$filter")
    } else {
        (StatusCode::FORBIDDEN, "SAGE_PEOPLE_CONFIGURATION", "")
    };
    let status = faults
        .config_error_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default_status);
    let target = faults
        .config_error_target
        .as_deref()
        .unwrap_or(default_target);
    let message = match code {
        "INVALID_FILTER" => "The configured filter is not valid for this org.".to_string(),
        "MISSING_API_PERMISSION" => {
            "The API user is missing the Sage People Employees API permission set.".to_string()
        }
        "INACCESSIBLE_FIELD" => {
            "The API user has no read access to a field of the Employee API field set.".to_string()
        }
        "OBJECT_NOT_ACCESSIBLE" => "The API user cannot read fHCM2__Team_Member__c.".to_string(),
        other => format!("Sage People configuration error {other}."),
    };
    errors::envelope_chain(status, category, &message, target, &codes)
}

/// The token of `Authorization: Bearer <token>` (Salesforce also accepts the `OAuth` scheme).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth");
    (known && !token.is_empty()).then_some(token)
}

/// True when some `Accept` header lists `application/json` (parameters allowed).
pub(crate) fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_must_name_application_json() {
        assert!(accepts_json(&headers(&[("accept", "application/json")])));
        assert!(accepts_json(&headers(&[(
            "accept",
            "text/html, Application/JSON; q=0.9"
        )])));
        assert!(!accepts_json(&headers(&[("accept", "*/*")])));
        assert!(!accepts_json(&headers(&[("accept", "application/xml")])));
        assert!(!accepts_json(&headers(&[])));
    }

    #[test]
    fn bearer_token_is_read_from_either_scheme() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "OAuth abc")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }
}
