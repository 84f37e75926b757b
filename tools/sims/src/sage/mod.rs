//! A faithful HTTP simulator of the Sage People Employees API (v4) and its Salesforce OAuth.
//!
//! It follows the published Sage People Employees API contract: the three OAuth grants, marker paging with
//! a server-chosen page size, `$filter`, the API quota header and `/services/data/vXX.X/limits`,
//! and both error forms. Workers are
//! generated on the fly from their index, so memory does not grow with the size of the org; only
//! removals, patches and the number of added workers are kept. Faults can be injected at start
//! or at any time, in process or through `/_admin/faults`.

mod admin;
mod employees;
mod errors;
mod filter;
mod gate;
mod limits;
mod state;
mod token;

pub use errors::TRANSIENT_STATUSES;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::admin::Controlled;
use crate::server::Server;
use state::Shared;

/// How the simulated Sage People org behaves; see [`SageConfig::default`] for the defaults.
#[derive(Clone, Debug)]
pub struct SageConfig {
    /// Number of workers in the org at start (indices `0..workers`).
    pub workers: u64,
    /// Seed of the generated records, page sizes and injected faults.
    pub seed: u64,
    /// How many records a page holds (the real API does not publish this).
    pub page_size: PageSize,
    /// How the end of the list is signalled.
    pub end_style: EndStyle,
    /// OAuth client id (consumer key) accepted by the token endpoint; also the JWT `iss`.
    pub client_id: String,
    /// OAuth client secret accepted by the client-credentials and password grants.
    pub client_secret: String,
    /// Username of the integration user (password grant, JWT `sub`).
    pub username: String,
    /// Password of the integration user (password grant).
    pub password: String,
    /// PEM public key (SPKI or PKCS#1) that verifies JWT bearer assertions; `None` refuses that grant.
    pub jwt_public_key_pem: Option<String>,
    /// The org's API request allowance shown in `Sforce-Limit-Info`; calls past it get 403.
    pub api_quota: u64,
    /// Whether Employees API responses carry `Sforce-Limit-Info`. Salesforce documents the
    /// header for `/services/data`; for Apex REST it is not published, so both are possible.
    pub limit_info_header: bool,
    /// JWT `aud` values accepted besides `https://login.salesforce.com` and
    /// `https://test.salesforce.com` (an Experience Cloud site URL, say). The simulator's own
    /// URL stands for the org's My Domain host, which Salesforce does not accept as audience.
    pub jwt_extra_audiences: Vec<String>,
    /// Faults active from start.
    pub faults: SageFaults,
}

impl Default for SageConfig {
    /// 1000 workers, seed 42, pages of 50..=400, end by `204`, the `sim-*` credentials.
    fn default() -> Self {
        Self {
            workers: 1000,
            seed: 42,
            page_size: PageSize::Varying { min: 50, max: 400 },
            end_style: EndStyle::NoContent,
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            username: "integration@example.com".into(),
            password: "sim-password".into(),
            jwt_public_key_pem: None,
            api_quota: 1_000_000,
            limit_info_header: true,
            jwt_extra_audiences: Vec::new(),
            faults: SageFaults::default(),
        }
    }
}

/// Page size policy; the real server's page size is unpublished, so clients must handle any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageSize {
    /// Every page holds this many records (at least 1).
    Fixed(usize),
    /// Each page holds between `min` and `max` records, chosen from the seed and the marker,
    /// so re-reading a page with the same marker gives the same page.
    Varying {
        /// Smallest page (at least 1).
        min: usize,
        /// Largest page.
        max: usize,
    },
}

/// How the end of the employee list is signalled (the API may use either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndStyle {
    /// `204 No Content`.
    NoContent,
    /// `200` with `{"version":"4.8","data":[]}`.
    EmptyData,
}

