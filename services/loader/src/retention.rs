//! Run records past their retention: when a run finished, and whether it is older than the
//! loader's `run_retention_days`, so the finalizer can remove its record.

use std::time::Duration;

use peoplesync_bus::RunRecord;

/// When the run finished: its `finished_at`, else when it started.
pub(crate) fn finished_at(record: &RunRecord) -> Option<chrono::DateTime<chrono::Utc>> {
    record
        .finished_at
        .as_deref()
        .or(Some(record.started_at.as_str()))
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&chrono::Utc))
}

/// Whether a run that finished at `finished` is older than `retention` at `now`. A run with
/// no readable time is kept.
pub(crate) fn past_retention(
    finished: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
    retention: Duration,
) -> bool {
    finished.is_some_and(|at| {
        now.signed_duration_since(at)
            .to_std()
            .is_ok_and(|age| age > retention)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started: &str, finished: Option<&str>) -> RunRecord {
        let mut record = RunRecord::start("acme", "r1", true, "test");
        record.started_at = started.to_owned();
        record.finished_at = finished.map(str::to_owned);
        record
    }

    #[test]
    fn runs_are_kept_for_the_retention_after_they_finished() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let days = |n: u64| Duration::from_secs(n * 86_400);
        let old = record("2026-08-01T00:00:00Z", Some("2026-08-01T01:00:00Z"));
        assert!(past_retention(finished_at(&old), now, days(90)));
        assert!(!past_retention(finished_at(&old), now, days(200)));
        let recent = record("2026-11-26T00:00:00Z", Some("2026-11-26T00:10:00Z"));
        assert!(!past_retention(finished_at(&recent), now, days(2)));
        assert!(past_retention(finished_at(&recent), now, days(1)));
        let unfinished = record("2026-08-01T00:00:00Z", None);
        assert!(
            past_retention(finished_at(&unfinished), now, days(90)),
            "no finish time: the start time counts"
        );
        let unreadable = record("yesterday", None);
        assert!(
            !past_retention(finished_at(&unreadable), now, days(1)),
            "a record with no readable time is kept"
        );
    }
}
