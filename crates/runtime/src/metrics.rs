//! Prometheus metrics for the services: one process-wide recorder (the `metrics` facade with
//! `metrics-exporter-prometheus`), installed once, rendered by `/metrics` (see [`crate::http`]).
//!
//! The metric names every dashboard and alert relies on are constants in [`names`]; the
//! [`catalog`] lists each one a service exports with its help text and labels, and
//! [`catalog::register`] describes them and creates every series at 0 when the service starts,
//! so `increase()` sees the first event after a restart. Code records with the `metrics` macros
//! (`metrics::counter!(names::LOADER_EVENTS, ...)`) as usual.

pub mod catalog;
mod process;

pub use catalog::{Service, register};
pub use process::collect_process;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for every metric whose name ends in `_seconds`: from 5 ms (a local bulk
/// request) to a minute (the retry budget of one request). Buckets, not the exporter's default
/// summaries, so latencies can be aggregated across replicas with `histogram_quantile`.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The recorder could not be installed (another global recorder was installed first).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot install the Prometheus metrics recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder, once; later calls return the same handle.
/// Metrics recorded before this call are lost, so services call it first thing.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .map_err(|e| MetricsError(e.to_string()))?
                .install_recorder()
                .map_err(|e| MetricsError(e.to_string()))
        })
        .clone()
}

/// The installed recorder's handle, if [`install`] succeeded.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get()
        .and_then(|result| result.as_ref().ok())
        .cloned()
}

/// The metric names dashboards and alerts rely on (see `docs/operations.md`). Renaming one is
/// a breaking change for every operator's dashboards.
pub mod names {
    /// Counter, labels `integration`, `outcome` (written, unchanged, filtered, dead_lettered,
    /// canceled, stale): events the loader handled.
    pub const LOADER_EVENTS: &str = "peoplesync_loader_events_total";
    /// Counter, label `status` (the HTTP status, or the kind of failure when no answer came):
    /// bulk requests sent.
    pub const LOADER_BULK_REQUESTS: &str = "peoplesync_loader_bulk_requests_total";
    /// Histogram: duration of one bulk request attempt, in seconds.
    pub const LOADER_BULK_REQUEST_SECONDS: &str = "peoplesync_loader_bulk_request_seconds";
    /// Gauge: bulk requests in flight in this replica.
    pub const LOADER_IN_FLIGHT: &str = "peoplesync_loader_in_flight_requests";
    /// Gauge: the bulk request rate this replica allows itself now (lowered after 429s).
    pub const LOADER_RATE_LIMIT: &str = "peoplesync_loader_rate_limit_per_second";
    /// Gauge 0/1, label `integration`: the integration is paused.
    pub const LOADER_PAUSED: &str = "peoplesync_loader_paused";
    /// Gauge 0/1: Oomnitza refuses this replica's credentials (401/403).
    pub const LOADER_CREDENTIALS_FAILING: &str = "peoplesync_loader_credentials_failing";
    /// Gauge 0/1, label `integration`: the loaders paused the integration because Oomnitza
    /// refused its records as a whole (a configuration error such as an unknown field id).
    pub const LOADER_CONFIGURATION_REFUSED: &str = "peoplesync_loader_configuration_refused";
    /// Gauge 0/1, label `integration`: finalizing a run's portion failed on this replica and
    /// is tried again (the `/readyz` note `finalize <integration>` says why).
    pub const LOADER_FINALIZE_FAILING: &str = "peoplesync_loader_finalize_failing";
    /// Counter, labels `integration` and `result` (`confirmed`, `not_applied`): records of
    /// finalized runs checked against what Oomnitza holds.
    pub const LOADER_RECORDS_VERIFIED: &str = "peoplesync_loader_records_verified_total";
    /// Counter, labels `integration` and `state` (`verified`, `unverified`, `canceled`): runs
    /// whose verification ended, or that an administrator canceled in Oomnitza.
    pub const LOADER_RUNS_CHECKED: &str = "peoplesync_loader_runs_checked_total";
    /// Counter, labels `integration`, `action` (none, updated, deleted, kept_holding_assets,
    /// not_found): leavers handled.
    pub const LOADER_LEAVERS: &str = "peoplesync_loader_leavers_total";
    /// Counter, label `integration`: leavers handled who still held assets in Oomnitza.
    pub const LOADER_LEAVERS_WITH_ASSETS: &str = "peoplesync_loader_leavers_with_assets_total";
    /// Counter, label `integration`: worker events published.
    pub const EXTRACTOR_WORKERS_PUBLISHED: &str = "peoplesync_extractor_workers_published_total";
    /// Counter, label `integration`: Sage People pages read.
    pub const EXTRACTOR_PAGES: &str = "peoplesync_extractor_pages_total";
    /// Counter, labels `integration`, `outcome` (completed, failed, quota_exhausted,
    /// removals_held): runs ended.
    pub const EXTRACTOR_RUNS: &str = "peoplesync_extractor_runs_total";
    /// Gauge, label `integration`: share (0..1) of the Sage People API quota used.
    pub const EXTRACTOR_API_USAGE_RATIO: &str = "peoplesync_extractor_api_usage_ratio";
    /// Gauge 0/1, label `integration`: a run is in progress.
    pub const EXTRACTOR_RUN_IN_PROGRESS: &str = "peoplesync_extractor_run_in_progress";
    /// Gauge 0/1, label `integration`: this replica holds the scheduler lease.
    pub const EXTRACTOR_SCHEDULER_LEADER: &str = "peoplesync_extractor_scheduler_leader";
    /// Gauge, label `integration`: removals found by full runs and held for an operator's
    /// approval (`syncctl approve-removals`), over every run not yet approved.
    pub const EXTRACTOR_REMOVALS_HELD: &str = "peoplesync_extractor_removals_held";
    /// Counter, label `integration`: full runs that completed without computing their removals
    /// (a seen list out of order, or the baseline's list gone): none of the workers who left
    /// since the baseline was announced by them.
    pub const EXTRACTOR_REMOVALS_SKIPPED: &str = "peoplesync_extractor_removals_skipped_total";
    /// Counter, label `integration`: workers no longer listed by a run with a `source_filter`
    /// who are still employed in Sage People (they moved out of the filter): not leavers.
    pub const EXTRACTOR_MOVED_OUT: &str = "peoplesync_extractor_moved_out_total";
    /// Gauge, always 1, labels `service` and `version`: which build is running.
    pub const BUILD_INFO: &str = "peoplesync_build_info";
}