/// Faults injected into the API; all off by default. `PUT /_admin/faults` takes this as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SageFaults {
    /// Delay added to every request (token and API), in milliseconds.
    pub latency_ms: u64,
    /// Share of API calls (0..1) that fail with a transient status (`503 SERVER_UNAVAILABLE`
    /// unless `transient_status` says otherwise).
    pub transient_failure_rate: f64,
    /// The status of those failures: one of 420, 429, 500, 502, 503 (the default), 504 — the
    /// statuses the contract calls transient.
    pub transient_status: Option<u16>,
    /// A token stops working after this many API calls made with it (`401 INVALID_SESSION_ID`).
    pub token_expiry_after: Option<u64>,
    /// Every API call answers `503` for this long, counted from when the faults were set.
    pub outage_for_ms: Option<u64>,
    /// Every API call fails with this configuration error: `MISSING_API_PERMISSION`,
    /// `INACCESSIBLE_FIELD`, `OBJECT_NOT_ACCESSIBLE` (403 `SAGE_PEOPLE_CONFIGURATION`), or
    /// `INVALID_FILTER` (400 `REQUEST_ERROR`), or any other published inner code. A chain such
    /// as `INVALID_FILTER/UNEXPECTED_TOKEN` nests each code in the previous one's `innererror`.
    pub config_error: Option<String>,
    /// The HTTP status of `config_error` instead of its usual one (e.g. 500): the inner code,
    /// not the status, says what is wrong.
    pub config_error_status: Option<u16>,
    /// The envelope's `target` of `config_error` (e.g. the field an `INACCESSIBLE_FIELD` names).
    pub config_error_target: Option<String>,
    /// The next this-many API calls answer `403 REQUEST_LIMIT_EXCEEDED` naming the concurrent
    /// limit `concurrent_limit` (too many requests at once); counts down.
    pub concurrent_limit_calls: u64,
    /// Which concurrent limit those refusals name; Salesforce has several.
    pub concurrent_limit: ConcurrentLimit,
    /// A `$filter` naming `id` is refused as `400 INVALID_FILTER / UNKNOWN_IDENTIFIER`, as if
    /// `id` were not a field. Sage People does not publish whether its filters accept `id`, so
    /// both are possible; by default the simulator accepts it.
    pub filter_refuses_id: bool,
    /// Every marker is refused with `400 INVALID_MARKER`.
    pub reject_markers: bool,
    /// Share of `200` employee responses (0..1) whose body is cut in the middle.
    pub truncate_rate: f64,
    /// Share of Employees API calls (0..1) answered `200` with an HTML page instead of the API,
    /// as a proxy or captive portal in front of the org might answer: the call never reaches
    /// the org, so it costs no quota and carries no `Sforce-Limit-Info`.
    pub html_page_rate: f64,
    /// `/services/data/vXX.X/limits` answers `403` with this Salesforce `errorCode`, as for a
    /// user without the "View Setup and Configuration" permission. What Salesforce answers
    /// such a user is not published, so the code is the caller's choice.
    pub limits_refused: Option<String>,
}

/// A Salesforce concurrent-request limit, as named in the message of a `403
/// REQUEST_LIMIT_EXCEEDED`. Each means "too many at once, back off"; none is the daily quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrentLimit {
    /// Long-running requests (20 seconds and more) at once: `ConcurrentPerOrgLongTxn`.
    #[default]
    LongTxn,
    /// API requests at once: `ConcurrentRequests (Concurrent API Requests)`.
    Requests,
    /// Long-running Apex at once, as older orgs name it: `ConcurrentPerOrgApex`.
    Apex,
}

impl ConcurrentLimit {
    /// The message Salesforce sends with the refusal.
    pub fn message(self) -> &'static str {
        match self {
            ConcurrentLimit::LongTxn => "ConcurrentPerOrgLongTxn Limit exceeded.",
            ConcurrentLimit::Requests => {
                "ConcurrentRequests (Concurrent API Requests) Limit exceeded."
            }
            ConcurrentLimit::Apex => "ConcurrentPerOrgApex Limit exceeded.",
        }
    }
}

/// What the simulator has seen so far; `GET /_admin/stats` returns it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SageStats {
    /// Token requests by grant: `client_credentials`, `password`, `jwt_bearer`, `other`.
    pub token_requests: BTreeMap<String, u64>,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Token requests refused (400).
    pub token_failures: u64,
    /// Requests to the Employees API, whatever their outcome.
    pub api_requests: u64,
    /// Non-empty pages of employees served (listing and single-employee reads).
    pub pages_served: u64,
    /// Employee records served.
    pub records_served: u64,
    /// End-of-list responses (204 or empty `data`).
    pub end_of_list: u64,
    /// API responses by HTTP status.
    pub status_counts: BTreeMap<u16, u64>,
    /// API responses with status 401.
    pub unauthorized: u64,
    /// API calls counted against the quota (as in `Sforce-Limit-Info`).
    pub api_usage: u64,
    /// The quota (as in `Sforce-Limit-Info`).
    pub api_quota: u64,
    /// Workers in the org now (generated plus added, minus removed).
    pub workers: u64,
    /// Highest number of API requests served at the same time.
    pub max_in_flight: u64,
    /// Reads of `/services/data/vXX.X/limits`.
    pub limits_requests: u64,
    /// The `aud` of every JWT bearer assertion received, with how often it came.
    pub jwt_audiences: BTreeMap<String, u64>,
}

