//! `GET /services/data/vXX.X/limits`: the org's limits as Salesforce's REST API reports them.
//! Only `DailyApiRequests` is modelled (from the simulator's quota and usage); clients read it
//! when Employees API responses carry no `Sforce-Limit-Info`. The `limits_refused` fault
//! refuses it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors;
use super::state::Shared;
use crate::sync::lock;

/// Answers the limits of the org: `{"DailyApiRequests": {"Max", "Remaining"}}`.
pub(crate) async fn limits(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
) -> Response {
    lock(&shared.stats).limits_requests += 1;
    if !is_api_version(&version) {
        return errors::salesforce(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    let refused = lock(&shared.control).faults.limits_refused.clone();
    if let Some(code) = refused {
        return errors::salesforce(
            StatusCode::FORBIDDEN,
            &code,
            "The user may not read the organization's limits.",
        );
    }
    let max = shared.config.api_quota;
    let used = lock(&shared.control).api_usage;
    Json(json!({
        "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
    }))
    .into_response()
}

/// `v64.0`: a `v`, digits, a dot, digits.
fn is_api_version(text: &str) -> bool {
    let Some((major, minor)) = text.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_look_like_v_major_dot_minor() {
        assert!(is_api_version("v64.0"));
        assert!(!is_api_version("64.0"));
        assert!(!is_api_version("v64"));
        assert!(!is_api_version("vX.Y"));
    }
}
