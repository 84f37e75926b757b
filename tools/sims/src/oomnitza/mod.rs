//! A faithful HTTP simulator of the Oomnitza API as peoplesync uses it: token auth, bulk
//! portions (post, finalize, cancel, run logs), SaaS users, and reading users with filters.
//!
//! It follows `shared/reference/oomnitza-api.md`. Where Oomnitza publishes nothing (bulk response
//! body, run-log shape, posts after finalize, rate limits) it implements the contract written
//! there. Bulk posts are applied synchronously under one lock, so concurrent posts can never
//! create the same user twice.

mod admin;
mod bulk;
mod filter;
mod gate;
mod state;
mod store;
mod users;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::server::Server;
use state::Shared;

/// Id of the unique custom field "Sage User ID" in the default configuration.
pub const SAGE_USER_ID_FIELD: &str = "6C1F0A2B9D3E4F5A8B7C6D5E4F3A2B1C";
/// Id of the custom field "Department" in the default configuration.
pub const DEPARTMENT_FIELD: &str = "3F2A9C1E5B7D4A6C8E0F1A2B3C4D5E6F";
/// Id of the custom field "City" in the default configuration.
pub const CITY_FIELD: &str = "8A1B2C3D4E5F60718293A4B5C6D7E8F9";
/// Id of the custom field "Country" in the default configuration.
pub const COUNTRY_FIELD: &str = "0F9E8D7C6B5A49382716A5B4C3D2E1F0";

/// How the simulated Oomnitza tenant is set up; see [`OomnitzaConfig::default`].
#[derive(Clone, Debug)]
pub struct OomnitzaConfig {
    /// The API token accepted in `Authorization2`.
    pub api_token: String,
    /// Login accepted by `POST /api/request_token`.
    pub login: String,
    /// Password accepted by `POST /api/request_token`.
    pub password: String,
    /// Role ids accepted in `PERMISSIONS_ID`.
    pub roles: Vec<String>,
    /// Custom user fields of the tenant's data model.
    pub custom_fields: Vec<CustomField>,
    /// Faults active from start.
    pub faults: OomnitzaFaults,
}

impl Default for OomnitzaConfig {
    /// Token `sim-oomnitza-token`, login `admin` / `admin-password`, roles 25, 10 and 1, and the
    /// custom fields Sage User ID (unique), Department, City and Country.
    fn default() -> Self {
        let field = |id: &str, label: &str, unique| CustomField {
            id: id.into(),
            label: label.into(),
            unique,
        };
        Self {
            api_token: "sim-oomnitza-token".into(),
            login: "admin".into(),
            password: "admin-password".into(),
            roles: vec!["25".into(), "10".into(), "1".into()],
            custom_fields: vec![
                field(SAGE_USER_ID_FIELD, "Sage User ID", true),
                field(DEPARTMENT_FIELD, "Department", false),
                field(CITY_FIELD, "City", false),
                field(COUNTRY_FIELD, "Country", false),
            ],
            faults: OomnitzaFaults::default(),
        }
    }
}

/// A custom user field: a 32-hex id, a label, and whether values must be unique across users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    /// The field id used in bulk records.
    pub id: String,
    /// The label shown in Oomnitza.
    pub label: String,
    /// A create or update that would give two users the same value fails that record.
    pub unique: bool,
}

/// Faults injected into the API; all off by default. `PUT /_admin/faults` takes this as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OomnitzaFaults {
    /// Delay added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Share of API requests (0..1) answered `503`.
    pub transient_failure_rate: f64,
    /// API requests admitted per second (sliding window); the rest get `429`.
    pub rate_limit_per_sec: Option<u32>,
    /// `Retry-After` seconds sent with `429` (default 1).
    pub retry_after_secs: Option<u64>,
    /// Every API request answers `503` for this long, counted from when the faults were set.
    pub outage_for_ms: Option<u64>,
    /// Every authenticated request answers `403` (a token without rights).
    pub forbidden: bool,
    /// Records with one of these e-mails (any case) make their whole batch `422`.
    pub poison_emails: Vec<String>,
}

