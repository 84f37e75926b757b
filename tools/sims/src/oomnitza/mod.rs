//! A faithful HTTP simulator of the Oomnitza API as peoplesync uses it: token auth (API token,
//! or a password session with its `X-CSRF-Token`), the connector's token check
//! (`GET /api/v2/mappings?name=AuthTest`), bulk portions (post, finalize, cancel, run logs),
//! SaaS users, and reading users with filters and paging.
//!
//! It models the published contract (Oomnitza's OpenAPI "External API 3.0.3" and its
//! open-source connector) first. As in Oomnitza, `POST /api/v3/bulk` only *accepts* a batch:
//! its records are applied afterwards by a background worker, after
//! [`OomnitzaBehavior::processing_delay_ms`], in the order they were accepted; a record Oomnitza
//! would refuse (no username, an unknown role, a duplicate unique value, a tenant validation
//! rule...) fails then, and shows only in the run log
//! (`GET /api/v3/connector_run_logs/connectors/{portion}`, the published shape with `objects`
//! counts, `processing` included, and `logs` messages). Records are applied under one lock, so
//! concurrent posts never create the same user twice.
//!
//! What Oomnitza does not publish is a configurable guess in [`OomnitzaBehavior`] (processing
//! delay, whether a session must echo its CSRF token, finalize after cancel, how custom fields
//! are named in reads, `role` as text or number); faults ([`OomnitzaFaults`]) come on top.

mod admin;
mod bulk;
mod filter;
mod gate;
mod offboard;
mod portion;
mod queue;
mod state;
mod store;
mod users;
mod validate;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::admin::Controlled;
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
    /// How the tenant behaves where Oomnitza publishes nothing; see [`OomnitzaBehavior`].
    pub behavior: OomnitzaBehavior,
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
            behavior: OomnitzaBehavior::default(),
        }
    }
}

/// Default of [`OomnitzaBehavior::processing_delay_ms`]: short, but long enough that a client
/// which reads the users back right after a `200` finds them not yet applied.
pub const DEFAULT_PROCESSING_DELAY_MS: u64 = 5;

/// Longest processing delay honoured (one hour); a longer one is shortened to it.
pub const MAX_PROCESSING_DELAY_MS: u64 = 3_600_000;

/// The tenant's behaviour where Oomnitza publishes nothing, and its validation rules;
/// `PUT /_admin/behavior` takes this as JSON (every member optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OomnitzaBehavior {
    /// How long after a bulk post is accepted its records start being processed, in
    /// milliseconds (0: as soon as the worker gets to them, for benchmarks; at most
    /// [`MAX_PROCESSING_DELAY_MS`]). Oomnitza processes asynchronously but publishes no delay.
    pub processing_delay_ms: u64,
    /// Tenant validation rules checked when a record is processed; a refused record fails.
    pub validation_rules: Vec<ValidationRule>,
    /// Refuse (`403`) a request made with a password-session token that does not echo the
    /// session's `X-CSRF-Token` (or, with [`Self::csrf_for_api_token`], an API-token request
    /// that does not echo the token the credential check gave). Oomnitza's connector always
    /// echoes it, but no source says a request without it is refused, so this is off by default.
    pub require_csrf_echo: bool,
    /// Answer the credential check (`GET /api/v2/mappings`) of an API token with an
    /// `X-CSRF-Token` header, which later API-token requests are expected to echo (counted;
    /// refused only with [`Self::require_csrf_echo`]). Oomnitza's connector takes the header
    /// from that answer, but no source says Oomnitza sends it, so this is off by default.
    pub csrf_for_api_token: bool,
    /// Answer `409` to finalizing a canceled portion (unpublished; `false` answers `200` and
    /// leaves the portion canceled).
    pub refuse_finalize_after_cancel: bool,
    /// Process records posted to a canceled portion as usual (unpublished; `false` takes them
    /// and discards them, as the records queued when it was canceled are).
    pub apply_after_cancel: bool,
    /// How custom fields are named in `GET /api/v3/users` (unpublished: the OpenAPI user schema
    /// lists system attributes only).
    pub custom_field_names: CustomFieldNames,
    /// Show `role` in user reads as a number (`25`) when the stored `PERMISSIONS_ID` is a
    /// numeric string, as the published user schema types it (integer). On by default; off,
    /// the value reads back as it was sent (`"25"`). peoplesync's readers compare both as text.
    pub role_as_number: bool,
    /// Answer `409` to `DELETE /api/v3/users/{ident}` for a user who still holds assets
    /// (unpublished: the OpenAPI does not say; `false` deletes the user and leaves the assets
    /// unassigned).
    pub refuse_delete_with_assets: bool,
    /// The most users one `GET /api/v3/users` page holds, whatever `limit` asks for
    /// (unpublished: Oomnitza states no largest page; `None` honours `limit` as asked).
    pub max_page_size: Option<usize>,
    /// Name every unknown field id of a bulk body in its `400` (unpublished: the published
    /// contract says the answer names "a field id Oomnitza does not know"; `false` names the
    /// first one only).
    pub name_every_unknown_field: bool,
    /// Store `USER` and `EMAIL` in lower case when a record is processed or a user edited, so
    /// they read back in lower case whatever case was sent (unpublished: Oomnitza does not say
    /// whether it keeps their case; `false` keeps them as sent). Matching still finds the user,
    /// as a sent value is taken in lower case before it is compared.
    pub lower_case_identities: bool,
    /// In a `filter`, `\` inside single quotes escapes the next character (unpublished: the
    /// published contract calls filters SQL-like, where `'ACME\ada'` is those nine characters,
    /// as `false` reads it; a doubled quote is a quote either way).
    pub filter_backslash_escapes: bool,
}

