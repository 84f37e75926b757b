//! `/_admin/...`: the in-process control methods of [`super::OomnitzaSim`] over HTTP, for tests
//! and scripts that run the simulator as a process. No auth, and not counted as API requests.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::OomnitzaFaults;
use super::state::Shared;

/// The admin routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_admin/stats", get(stats))
        .route("/_admin/faults", get(get_faults).put(put_faults))
        .route("/_admin/users", get(users).post(insert_user))
        .route("/_admin/saas_users", get(saas_users))
        .route("/_admin/portions/{id}", get(portion))
        .route("/_admin/portions/{id}/cancel", post(cancel))
        .route("/_admin/bulk_response", put(bulk_response))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| match v {
            Value::Object(_) => {
                serde_json::from_value::<OomnitzaFaults>(v).map_err(|e| e.to_string())
            }
            _ => Err("not an object".to_string()),
        });
    match parsed {
        Ok(faults) => {
            shared.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => bad_request(format!(
            "faults must be a JSON object of OomnitzaFaults: {e}"
        )),
    }
}

async fn users(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.users()).into_response()
}

async fn insert_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => {
            let id = shared.insert_user(fields);
            (StatusCode::CREATED, Json(json!({"_id": id}))).into_response()
        }
        Ok(_) => bad_request("a user is a JSON object of field id → value".into()),
        Err(e) => bad_request(format!("the body is not JSON: {e}")),
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
async fn bulk_response(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Null) => {
            shared.set_bulk_response(None);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(v) => {
            shared.set_bulk_response(Some(v));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(format!("the body is not JSON: {e}")),
    }
}