/// What the simulator has seen so far; `GET /_admin/stats` returns it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomnitzaStats {
    /// Requests to `/api/...` (including refused ones, excluding `/_admin`).
    pub api_requests: u64,
    /// `POST /api/v3/bulk` requests that got past auth and faults, whatever their answer.
    pub bulk_requests: u64,
    /// Records in accepted (`200`) bulk posts.
    pub bulk_records: u64,
    /// When the first bulk post got past auth and faults (ms since the epoch).
    pub first_bulk_at_ms: Option<i64>,
    /// When the latest accepted bulk post was applied (ms since the epoch).
    pub last_bulk_at_ms: Option<i64>,
    /// Users created.
    pub records_created: u64,
    /// Users updated.
    pub records_updated: u64,
    /// Records that changed nothing.
    pub records_unchanged: u64,
    /// Records skipped (create-only on an existing user, update-only on an unknown one).
    pub records_skipped: u64,
    /// Records that failed (run log), including client-reported failures.
    pub records_failed: u64,
    /// API responses by HTTP status.
    pub status_counts: BTreeMap<u16, u64>,
    /// `POST /api/v3/bulk/{portion}/finalize` calls per portion, whatever their answer.
    pub finalize_calls: BTreeMap<String, u64>,
    /// Requests refused with `429`.
    pub requests_429: u64,
    /// Highest number of API requests served at the same time.
    pub max_in_flight: u64,
    /// Creates plus updates, per user id.
    pub user_writes: BTreeMap<String, u64>,
    /// The highest entry of `user_writes`.
    pub max_writes_per_user: u64,
}

/// One portion (integration run) and its run log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortionState {
    /// The portion id chosen by the client.
    pub portion: String,
    /// An administrator canceled the run.
    pub canceled: bool,
    /// The client finalized the portion.
    pub finalized: bool,
    /// Bulk posts that reached this portion (accepted or not).
    pub bulk_requests: u64,
    /// Users created.
    pub added: u64,
    /// Users updated.
    pub updated: u64,
    /// Records that changed nothing.
    pub unchanged: u64,
    /// Records skipped by create-only / update-only.
    pub skipped: u64,
    /// Records that failed.
    pub failed: u64,
    /// The failed records with their reasons.
    pub failed_records: Vec<FailedRecord>,
}

/// A record of the run log that failed, as posted, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRecord {
    /// The record as posted (`null` for a client-reported failure without records).
    pub record: Value,
    /// Why it failed.
    pub reason: String,
}

/// A running Oomnitza simulator; dropping it shuts the server down.
#[derive(Debug)]
pub struct OomnitzaSim {
    shared: Arc<Shared>,
    server: Server,
}

impl OomnitzaSim {
    /// Starts a simulator on `127.0.0.1` and a free port.
    pub async fn spawn(config: OomnitzaConfig) -> std::io::Result<OomnitzaSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::spawn_on(config, listener).await
    }

    /// Starts a simulator on `listener`.
    pub async fn spawn_on(
        config: OomnitzaConfig,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<OomnitzaSim> {
        let shared = Arc::new(Shared::new(config));
        let server = Server::start(listener, router(Arc::clone(&shared)))?;
        tracing::info!(url = %server.url(), "oomnitza simulator listening");
        Ok(OomnitzaSim { shared, server })
    }

    /// `http://127.0.0.1:PORT`, the tenant's base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every user, as field id → value, plus `"_id"`, in creation order.
    pub fn users(&self) -> Vec<Map<String, Value>> {
        self.shared.users()
    }

    /// Every SaaS-user record: `id`, `user_id`, `sync_key`, `selected_saas_id`, `name`.
    pub fn saas_users(&self) -> Vec<Value> {
        self.shared.saas_users()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> OomnitzaStats {
        self.shared.stats()
    }

    /// A portion and its run log, or `None` if no client has used that id.
    pub fn portion(&self, id: &str) -> Option<PortionState> {
        self.shared.portion(id)
    }

    /// Cancels a portion as an administrator would (creating it if unknown): later posts get `409`.
    pub fn cancel_portion(&self, id: &str) {
        self.shared.cancel_portion(id);
    }

    /// Replaces the active faults; `outage_for_ms` counts from now.
    pub fn set_faults(&self, faults: OomnitzaFaults) {
        self.shared.set_faults(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> OomnitzaFaults {
        self.shared.faults()
    }

    /// Adds a pre-existing user (field id → value; `"_id"` optional). Nothing is validated.
    pub fn insert_user(&self, fields: Map<String, Value>) {
        let _ = self.shared.insert_user(fields);
    }

    /// Sets the body of a successful `POST /api/v3/bulk` (unpublished by Oomnitza, so clients
    /// must not depend on it); `None` restores the default `{"portion", "received", "status"}`.
    pub fn set_bulk_response(&self, body: Option<Value>) {
        self.shared.set_bulk_response(body);
    }

    /// Shuts down gracefully and waits for in-flight requests to finish.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.stop().await
    }
}

/// Largest accepted request body: far above any sane batch, but bounded.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v3/bulk", post(bulk::post))
        .route("/api/v3/bulk/{portion}", get(bulk::get_portion))
        .route("/api/v3/bulk/{portion}/finalize", post(bulk::finalize))
        .route(
            "/api/v3/connector_run_logs/connectors/{portion}",
            get(bulk::run_log),
        )
        .route("/api/v3/users", get(users::list))
        .route("/api/v3/users/{id}", get(users::one))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            gate::api_gate,
        ));
    Router::new()
        .route("/api/request_token", post(gate::request_token))
        .merge(api)
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}
