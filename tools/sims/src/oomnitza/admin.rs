//! `/_admin/...`: the in-process control methods of [`super::OomnitzaSim`] over HTTP, for tests
//! and scripts that run the simulator as a process. No auth, and not counted as API requests.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::OomnitzaBehavior;
use super::state::Shared;
use crate::admin::{JsonBody, bad_request};
use crate::sync::lock;

/// Longest `GET /_admin/wait_idle` wait, and the default one.
const MAX_WAIT: Duration = Duration::from_secs(120);
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The admin routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    crate::admin::routes::<Shared>()
        .route("/_admin/users", get(users).post(insert_user))
        .route("/_admin/saas_users", get(saas_users))
        .route("/_admin/portions/{id}", get(portion))
        .route("/_admin/portions/{id}/cancel", post(cancel))
        .route("/_admin/bulk_response", put(bulk_response))
        .route("/_admin/behavior", get(get_behavior).put(put_behavior))
        .route("/_admin/wait_idle", get(wait_idle))
        .route("/_admin/sessions/revoke", post(revoke_sessions))
}

async fn users(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.users()).into_response()
}

async fn insert_user(State(shared): State<Arc<Shared>>, JsonBody(user): JsonBody) -> Response {
    match user {
        Value::Object(fields) => {
            let id = shared.insert_user(fields);
            (StatusCode::CREATED, Json(json!({"_id": id}))).into_response()
        }
        _ => bad_request("a user is a JSON object of field id → value".into()),
    }
}

async fn saas_users(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.saas_users()).into_response()
}

/// The portion with its run log, as [`super::PortionState`].
async fn portion(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.portion(&id) {
        Some(p) => Json(p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no portion {id}")})),
        )
            .into_response(),
    }
}

async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    Json(shared.cancel_portion(&id)).into_response()
}

/// Sets the body of a successful bulk post; JSON `null` restores the default.
async fn bulk_response(State(shared): State<Arc<Shared>>, JsonBody(body): JsonBody) -> Response {
    let custom = match body {
        Value::Null => None,
        body => Some(body),
    };
    shared.set_bulk_response(custom);
    StatusCode::NO_CONTENT.into_response()
}

/// Ends every password session; see [`super::OomnitzaSim::revoke_sessions`].
async fn revoke_sessions(State(shared): State<Arc<Shared>>) -> Response {
    shared.revoke_sessions();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_behavior(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.behavior()).into_response()
}

/// Merges the given members of [`OomnitzaBehavior`] into the current ones (others are kept).
async fn put_behavior(State(shared): State<Arc<Shared>>, JsonBody(changes): JsonBody) -> Response {
    let Value::Object(changes) = changes else {
        return bad_request("behavior must be a JSON object of OomnitzaBehavior".into());
    };
    let mut merged = match serde_json::to_value(shared.behavior()) {
        Ok(Value::Object(current)) => current,
        _ => serde_json::Map::new(),
    };
    merged.extend(changes);
    let behavior = match serde_json::from_value::<OomnitzaBehavior>(Value::Object(merged)) {
        Ok(behavior) => behavior,
        Err(e) => return bad_request(format!("behavior is not an OomnitzaBehavior: {e}")),
    };
    match shared.set_behavior(behavior.clone()) {
        Ok(()) => Json(behavior).into_response(),
        Err(e) => bad_request(e.0),
    }
}

/// Waits until nothing is processing (in `portion`, if given), at most `timeout_ms`: `200`
/// `{"idle": true}`, or `504` `{"idle": false, "processing": n}` when the time is up.
async fn wait_idle(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let mut portion = None;
    let mut timeout = DEFAULT_WAIT;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "portion" => portion = Some(v.into_owned()),
            "timeout_ms" => match v.trim().parse::<u64>() {
                Ok(ms) => timeout = Duration::from_millis(ms).min(MAX_WAIT),
                Err(_) => return bad_request("timeout_ms must be a number of milliseconds".into()),
            },
            _ => {}
        }
    }
    let waited = tokio::time::timeout(timeout, shared.wait_idle(portion.as_deref())).await;
    let processing = {
        let store = lock(&shared.store);
        match &portion {
            Some(id) => store.portions.get(id).map_or(0, |p| p.processing),
            None => store.queue.len(),
        }
    };
    let status = if waited.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    (
        status,
        Json(json!({"idle": waited.is_ok(), "processing": processing})),
    )
        .into_response()
}