/// A running Sage People simulator; dropping it shuts the server down.
#[derive(Debug)]
pub struct SageSim {
    shared: Arc<Shared>,
    server: Server,
}

impl SageSim {
    /// Starts a simulator on `127.0.0.1` and a free port.
    pub async fn spawn(config: SageConfig) -> std::io::Result<SageSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::spawn_on(config, listener).await
    }

    /// Starts a simulator on `listener`. Fails if the JWT public key is not a valid PEM key.
    pub async fn spawn_on(
        config: SageConfig,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<SageSim> {
        Self::spawn_advertising(config, listener, None).await
    }

    /// Starts a simulator on `listener` that names `public_url` (default: the bound address)
    /// as the instance URL in its token responses: in a container, the address other
    /// containers reach it by (`http://sage-people-sim:8080`), not its own loopback.
    pub async fn spawn_advertising(
        config: SageConfig,
        listener: tokio::net::TcpListener,
        public_url: Option<String>,
    ) -> std::io::Result<SageSim> {
        let addr = listener.local_addr()?;
        let url = public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| crate::server::url_of(addr));
        let shared = Arc::new(Shared::new(config, url)?);
        let server = Server::start(listener, router(Arc::clone(&shared)))?;
        tracing::info!(url = %server.url(), "sage people simulator listening");
        Ok(SageSim { shared, server })
    }

    /// `http://127.0.0.1:PORT`: both the login URL and the instance URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SageStats {
        self.shared.stats()
    }

    /// Replaces the active faults; `outage_for_ms` counts from now.
    pub fn set_faults(&self, faults: SageFaults) {
        self.shared.set_faults(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> SageFaults {
        self.shared.faults()
    }

    /// Removes a worker from the org (its id stays valid as a marker). Unknown ids are ignored.
    pub fn remove_worker(&self, id: &str) {
        self.shared.remove_worker(id);
    }

    /// Lists a removed worker again with the record it had when removed (a rehire under the same
    /// id). Ids of workers not removed are ignored.
    pub fn restore_worker(&self, id: &str) {
        self.shared.restore_worker(id);
    }

    /// Applies a JSON merge-patch (RFC 7386) to a worker's current record, except that `null`
    /// sets a field to `null` rather than removing it (the API serves every field). The id
    /// cannot change. Unknown ids and non-object patches are ignored.
    pub fn patch_worker(&self, id: &str, patch: serde_json::Value) {
        let _ = self.shared.patch_worker(id, &patch);
    }

    /// Serves `raw` verbatim in place of worker `id`'s record, whatever its shape (another or
    /// no `id`, wrong types, not an object): hostile input for tests. The record keeps its
    /// place in the listing; a string `id` in it works as a paging marker. Unknown ids are
    /// ignored.
    pub fn replace_worker(&self, id: &str, raw: serde_json::Value) {
        let _ = self.shared.replace_worker(id, raw);
    }

    /// The current record of a worker, as the API would serve it, or `None` if there is none.
    pub fn worker(&self, id: &str) -> Option<serde_json::Value> {
        self.shared.worker(id)
    }

    /// Grows the org by `n` new workers after the existing ones.
    pub fn add_workers(&self, n: u64) {
        self.shared.add_workers(n);
    }

    /// Sets the number of API calls already used against the quota.
    pub fn set_api_usage(&self, used: u64) {
        self.shared.set_api_usage(used);
    }

    /// Revokes every issued token: later calls with them get `401 INVALID_SESSION_ID`.
    pub fn revoke_tokens(&self) {
        self.shared.revoke_tokens();
    }

    /// Shuts down gracefully and waits for in-flight requests to finish.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.stop().await
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/services/apexrest/spapi/v4/employees",
            get(employees::list),
        )
        .route(
            "/services/apexrest/spapi/v4/employees/{id}",
            get(employees::one),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            gate::api_gate,
        ));
    Router::new()
        .route(
            "/services/data/{version}/limits",
            get(limits::limits).layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                gate::session_gate,
            )),
        )
        .route("/services/oauth2/token", post(token::token))
        .merge(api)
        .merge(admin::routes())
        .with_state(shared)
}
