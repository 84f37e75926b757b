//! Every metric a service exports, in one list per service: name, kind, help text, and the
//! label values to create at start-up. [`register`] describes each metric and sets every
//! counter and gauge series to 0 before the service does anything, so a restart does not make
//! `increase()` miss the first events and alerts see a series from the first scrape.
//!
//! To add a metric: add its name to [`super::names`] and one line to [`LOADER`] or
//! [`EXTRACTOR`]; nothing else.

use metrics::Unit;

use super::names::*;

/// A service whose metrics are listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `oomnitza-loader`.
    Loader,
    /// `sage-extractor`.
    Extractor,
}

impl Service {
    /// The binary's name, as the `service` label of `peoplesync_build_info`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Loader => "oomnitza-loader",
            Service::Extractor => "sage-extractor",
        }
    }

    /// The service's metrics.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Service::Loader => LOADER,
            Service::Extractor => EXTRACTOR,
        }
    }
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; created at 0.
    Counter,
    /// Goes up and down; created at 0.
    Gauge,
    /// Observations in buckets; described only (a histogram with no observation has no
    /// meaningful value to create).
    Histogram,
}

/// The values a label takes at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// One series per configured integration.
    Integration,
    /// These values (a closed set, or the ones alerts match on).
    Fixed(&'static [&'static str]),
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name, from [`super::names`].
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Its labels and the values each series is created with.
    pub labels: &'static [(&'static str, Values)],
}