impl Default for OomnitzaBehavior {
    /// A processing delay of [`DEFAULT_PROCESSING_DELAY_MS`], no rules, no CSRF enforcement,
    /// `409` on finalize after cancel, custom fields read as their lower-case ids, a numeric
    /// `role` as a number (the published schema's type), pages as large as `limit` asks, the
    /// first unknown field id named, usernames and e-mails kept in the case sent.
    fn default() -> Self {
        Self {
            processing_delay_ms: DEFAULT_PROCESSING_DELAY_MS,
            validation_rules: Vec::new(),
            require_csrf_echo: false,
            csrf_for_api_token: false,
            refuse_finalize_after_cancel: true,
            apply_after_cancel: false,
            custom_field_names: CustomFieldNames::default(),
            role_as_number: true,
            refuse_delete_with_assets: false,
            max_page_size: None,
            name_every_unknown_field: false,
            lower_case_identities: false,
            filter_backslash_escapes: false,
        }
    }
}

/// How a custom field is named in users read through the API (`"lower_case_id"` or `"id"` in
/// JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFieldNames {
    /// The field id in lower case (`6c1f0a2b...`), like the system attributes.
    #[default]
    LowerCaseId,
    /// The field id exactly as in bulk records (`6C1F0A2B...`).
    Id,
}

/// A tenant validation rule: a record whose `field` has a value (as text) that matches
/// `pattern` (or, with `must_match`, does not match it) fails when processed. Records without
/// a value for the field are not checked. Patterns use the `regex` crate's syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationRule {
    /// The field id the rule checks, such as `EMAIL`.
    pub field: String,
    /// The regular expression.
    pub pattern: String,
    /// `false`: a matching value is refused; `true`: a value that does not match is refused.
    #[serde(default)]
    pub must_match: bool,
    /// The failure reason shown in the run log (default: one naming the field, value and rule).
    #[serde(default)]
    pub message: Option<String>,
}

/// A validation rule whose pattern does not compile, or that names no field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRule(pub String);

