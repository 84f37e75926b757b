//! Bulk portions over HTTP: `POST /api/v3/bulk`, `GET /api/v3/bulk/{portion}`,
//! `POST /api/v3/bulk/{portion}/finalize` and the run log
//! `GET /api/v3/connector_run_logs/connectors/{portion}`.
//!
//! Order of checks on a post: JSON and envelope (`400`), portion state (`409`), records (`422`,
//! nothing applied), then the batch is applied under the store lock and answered `200`. The
//! envelope and the records are checked before the lock is taken; only the portion check and
//! applying need it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::gate::error;
use super::state::Shared;
use super::{PortionState, validate};
use crate::sync::lock;

/// Accepts one batch of user records for a portion.
pub(crate) async fn post(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            lock(&shared.store).counters.bulk_requests += 1;
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let (poison, custom_response) = {
        let control = lock(&shared.control);
        (
            control.faults.poison_emails.clone(),
            control.bulk_response.clone(),
        )
    };

    // The checks that need no stored data run before the store is locked, so concurrent
    // posts only queue for the part that does; their answers keep the documented order.
    let checked = validate::envelope(body, &shared.config.custom_fields);
    let refusals = match &checked {
        Ok(env) if env.error.is_none() => validate::records(&env.records, &shared.config, &poison),
        _ => Vec::new(),
    };

    let mut store = lock(&shared.store);
    store.counters.bulk_requests += 1;
    store
        .counters
        .first_bulk_at_ms
        .get_or_insert_with(|| chrono::Utc::now().timestamp_millis());
    let env = match checked {
        Ok(env) => env,
        Err(problem) => return error(StatusCode::BAD_REQUEST, "bad_request", &problem),
    };
    let portion = store.portion_mut(&env.portion);
    portion.bulk_requests += 1;
    if let Some(refusal) = closed(portion) {
        return refusal;
    }
    if !refusals.is_empty() {
        let message = format!(
            "{} of {} records refused; nothing was applied",
            refusals.len(),
            env.records.len()
        );
        let body = json!({"error": "unprocessable", "message": message, "records": refusals});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let (portion, received) = (env.portion.clone(), env.records.len());
    store.apply(env);
    store.counters.last_bulk_at_ms = Some(chrono::Utc::now().timestamp_millis());
    drop(store);

    let body = custom_response
        .unwrap_or_else(|| json!({"portion": portion, "received": received, "status": "accepted"}));
    (StatusCode::OK, Json(body)).into_response()
}

/// `409` for a portion that no longer takes records.
fn closed(portion: &PortionState) -> Option<Response> {
    if portion.canceled {
        let message = format!(
            "portion {} was canceled by an administrator",
            portion.portion
        );
        return Some(
            (
                StatusCode::CONFLICT,
                Json(json!({"error": "canceled", "message": message, "canceled": true})),
            )
                .into_response(),
        );
    }
    if portion.finalized {
        let message = format!(
            "portion {} is finalized and takes no more records",
            portion.portion
        );
        return Some(
            (
                StatusCode::CONFLICT,
                Json(json!({"error": "finalized", "message": message, "finalized": true})),
            )
                .into_response(),
        );
    }
    None
}

fn unknown_portion(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no portion {id}"),
    )
}

/// `{"portion", "canceled", "finalized"}`, or `404`.
pub(crate) async fn get_portion(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    match lock(&shared.store).portions.get(&id) {
        Some(p) => {
            Json(json!({"portion": p.portion, "canceled": p.canceled, "finalized": p.finalized}))
                .into_response()
        }
        None => unknown_portion(&id),
    }
}

/// Closes a portion: `200` the first time, `409` after that or if it was canceled. A portion
/// never posted to (a run with nothing to write) can be finalized too.
pub(crate) async fn finalize(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut store = lock(&shared.store);
    *store.counters.finalize_calls.entry(id.clone()).or_default() += 1;
    if !body.iter().all(u8::is_ascii_whitespace)
        && !matches!(serde_json::from_slice(&body), Ok(Value::Object(_)))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the finalize body must be a JSON object ({})",
        );
    }
    let portion = store.portion_mut(&id);
    if let Some(refusal) = closed(portion) {
        return refusal;
    }
    portion.finalized = true;
    Json(json!({"portion": id, "canceled": false, "finalized": true})).into_response()
}

/// The run log of a portion: counts and failed records, or `404`.
pub(crate) async fn run_log(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match lock(&shared.store).portions.get(&id) {
        Some(p) => Json(run_log_body(p)).into_response(),
        None => unknown_portion(&id),
    }
}

/// The run-log JSON of a portion (records are applied synchronously: nothing is processing).
pub(crate) fn run_log_body(p: &PortionState) -> Value {
    let status = if p.canceled {
        "canceled"
    } else if p.finalized {
        "finished"
    } else {
        "in_progress"
    };
    json!({
        "portion": p.portion,
        "status": status,
        "added": p.added,
        "updated": p.updated,
        "unchanged": p.unchanged,
        "skipped": p.skipped,
        "failed": p.failed,
        "processing": 0,
        "failed_records": p.failed_records,
    })
}