const fn metric(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [(&'static str, Values)],
) -> Metric {
    Metric {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};
use Values::{Fixed, Integration};

const BY_INTEGRATION: &[(&str, Values)] = &[("integration", Integration)];

/// The loader's metrics.
pub const LOADER: &[Metric] = &[
    metric(
        LOADER_EVENTS,
        Counter,
        "Worker events handled, by integration and outcome",
        &[
            ("integration", Integration),
            (
                "outcome",
                Fixed(&[
                    "written",
                    "unchanged",
                    "filtered",
                    "dead_lettered",
                    "canceled",
                    "stale",
                    "leaver",
                ]),
            ),
        ],
    ),
    metric(
        LOADER_BULK_REQUESTS,
        Counter,
        "Bulk requests sent to Oomnitza, by HTTP status",
        &[("status", Fixed(&["200"]))],
    ),
    metric(
        LOADER_BULK_REQUEST_SECONDS,
        Histogram,
        "Duration of one bulk request attempt",
        &[],
    ),
    metric(
        LOADER_IN_FLIGHT,
        Gauge,
        "Bulk requests in flight in this replica",
        &[],
    ),
    metric(
        LOADER_RATE_LIMIT,
        Gauge,
        "Bulk requests per second this replica allows itself (lowered after 429s)",
        &[],
    ),
    metric(
        LOADER_PAUSED,
        Gauge,
        "1 while the integration is paused",
        BY_INTEGRATION,
    ),
    metric(
        LOADER_CREDENTIALS_FAILING,
        Gauge,
        "1 while Oomnitza refuses this replica's credentials",
        &[],
    ),
    metric(
        LOADER_CONFIGURATION_REFUSED,
        Gauge,
        "1 while the integration is paused because Oomnitza refused its records as a whole",
        BY_INTEGRATION,
    ),
    metric(
        LOADER_FINALIZE_FAILING,
        Gauge,
        "1 while finalizing a run's portion fails on this replica (the finalize is retried)",
        BY_INTEGRATION,
    ),
    metric(
        LOADER_RECORDS_VERIFIED,
        Counter,
        "Records of finalized runs read back from Oomnitza, by result (confirmed, not_applied)",
        &[
            ("integration", Integration),
            ("result", Fixed(&["confirmed", "not_applied"])),
        ],
    ),
    metric(
        LOADER_RUNS_CHECKED,
        Counter,
        "Runs whose check ended, by state (verified, unverified, canceled)",
        &[
            ("integration", Integration),
            ("state", Fixed(&["verified", "unverified", "canceled"])),
        ],
    ),
    metric(
        LOADER_LEAVERS,
        Counter,
        "Leavers handled, by action (none, updated, deleted, kept_holding_assets, not_found)",
        &[
            ("integration", Integration),
            (
                "action",
                Fixed(&[
                    "none",
                    "updated",
                    "deleted",
                    "kept_holding_assets",
                    "not_found",
                ]),
            ),
        ],
    ),
    metric(
        LOADER_LEAVERS_WITH_ASSETS,
        Counter,
        "Leavers handled who still held assets in Oomnitza",
        BY_INTEGRATION,
    ),
];

/// The extractor's metrics.
pub const EXTRACTOR: &[Metric] = &[
    metric(
        EXTRACTOR_WORKERS_PUBLISHED,
        Counter,
        "Worker events published, by integration",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_PAGES,
        Counter,
        "Sage People pages read, by integration",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_RUNS,
        Counter,
        "Runs ended, by integration and outcome",
        &[
            ("integration", Integration),
            (
                "outcome",
                Fixed(&["completed", "failed", "quota_exhausted", "removals_held"]),
            ),
        ],
    ),
    metric(
        EXTRACTOR_API_USAGE_RATIO,
        Gauge,
        "Share of the Sage People API quota used (0..1)",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_RUN_IN_PROGRESS,
        Gauge,
        "1 while a run is in progress",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_SCHEDULER_LEADER,
        Gauge,
        "1 while this replica holds the scheduler lease",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_REMOVALS_HELD,
        Gauge,
        "Removals found by full runs and held for an operator's approval",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_REMOVALS_SKIPPED,
        Counter,
        "Full runs that could not compute their removals (a seen list out of order, or the baseline's gone)",
        BY_INTEGRATION,
    ),
    metric(
        EXTRACTOR_MOVED_OUT,
        Counter,
        "Workers no longer listed who are still employed (moved out of the source_filter): not leavers",
        BY_INTEGRATION,
    ),
];

/// Installs the recorder if need be, describes `service`'s metrics and the process metrics,
/// creates every counter and gauge series at 0 (one per configured integration where a metric
/// is labelled by integration), and sets `peoplesync_build_info{service, version}` to 1. Call
/// once at start-up, before anything records.
pub fn register(service: Service, integrations: &[String]) {
    // Descriptions given before a recorder exists are dropped, so make sure there is one.
    if let Err(err) = super::install() {
        tracing::warn!(error = %err, "metrics are not recorded");
        return;
    }
    for metric in service.metrics() {
        let unit = metric.name.ends_with("_seconds").then_some(Unit::Seconds);
        match metric.kind {
            Counter => match unit {
                Some(unit) => metrics::describe_counter!(metric.name, unit, metric.help),
                None => metrics::describe_counter!(metric.name, metric.help),
            },
            Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Histogram => match unit {
                Some(unit) => metrics::describe_histogram!(metric.name, unit, metric.help),
                None => metrics::describe_histogram!(metric.name, metric.help),
            },
        }
        for labels in series(metric, integrations) {
            match metric.kind {
                Counter => metrics::counter!(metric.name, labels).increment(0),
                Gauge => metrics::gauge!(metric.name, labels).set(0.0),
                Histogram => {}
            }
        }
    }
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the labels say which build runs");
    metrics::gauge!(
        BUILD_INFO,
        "service" => service.name(),
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    super::process::describe();
}

/// Every label set `metric` is created with: the product of its labels' values.
pub fn series(metric: &Metric, integrations: &[String]) -> Vec<Vec<metrics::Label>> {
    let mut sets: Vec<Vec<metrics::Label>> = vec![Vec::new()];
    for (name, values) in metric.labels {
        let values: Vec<String> = match values {
            Integration => integrations.to_vec(),
            Fixed(values) => values.iter().map(|v| (*v).to_owned()).collect(),
        };
        sets = sets
            .into_iter()
            .flat_map(|set| {
                values.iter().map(move |value| {
                    let mut set = set.clone();
                    set.push(metrics::Label::new(*name, value.clone()));
                    set
                })
            })
            .collect();
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_is_unique_and_prefixed() {
        let mut names: Vec<&str> = LOADER.iter().chain(EXTRACTOR).map(|m| m.name).collect();
        assert!(names.iter().all(|n| n.starts_with("peoplesync_")));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a metric is listed twice");
    }

    #[test]
    fn series_are_the_product_of_label_values() {
        let integrations = vec!["a".to_owned(), "b".to_owned()];
        let events = LOADER
            .iter()
            .find(|m| m.name == LOADER_EVENTS)
            .expect("listed");
        assert_eq!(series(events, &integrations).len(), 14);
        let in_flight = LOADER
            .iter()
            .find(|m| m.name == LOADER_IN_FLIGHT)
            .expect("listed");
        assert_eq!(series(in_flight, &integrations), vec![Vec::new()]);
        let paused = LOADER
            .iter()
            .find(|m| m.name == LOADER_PAUSED)
            .expect("listed");
        assert_eq!(series(paused, &[]).len(), 0);
    }
}
