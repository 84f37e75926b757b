//! Offboarding calls of the published OpenAPI: `PATCH /api/v3/users/{ident}` (set fields, as
//! field id → value like a bulk record; an unknown field id is `400`, a user the tenant's
//! checks would refuse — an unknown role, a tenant rule — is `422`),
//! `DELETE /api/v3/users/{ident}`, and
//! `GET /api/v3/users/{ident}/assets` (the assets assigned to the user). `{ident}` is the
//! user's id or username. Assets exist only through the admin API (`POST /_admin/assets`,
//! `GET /_admin/assets`): the simulator models users, not the asset catalogue.
//!
//! Not published, so configurable: whether deleting a user who holds assets is refused
//! ([`super::OomnitzaBehavior::refuse_delete_with_assets`]); by default the user is deleted
//! and their assets stay, unassigned.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gate::{bad_request, error, not_found};
use super::state::Shared;
use super::validate::{self, Checks};
use crate::admin;
use crate::sync::lock;

/// One asset in the tenant, shown as Oomnitza's asset attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAsset {
    /// The asset's id.
    pub equipment_id: String,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// Its serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// The id of the user it is assigned to (`null`: unassigned).
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// The admin routes for assets.
pub(crate) fn admin_routes() -> Router<Arc<Shared>> {
    Router::new().route("/_admin/assets", get(list_assets).post(add_asset))
}

fn unknown_user(ident: &str) -> Response {
    not_found(&format!("no user with id or username {ident}"))
}

/// `PATCH /api/v3/users/{ident}`.
pub(crate) async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(ident): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        _ => return bad_request("the body must be a JSON object of field id → value"),
    };
    if let Some(unknown) = fields
        .keys()
        .find(|f| !validate::is_known_field(f, &shared.config.custom_fields))
    {
        return bad_request(&format!("unknown field {unknown}"));
    }
    let (rules, lower_case_identities) = shared.processing();
    let mut store = lock(&shared.store);
    let Some(id) = store.resolve(&ident) else {
        return unknown_user(&ident);
    };
    // The user as it would be: refused as a bulk record would be when processed.
    let mut merged = store.user(&id).unwrap_or_default();
    merged.remove("_id");
    merged.extend(fields.clone());
    let checks = Checks {
        roles: &shared.config.roles,
        rules: &rules,
        lower_case_identities,
    };
    if let Err(reason) = validate::record(&merged, checks) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", &reason);
    }
    let mut fields = fields;
    checks.stored(&mut fields);
    store.patch_user(&id, fields);
    let user = store.user(&id);
    Json(user.map(Value::Object).unwrap_or(Value::Null)).into_response()
}

/// `DELETE /api/v3/users/{ident}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(ident): Path<String>,
) -> Response {
    let refuse = shared.behavior().refuse_delete_with_assets;
    let mut store = lock(&shared.store);
    let Some(id) = store.resolve(&ident) else {
        return match answer_lost(&shared) {
            true => answer_lost_response(),
            false => unknown_user(&ident),
        };
    };
    let held = store
        .assets
        .iter()
        .filter(|a| a.assigned_to.as_deref() == Some(id.as_str()))
        .count();
    if refuse && held > 0 {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            &format!("user {id} holds {held} assets"),
        );
    }
    store.delete_user(&id);
    for asset in &mut store.assets {
        if asset.assigned_to.as_deref() == Some(id.as_str()) {
            asset.assigned_to = None;
        }
    }
    drop(store);
    match answer_lost(&shared) {
        true => answer_lost_response(),
        false => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Whether this delete's answer is lost ([`super::OomnitzaFaults::deletes_answer_lost`]),
/// counting it down.
fn answer_lost(shared: &Shared) -> bool {
    let mut control = lock(&shared.control);
    let lost = control.faults.deletes_answer_lost > 0;
    if lost {
        control.faults.deletes_answer_lost -= 1;
    }
    lost
}

/// The `503` a gateway answers in place of an answer it gave up on
/// ([`super::OomnitzaFaults::deletes_answer_lost`]).
fn answer_lost_response() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "the gateway gave up on Oomnitza's answer (simulated; the delete, if the user existed, was applied)",
    )
}

/// `GET /api/v3/users/{ident}/assets`.
pub(crate) async fn assets(
    State(shared): State<Arc<Shared>>,
    Path(ident): Path<String>,
) -> Response {
    let store = lock(&shared.store);
    let Some(id) = store.resolve(&ident) else {
        return unknown_user(&ident);
    };
    let held: Vec<&SimAsset> = store
        .assets
        .iter()
        .filter(|a| a.assigned_to.as_deref() == Some(id.as_str()))
        .collect();
    Json(held).into_response()
}

async fn list_assets(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.store).assets.clone()).into_response()
}

/// `POST /_admin/assets` with `{"equipment_id", "model", "serial_number", "assigned_to"}`;
/// `assigned_to` may name the user by id or username.
async fn add_asset(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut asset = match serde_json::from_slice::<SimAsset>(&body) {
        Ok(asset) if !asset.equipment_id.trim().is_empty() => asset,
        Ok(_) => return admin::bad_request("equipment_id is empty".into()),
        Err(e) => {
            return admin::bad_request(format!("an asset is a JSON object of SimAsset: {e}"));
        }
    };
    let mut store = lock(&shared.store);
    if let Some(ident) = asset.assigned_to.clone() {
        match store.resolve(&ident) {
            Some(id) => asset.assigned_to = Some(id),
            None => return unknown_user(&ident),
        }
    }
    store
        .assets
        .retain(|a| a.equipment_id != asset.equipment_id);
    store.assets.push(asset.clone());
    (StatusCode::CREATED, Json(asset)).into_response()
}