impl std::fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRule {}

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
    /// `Retry-After` seconds sent with `429`; none sent when unset (Oomnitza sends it only
    /// sometimes).
    pub retry_after_secs: Option<u64>,
    /// Every API request answers `503` for this long, counted from when the faults were set.
    pub outage_for_ms: Option<u64>,
    /// Only the bulk endpoint (`/api/v3/bulk…`) answers `503` for this long, counted from when
    /// the faults were set; the rest of the API (the credential check, user reads) answers.
    pub bulk_outage_for_ms: Option<u64>,
    /// Only the users endpoints (`/api/v3/users…`: user reads, edits, deletes, a user's
    /// assets) answer `503` for this long, counted from when the faults were set; the bulk
    /// endpoint and the credential check answer.
    pub users_outage_for_ms: Option<u64>,
    /// Every authenticated request answers `403` (a token without rights).
    pub forbidden: bool,
    /// Authenticated requests whose path starts with one of these prefixes answer `403` (a
    /// token lacking one right: say `/api/v3/users/` for a leaver's user calls, or
    /// `/api/v3/bulk/{portion}/finalize`); the rest of the API, the credential check
    /// (`/api/v2/mappings`) included unless listed, answers as usual.
    pub forbidden_paths: Vec<String>,
    /// `GET /api/v3/users` ignores `skip` and always answers from the first user (a proxy or
    /// gateway that drops the parameter): a reader paging through users sees the same page again.
    pub users_skip_ignored: bool,
    /// Authenticated requests whose path starts with one of these prefixes answer `404` (a
    /// proxy, or a base URL that changed, answering for the tenant; say
    /// `/api/v3/bulk/{portion}/finalize`).
    pub missing_paths: Vec<String>,
    /// Reads of a portion's state (`GET /api/v3/bulk/{portion}`) answer `503` until this is
    /// turned off again; posts, finalize, the run log and the rest of the API answer. Lets a
    /// test show what a client does when it cannot learn whether a portion was canceled.
    pub portion_reads_failing: bool,
    /// Processing stalls: accepted records stay `processing` until this is turned off again
    /// (Oomnitza under load; also lets a test look at a portion before anything is applied).
    pub processing_paused: bool,
    /// Records with one of these e-mails (any case) make their whole batch `422` when posted
    /// (a refusal at post time, unlike Oomnitza's own, which come when records are processed).
    pub poison_emails: Vec<String>,
    /// The next this many user deletes (`DELETE /api/v3/users/{ident}`) are answered `503`
    /// whatever they did: the first deletes the user, later ones find it gone. As when a
    /// gateway gives up on Oomnitza's answers for a while: the client cannot tell that its
    /// delete happened. Counts down with each.
    pub deletes_answer_lost: u32,
}

/// What the simulator has seen so far; `GET /_admin/stats` returns it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OomnitzaStats {
    /// Requests to `/api/...` (including refused ones, excluding `/_admin`).
    pub api_requests: u64,
    /// `POST /api/v3/bulk` requests that got past auth and faults, whatever their answer
    /// (test runs excluded: see `test_run_records`).
    pub bulk_requests: u64,
    /// Records in accepted (`200`) bulk posts (test runs excluded).
    pub bulk_records: u64,
    /// When the first bulk post got past auth and faults (ms since the epoch).
    pub first_bulk_at_ms: Option<i64>,
    /// When accepted records were last processed (ms since the epoch).
    pub last_bulk_at_ms: Option<i64>,
    /// Records accepted and not processed yet, over all portions.
    pub records_processing: u64,
    /// Records discarded because their portion was canceled.
    pub records_canceled: u64,
    /// Records of test runs (checked, not applied).
    pub test_run_records: u64,
    /// `GET /api/v3/users` and `GET /api/v3/users/{id}` requests answered `200`.
    pub user_reads: u64,
    /// Users returned by those reads.
    pub users_returned: u64,
    /// Requests made with a password-session token that echoed its `X-CSRF-Token`.
    pub csrf_echoed: u64,
    /// Requests made with a password-session token without (or with a wrong) `X-CSRF-Token`.
    pub csrf_missing: u64,
    /// Users created.
    pub records_created: u64,
    /// Users updated.
    pub records_updated: u64,
    /// Records that changed nothing.
    pub records_unchanged: u64,
    /// Records skipped (create-only on an existing user, update-only on an unknown one).
    pub records_skipped: u64,
    /// Records that failed (run log), including client-reported failures; not test runs.
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

/// One portion (integration run) and its run log. In a test run the counts say what
/// processing would have done; nothing was applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortionState {
    /// The portion id chosen by the client.
    pub portion: String,
    /// The envelope's `connector_name` (or `connector_id`) of the first accepted batch.
    pub connector: String,
    /// The address the latest accepted batch came from.
    pub ipv4_address: String,
    /// An administrator canceled the run.
    pub canceled: bool,
    /// The client finalized the portion.
    pub finalized: bool,
    /// Some batch of the portion was a test run.
    pub test_run: bool,
    /// Bulk posts that reached this portion (accepted or not).
    pub bulk_requests: u64,
    /// Records accepted and not processed yet.
    pub processing: u64,
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
    /// Records discarded because the run was canceled (queued when it was, or posted after).
    pub canceled_records: u64,
    /// The failed records with their reasons.
    pub failed_records: Vec<FailedRecord>,
    /// Run-log messages of client-reported fatal errors (`error_type: "Fatal Error"`).
    pub fatal_errors: Vec<String>,
    /// Run-log messages about discarded records.
    pub canceled_messages: Vec<String>,
    /// A test run's verdict per record: `{"result", "record", "reason"?}`.
    pub test_run_payload: Vec<Value>,
    /// When the first batch was accepted (or the portion was canceled or finalized), ms since
    /// the epoch.
    pub started_at_ms: Option<i64>,
    /// When the run ended: canceled, or finalized with nothing left processing.
    pub ended_at_ms: Option<i64>,
}

