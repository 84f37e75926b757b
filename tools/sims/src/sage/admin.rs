//! `/_admin/...`: the in-process control methods of [`super::SageSim`] over HTTP, for tests and
//! scripts that run the simulator as a process. No auth, and not counted as API calls.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::state::Shared;
use crate::admin::{JsonBody, bad_request};

/// The admin routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    crate::admin::routes::<Shared>()
        .route("/_admin/workers", post(add_workers))
        .route(
            "/_admin/workers/{id}",
            get(get_worker)
                .put(replace_worker)
                .delete(remove_worker)
                .patch(patch_worker),
        )
        .route("/_admin/workers/{id}/restore", post(restore_worker))
        .route("/_admin/api_usage", put(set_api_usage))
        .route("/_admin/tokens/revoke", post(revoke_tokens))
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no worker with id '{id}'")})),
    )
        .into_response()
}

async fn get_worker(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.worker(&id) {
        Some(record) => Json(record).into_response(),
        None => not_found(&id),
    }
}

async fn remove_worker(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.remove_worker(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&id)
    }
}

async fn restore_worker(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.restore_worker(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no removed worker with id '{id}'")})),
        )
            .into_response()
    }
}

async fn patch_worker(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody,
) -> Response {
    if !patch.is_object() {
        return bad_request("a merge-patch must be a JSON object".into());
    }
    match shared.patch_worker(&id, &patch) {
        Some(record) => Json(record).into_response(),
        None => not_found(&id),
    }
}

async fn replace_worker(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(raw): JsonBody,
) -> Response {
    if shared.replace_worker(&id, raw) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&id)
    }
}

#[derive(Deserialize)]
struct AddWorkers {
    count: u64,
}

async fn add_workers(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<AddWorkers>(&body) {
        Ok(add) => Json(json!({"total": shared.add_workers(add.count)})).into_response(),
        Err(e) => bad_request(format!("expected {{\"count\": n}}: {e}")),
    }
}

#[derive(Deserialize)]
struct ApiUsage {
    used: u64,
}

async fn set_api_usage(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<ApiUsage>(&body) {
        Ok(usage) => {
            shared.set_api_usage(usage.used);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(format!("expected {{\"used\": n}}: {e}")),
    }
}

async fn revoke_tokens(State(shared): State<Arc<Shared>>) -> Response {
    shared.revoke_tokens();
    StatusCode::NO_CONTENT.into_response()
}
