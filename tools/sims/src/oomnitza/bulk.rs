//! Bulk portions over HTTP: `POST /api/v3/bulk`, `GET /api/v3/bulk/{portion}`,
//! `POST /api/v3/bulk/{portion}/finalize` and the run log
//! `GET /api/v3/connector_run_logs/connectors/{portion}`.
//!
//! Order of checks on a post: JSON and envelope (`400`), finalized portion (`409`), then a
//! canceled portion takes the batch and discards it (`200`), the `poison_emails` fault refuses
//! it (`422`), or the batch is accepted (`200`) and queued for the worker. Nothing about a
//! record but its field ids is checked before it is processed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::{Duration, Instant};

use super::gate::{bad_request, not_found};
use super::state::Shared;
use super::{MAX_PROCESSING_DELAY_MS, PortionState, validate};
use crate::sync::lock;

/// Accepts one batch of user records for a portion; they are processed later.
pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            lock(&shared.store).counters.bulk_requests += 1;
            return bad_request(&format!("the body is not JSON: {e}"));
        }
    };
    let (poison, custom_response, delay_ms, apply_if_canceled, every_unknown) = {
        let control = lock(&shared.control);
        (
            control.faults.poison_emails.clone(),
            control.bulk_response.clone(),
            control.behavior.processing_delay_ms,
            control.behavior.apply_after_cancel,
            control.behavior.name_every_unknown_field,
        )
    };

    // The checks that need no stored data run before the store is locked, so concurrent
    // posts only queue for the part that does; their answers keep the documented order.
    let checked = validate::envelope(body, &shared.config.custom_fields, every_unknown);
    let refusals = match &checked {
        Ok(env) if env.error.is_none() => validate::poisoned(&env.records, &poison),
        _ => Vec::new(),
    };

    let mut store = lock(&shared.store);
    // A test run (a client checking its field ids) loads nothing: it is counted apart, in
    // `test_run_records`, so the load counters describe what was loaded.
    let test_run = checked.as_ref().is_ok_and(|env| env.test_run);
    if !test_run {
        store.counters.bulk_requests += 1;
        store
            .counters
            .first_bulk_at_ms
            .get_or_insert_with(|| chrono::Utc::now().timestamp_millis());
    }
    let env = match checked {
        Ok(env) => env,
        Err(problem) => return bad_request(&problem),
    };
    let portion = store.portion_mut(&env.portion);
    portion.bulk_requests += 1;
    if portion.finalized {
        return finalized(&portion.portion);
    }
    if !refusals.is_empty() && !portion.canceled {
        let message = format!(
            "{} of {} records refused; nothing was accepted",
            refusals.len(),
            env.records.len()
        );
        let body = json!({"error": "unprocessable", "message": message, "records": refusals});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let portion_id = env.portion.clone();
    let due = Instant::now() + Duration::from_millis(delay_ms.min(MAX_PROCESSING_DELAY_MS));
    let received = store.accept(env, due, &peer.ip().to_string(), apply_if_canceled);
    shared.publish_pending(&store);
    drop(store);
    shared.wake.notify_one();

    let body = custom_response.unwrap_or_else(
        || json!({"portion": portion_id, "received": received, "status": "accepted"}),
    );
    (StatusCode::OK, Json(body)).into_response()
}

/// `409` for a finalized portion, which takes no more records (published).
fn finalized(id: &str) -> Response {
    let message = format!("portion {id} is finalized and takes no more records");
    (
        StatusCode::CONFLICT,
        Json(json!({"error": "finalized", "message": message, "finalized": true})),
    )
        .into_response()
}

fn unknown_portion(id: &str) -> Response {
    not_found(&format!("no portion {id}"))
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

/// Closes a portion: `200` the first time, `409` after that. A canceled portion answers `409`
/// unless [`super::OomnitzaBehavior::refuse_finalize_after_cancel`] is off. A portion never
/// posted to (a run with nothing to write) can be finalized too. Records still processing are
/// processed; the run is finished after them.
pub(crate) async fn finalize(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let refuse_canceled = lock(&shared.control).behavior.refuse_finalize_after_cancel;
    let mut store = lock(&shared.store);
    *store.counters.finalize_calls.entry(id.clone()).or_default() += 1;
    if !body.iter().all(u8::is_ascii_whitespace)
        && !matches!(serde_json::from_slice(&body), Ok(Value::Object(_)))
    {
        return bad_request("the finalize body must be a JSON object ({})");
    }
    let portion = store.portion_mut(&id);
    if portion.finalized {
        return finalized(&id);
    }
    if portion.canceled {
        if refuse_canceled {
            let message = format!("portion {id} was canceled by an administrator");
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": "canceled", "message": message, "canceled": true})),
            )
                .into_response();
        }
        return Json(json!({"portion": id, "canceled": true, "finalized": false})).into_response();
    }
    store.finalize(&id);
    Json(json!({"portion": id, "canceled": false, "finalized": true})).into_response()
}

/// The run log of a portion, or `404`.
pub(crate) async fn run_log(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match lock(&shared.store).portions.get(&id) {
        Some(p) => Json(run_log_body(p)).into_response(),
        None => unknown_portion(&id),
    }
}

/// The run log of a portion in the published shape ("Connector run logs portion details"):
/// counts under `objects`, free-text messages per outcome under `logs`.
pub(crate) fn run_log_body(p: &PortionState) -> Value {
    let status = if p.canceled {
        "canceled"
    } else if p.finalized && p.processing == 0 {
        "finished"
    } else {
        "in_progress"
    };
    let failed: Vec<&str> = p
        .failed_records
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    let mut logs = Map::new();
    logs.insert("Fatal Error".into(), json!(p.fatal_errors));
    logs.insert("failed".into(), json!(failed));
    for outcome in ["added", "updated", "skipped", "unchanged", "processing"] {
        logs.insert(outcome.into(), json!([]));
    }
    logs.insert("canceled".into(), json!(p.canceled_messages));
    let seconds = |ms: Option<i64>| ms.map_or(0, |ms| ms / 1_000);
    json!({
        "connector": p.connector,
        "deployment": "",
        "status": status,
        "start_time": seconds(p.started_at_ms),
        "end_time": seconds(p.ended_at_ms),
        "ipv4_address": p.ipv4_address,
        "test_run": p.test_run,
        "test_run_payload": p.test_run_payload,
        "file_attachment": null,
        "objects": {
            "added": p.added,
            "updated": p.updated,
            "failed": p.failed,
            "skipped": p.skipped,
            "unchanged": p.unchanged,
            "canceled": p.canceled_records,
            "processing": p.processing,
        },
        "logs": logs,
    })
}