/// A record of the run log that failed, as posted, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRecord {
    /// The record as posted (`null` for a client-reported failure without records).
    pub record: Value,
    /// Why it failed.
    pub reason: String,
    /// The run log's message: who the record is (USER, EMAIL, sync values) and the reason.
    pub message: String,
}

/// A running Oomnitza simulator; dropping it shuts the server and its worker down.
#[derive(Debug)]
pub struct OomnitzaSim {
    shared: Arc<Shared>,
    server: Server,
    _worker: worker::WorkerHandle,
}

impl OomnitzaSim {
    /// Starts a simulator on `127.0.0.1` and a free port.
    pub async fn spawn(config: OomnitzaConfig) -> std::io::Result<OomnitzaSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::spawn_on(config, listener).await
    }

    /// Starts a simulator on `listener`; fails with `InvalidInput` on an invalid validation
    /// rule.
    pub async fn spawn_on(
        config: OomnitzaConfig,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<OomnitzaSim> {
        let shared = Arc::new(
            Shared::new(config)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        );
        let server = Server::start(listener, router(Arc::clone(&shared)))?;
        let worker = worker::start(Arc::clone(&shared));
        tracing::info!(url = %server.url(), "oomnitza simulator listening");
        Ok(OomnitzaSim {
            shared,
            server,
            _worker: worker,
        })
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

    /// Cancels a portion as an administrator would (creating it if unknown): its records still
    /// processing and those posted later (still answered `200`) are discarded and counted as
    /// canceled; `GET /api/v3/bulk/{portion}` says `canceled: true`.
    pub fn cancel_portion(&self, id: &str) {
        self.shared.cancel_portion(id);
    }

    /// Waits until no accepted record is left to process, in any portion.
    pub async fn wait_idle(&self) {
        self.shared.wait_idle(None).await;
    }

    /// Waits until portion `id` has nothing processing (at once if it is unknown).
    pub async fn wait_portion_idle(&self, id: &str) {
        self.shared.wait_idle(Some(id)).await;
    }

    /// The tenant's current behaviour settings.
    pub fn behavior(&self) -> OomnitzaBehavior {
        self.shared.behavior()
    }

    /// Replaces the behaviour settings; the processing delay applies to batches accepted from
    /// now on, the rules to records processed from now on.
    pub fn set_behavior(&self, behavior: OomnitzaBehavior) -> Result<(), InvalidRule> {
        self.shared.set_behavior(behavior)
    }

    /// Sets the processing delay of batches accepted from now on.
    pub fn set_processing_delay(&self, delay: Duration) {
        let mut behavior = self.shared.behavior();
        behavior.processing_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        // Only the delay changes, and the current rules compiled already.
        let _ = self.shared.set_behavior(behavior);
    }

    /// Replaces the tenant validation rules checked when records are processed.
    pub fn set_validation_rules(&self, rules: Vec<ValidationRule>) -> Result<(), InvalidRule> {
        let mut behavior = self.shared.behavior();
        behavior.validation_rules = rules;
        self.shared.set_behavior(behavior)
    }

    /// Replaces the active faults; `outage_for_ms` counts from now.
    pub fn set_faults(&self, faults: OomnitzaFaults) {
        self.shared.set_faults(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> OomnitzaFaults {
        self.shared.faults()
    }

    /// Ends every password session, as an expiry would: their tokens get `401` from now on.
    pub fn revoke_sessions(&self) {
        self.shared.revoke_sessions();
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
        .route(
            "/api/v3/users/{id}",
            get(users::one)
                .patch(offboard::patch)
                .delete(offboard::delete),
        )
        .route("/api/v3/users/{id}/assets", get(offboard::assets))
        .route("/api/v2/mappings", get(gate::mappings))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            gate::api_gate,
        ));
    Router::new()
        .route("/api/request_token", post(gate::request_token))
        .merge(api)
        .merge(admin::routes())
        .merge(offboard::admin_routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}
