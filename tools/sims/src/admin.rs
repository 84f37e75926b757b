//! What both simulators' `/_admin` APIs share: the counters and the faults over HTTP
//! (`GET /_admin/stats`, `GET`/`PUT /_admin/faults`) for any simulator state that is
//! [`Controlled`], an admin request's JSON body, and the answer to a refused admin request. Each
//! simulator adds its own routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A simulator's state as its admin API and its in-process handle see it.
pub(crate) trait Controlled: Send + Sync + 'static {
    /// What the simulator has counted so far.
    type Stats: Serialize;
    /// The faults it injects.
    type Faults: Serialize + DeserializeOwned + Clone + Send;
    /// The faults' type name, for messages.
    const FAULTS: &'static str;

    /// A snapshot of the counters.
    fn stats(&self) -> Self::Stats;
    /// The active faults.
    fn faults(&self) -> Self::Faults;
    /// Replaces the active faults; an outage counts from now.
    fn set_faults(&self, faults: Self::Faults);
}

/// `GET /_admin/stats` and `GET`/`PUT /_admin/faults`.
pub(crate) fn routes<S: Controlled>() -> Router<Arc<S>> {
    Router::new()
        .route("/_admin/stats", get(stats::<S>))
        .route("/_admin/faults", get(get_faults::<S>).put(put_faults::<S>))
}

/// `400` with `{"error": message}`.
pub(crate) fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// An admin request's body as JSON of any kind; a body that is not JSON is refused with
/// [`bad_request`] before the handler runs.
pub(crate) struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| bad_request(format!("the body is not JSON: {e}")))
    }
}

async fn stats<S: Controlled>(State(shared): State<Arc<S>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn get_faults<S: Controlled>(State(shared): State<Arc<S>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn put_faults<S: Controlled>(State(shared): State<Arc<S>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| match v {
            Value::Object(_) => serde_json::from_value::<S::Faults>(v).map_err(|e| e.to_string()),
            _ => Err("not an object".to_string()),
        });
    match parsed {
        Ok(faults) => {
            shared.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => bad_request(format!(
            "faults must be a JSON object of {}: {e}",
            S::FAULTS
        )),
    }
}
