//! Runs as the control plane shows them: the run record from KV plus the loaders' live
//! outcome counts until the run is finalized (then the counts kept in the record), and
//! `pending` = expected − accounted. WatchRun re-reads both whenever the record changes (KV
//! watch) and every 250 ms for the counts, and sends an update only when something changed —
//! or when a running or loading run has stopped changing (its `warning`), or, when reading it
//! keeps failing, ends with UNAVAILABLE, so a watcher is never left on a spinner in silence.

use std::time::Duration;

use peoplesync_bus::{
    Bus, FinalizeState, OutcomeCounts, RunRecord, RunState, Runs, Verification, VerifyState,
    outcomes,
};
use peoplesync_proto::v1 as pb;
use peoplesync_runtime::watch::next_change;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::status;

/// How often WatchRun polls the outcome counts.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// How long WatchRun waits for a run record that does not exist yet (a trigger's reply can
/// arrive before the record is visible).
const APPEAR_WITHIN: Duration = Duration::from_secs(10);
/// How long a run not done may show no change (record or counts) before WatchRun says so: a
/// running run, whose extractor records progress every few seconds while it lists, or one
/// whose loading has events pending, which the loaders count as they apply them.
pub(crate) const NO_PROGRESS_AFTER: Duration = Duration::from_secs(60);
/// How long every read of a watched run may fail before WatchRun ends with UNAVAILABLE.
const READS_FAILING_FOR: Duration = Duration::from_secs(15);

/// How long one read of a watched run may take; one that takes longer counts as failed.
const READ_LIMIT: Duration = Duration::from_secs(5);
/// Runs ListRuns returns by default, and at most.
pub(crate) const DEFAULT_LIST: usize = 20;
/// The largest ListRuns page.
pub(crate) const MAX_LIST: usize = 500;

/// Run records and counts.
#[derive(Clone)]
pub(crate) struct RunViews {
    bus: Bus,
    runs: Runs,
}

impl RunViews {
    pub(crate) fn new(bus: Bus) -> RunViews {
        let runs = bus.runs();
        RunViews { bus, runs }
    }

    /// One run, or NOT_FOUND.
    pub(crate) async fn get(&self, integration: &str, run_id: &str) -> Result<pb::Run, Status> {
        self.find(integration, run_id).await?.ok_or_else(|| {
            Status::not_found(format!(
                "integration {integration} has no run {run_id}; list runs with ListRuns (syncctl runs)"
            ))
        })
    }

    /// One run, if it exists. Counts are read before the record: the finalizer stores the
    /// final counts before it purges the live ones, so this order never shows a run with its
    /// counts dropped to zero.
    async fn find(&self, integration: &str, run_id: &str) -> Result<Option<pb::Run>, Status> {
        let live = outcomes::count(&self.bus, integration, run_id)
            .await
            .map_err(|e| status::bus(&format!("counting outcomes of run {run_id}"), e))?;
        let record = self
            .runs
            .get(integration, run_id)
            .await
            .map_err(|e| status::bus(&format!("reading run {run_id}"), e))?;
        Ok(record.map(|(record, _)| view(&record, live)))
    }

    /// The newest `limit` runs, of one integration or of all.
    pub(crate) async fn list(
        &self,
        integration: Option<&str>,
        limit: usize,
    ) -> Result<Vec<pb::Run>, Status> {
        let records = self
            .runs
            .list(integration)
            .await
            .map_err(|e| status::bus("listing runs", e))?;
        let mut runs = Vec::with_capacity(limit.min(records.len()));
        for record in records.into_iter().take(limit) {
            let live = if record.counts.is_some() {
                OutcomeCounts::default()
            } else {
                outcomes::count(&self.bus, &record.integration, &record.run_id)
                    .await
                    .map_err(|e| {
                        status::bus(&format!("counting outcomes of run {}", record.run_id), e)
                    })?
            };
            runs.push(view(&record, live));
        }
        Ok(runs)
    }

    /// Streams the run's progress into `tx` until it is done, the client goes away, or
    /// `shutdown` (this replica is stopping).
    pub(crate) async fn watch(
        &self,
        integration: String,
        run_id: String,
        tx: mpsc::Sender<Result<pb::Run, Status>>,
        shutdown: CancellationToken,
    ) {
        let mut changes = match self.runs.watch_run(&integration, &run_id).await {
            Ok(watch) => Some(watch),
            Err(err) => {
                tracing::debug!(error = %err, "cannot watch the run record; polling only");
                None
            }
        };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let appear_by = tokio::time::Instant::now() + APPEAR_WITHIN;
        // The run as last read (without a warning), and since when it has looked like that.
        let mut seen: Option<(pb::Run, tokio::time::Instant)> = None;
        let mut last: Option<pb::Run> = None;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable(
                        "this loader replica is shutting down; watch the run again (another replica answers)",
                    ))).await;
                    return;
                }
                () = tx.closed() => return,
                change = next_change(&mut changes) => {
                    if change.is_none() {
                        changes = None;
                    }
                }
                _ = tick.tick() => {}
            }
            // Bounded: while NATS is gone long enough for the client's queue to fill, a read
            // waits to be sent for as long as the outage lasts, and the watch would go silent.
            let read = tokio::time::timeout(READ_LIMIT, self.find(&integration, &run_id))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::unavailable(format!(
                        "NATS did not answer within {} s",
                        READ_LIMIT.as_secs()
                    )))
                });
            let now = tokio::time::Instant::now();
            let run = match read {
                Ok(Some(run)) => run,
                Ok(None) if now < appear_by => continue,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Status::not_found(format!(
                            "integration {integration} has no run {run_id}; list runs with ListRuns (syncctl runs)"
                        ))))
                        .await;
                    return;
                }
                Err(status) => {
                    // A NATS hiccup is retried on the next tick; a failure that lasts ends the
                    // watch saying why, rather than leaving the watcher without updates.
                    let since = *failing_since.get_or_insert(now);
                    if since == now {
                        tracing::warn!(%integration, %run_id, %status, "reading a watched run failed; retrying");
                    }
                    if now.duration_since(since) >= READS_FAILING_FOR {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "cannot follow run {run_id} of {integration}: reading it has failed for {} s ({}); watch it again once this loader replica reaches NATS",
                                READS_FAILING_FOR.as_secs(),
                                status.message()
                            ))))
                            .await;
                        return;
                    }
                    continue;
                }
            };
            failing_since = None;
            // The run as first read in its current form, and since when: replaced only when it
            // changes, not copied on every tick.
            let changed_at = match &seen {
                Some((before, at)) if *before == run => *at,
                _ => {
                    seen = Some((run.clone(), now));
                    now
                }
            };
            let run = pb::Run {
                warning: no_progress(&run, now.duration_since(changed_at)),
                ..run
            };
            if last.as_ref() != Some(&run) {
                let done = run.done;
                if tx.send(Ok(run.clone())).await.is_err() {
                    return;
                }
                last = Some(run);
                if done {
                    return;
                }
            }
        }
    }
}

/// What WatchRun says of a run that has shown no change for `unchanged_for`, once that has
/// lasted [`NO_PROGRESS_AFTER`] or more: a running run waits for an extractor; a run not done
/// whose extraction has ended but whose events are still `pending` waits for the loaders
/// (none running, or stuck); one with nothing pending whose portion is still not finalized
/// waits for a loader to finalize it (none running, or Oomnitza refusing the finalize, which a
/// loader retries every few seconds). Nothing otherwise: a done run, or one being verified,
/// which verification moves on with its own timeout and notes. The time is
/// given in whole periods, so the warning changes (and is sent again) once a period, not
/// every second.
pub(crate) fn no_progress(run: &pb::Run, unchanged_for: Duration) -> String {
    let period = NO_PROGRESS_AFTER.as_secs().max(1);
    let secs = unchanged_for.as_secs() / period * period;
    if run.done || secs == 0 {
        return String::new();
    }
    let question = if run.state() == pb::RunState::Running {
        "is an extractor running?"
    } else if run.pending > 0 {
        "are loaders running, and taking records?"
    } else if run.finalize.as_ref().is_some_and(|f| {
        matches!(
            f.state(),
            pb::FinalizeState::Pending | pb::FinalizeState::Claimed
        )
    }) {
        "the run's portion is not finalized yet: are loaders running, and does Oomnitza accept the finalize?"
    } else {
        return String::new();
    };
    format!("no progress for {secs} s; {question} see syncctl status")
}

/// The API view of a run: the record, with `live` counts unless final counts are kept.
pub(crate) fn view(record: &RunRecord, live: OutcomeCounts) -> pb::Run {
    let counts = record.counts.unwrap_or(live);
    let finalized = matches!(
        record.finalize,
        FinalizeState::Finalized { .. } | FinalizeState::NothingToFinalize
    );
    let canceled = matches!(record.finalize, FinalizeState::Canceled { .. });
    // A finalized portion is over only once the check of what Oomnitza applied has ended.
    let checked = record.is_checked();
    let state = match record.state {
        RunState::Running => pb::RunState::Running,
        RunState::Completed => pb::RunState::Completed,
        RunState::Failed => pb::RunState::Failed,
        RunState::QuotaExhausted => pb::RunState::QuotaExhausted,
    };
    let outcome = match record.state {
        _ if canceled => pb::RunOutcome::Canceled,
        RunState::Failed => pb::RunOutcome::Failed,
        RunState::QuotaExhausted => pb::RunOutcome::Interrupted,
        RunState::Running => pb::RunOutcome::Running,
        RunState::Completed if !finalized => pb::RunOutcome::Loading,
        RunState::Completed if !checked => pb::RunOutcome::Verifying,
        RunState::Completed if counts.dead_lettered > 0 => pb::RunOutcome::SucceededWithDeadLetters,
        RunState::Completed => pb::RunOutcome::Succeeded,
    };
    let status = |state: pb::FinalizeState, by: &str, at: Option<&str>| pb::FinalizeStatus {
        state: state.into(),
        by: by.to_owned(),
        at: at.and_then(timestamp),
    };
    let finalize = match &record.finalize {
        FinalizeState::Pending => status(pb::FinalizeState::Pending, "", None),
        FinalizeState::Claimed { by, at } => status(pb::FinalizeState::Claimed, by, Some(at)),
        FinalizeState::Finalized { by, at } => status(pb::FinalizeState::Finalized, by, Some(at)),
        FinalizeState::NothingToFinalize => status(pb::FinalizeState::NothingToFinalize, "", None),
        FinalizeState::Canceled { by, at } => status(pb::FinalizeState::Canceled, by, Some(at)),
    };
    pb::Run {
        integration_id: record.integration.clone(),
        run_id: record.run_id.clone(),
        full: record.full,
        trigger: record.trigger.clone(),
        state: state.into(),
        outcome: outcome.into(),
        started_at: timestamp(&record.started_at),
        finished_at: record.finished_at.as_deref().and_then(timestamp),
        published: record.published,
        removed: record.removed,
        skipped: record.skipped,
        counts: Some(pb::RunCounts {
            written: counts.written,
            unchanged: counts.unchanged,
            filtered: counts.filtered,
            dead_lettered: counts.dead_lettered,
            canceled: counts.canceled,
            stale: counts.stale,
            leavers: counts.leavers,
        }),
        pending: record.expected().saturating_sub(counts.total()),
        leavers_with_assets: record.leavers_with_assets,
        counts_final: record.counts.is_some() && checked,
        finalize: Some(finalize),
        error: record.error.clone().unwrap_or_default(),
        done: (finalized && checked)
            || canceled
            || matches!(record.state, RunState::Failed | RunState::QuotaExhausted),
        verification: record.verification.as_ref().map(verification),
        canceled_noticed_by: record
            .canceled
            .as_ref()
            .map(|c| c.noticed_by.clone())
            .unwrap_or_default(),
        canceled_at: record.canceled.as_ref().and_then(|c| timestamp(&c.at)),
        resend_all: record.resend_all,
        removals_held: record.removals_held,
        removals_skipped: record.removals_skipped.clone().unwrap_or_default(),
        moved_out: record.moved_out,
        warning: String::new(),
    }
}

/// The API view of a run's check against Oomnitza.
fn verification(v: &Verification) -> pb::RunVerification {
    let (state, by, at, reason) = match &v.state {
        VerifyState::Pending => (pb::VerificationState::Pending, "", None, ""),
        VerifyState::Claimed { by, at } => {
            (pb::VerificationState::Checking, by.as_str(), Some(at), "")
        }
        VerifyState::Verified { by, at } => {
            (pb::VerificationState::Verified, by.as_str(), Some(at), "")
        }
        VerifyState::Unverified { by, at, reason } => (
            pb::VerificationState::Unverified,
            by.as_str(),
            Some(at),
            reason.as_str(),
        ),
    };
    pb::RunVerification {
        state: state.into(),
        accepted: v.accepted,
        confirmed: v.confirmed,
        not_applied: v.not_applied,
        unverifiable_fields: v.unverifiable_fields.clone(),
        reason: reason.to_owned(),
        by: by.to_owned(),
        at: at.and_then(|at| timestamp(at)),
    }
}

/// An RFC 3339 time as a protobuf timestamp (`None` if it does not parse).
pub(crate) fn timestamp(text: &str) -> Option<peoplesync_proto::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| peoplesync_bus::codec::timestamp(t.with_timezone(&chrono::Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_what_the_loaders_have_not_accounted_for() {
        let mut record = RunRecord::start("acme", "r1", true, "grpc");
        record.published = 10;
        record.removed = 2;
        let live = OutcomeCounts {
            written: 5,
            dead_lettered: 1,
            ..Default::default()
        };
        let run = view(&record, live);
        assert_eq!(run.pending, 6);
        assert_eq!(run.outcome(), pb::RunOutcome::Running);
        assert!(!run.done && !run.counts_final);
    }

    #[test]
    fn a_run_that_could_not_compute_its_removals_says_why() {
        let mut record = RunRecord::start("acme", "r2", true, "schedule");
        record.state = RunState::Completed;
        assert_eq!(view(&record, OutcomeCounts::default()).removals_skipped, "");
        let reason = "the seen list of the baseline run r1 is not in ascending byte order \
                      (a2G7e000000008sEAA came before a2G7E000000008tUAA), so this run's list \
                      cannot be compared with it";
        record.removals_skipped = Some(reason.to_owned());
        let run = view(&record, OutcomeCounts::default());
        assert_eq!(run.removals_skipped, reason);
        assert_eq!(run.removed, 0);
    }

    #[test]
    fn a_run_shows_the_workers_who_moved_out_of_its_filter() {
        let mut record = RunRecord::start("acme", "r3", true, "schedule");
        record.moved_out = 4;
        assert_eq!(view(&record, OutcomeCounts::default()).moved_out, 4);
    }

    /// Checks that `run` gets no warning before a minute without change, then `warning` from
    /// the first minute on, changing only with each further whole minute.
    fn called_out_once_a_minute(run: &pb::Run, warning: &str) {
        let secs = Duration::from_secs;
        assert_eq!(no_progress(run, secs(59)), "");
        assert_eq!(no_progress(run, secs(60)), warning);
        assert_eq!(no_progress(run, secs(119)), warning);
        assert_eq!(
            no_progress(run, secs(125)),
            warning.replacen("60 s", "120 s", 1)
        );
    }

    #[test]
    fn a_running_run_unchanged_for_a_minute_is_called_out_once_a_minute() {
        let running = view(
            &RunRecord::start("acme", "r1", true, "grpc"),
            OutcomeCounts::default(),
        );
        called_out_once_a_minute(
            &running,
            "no progress for 60 s; is an extractor running? see syncctl status",
        );

        let secs = Duration::from_secs;
        let mut completed = RunRecord::start("acme", "r1", true, "grpc");
        completed.state = RunState::Completed;
        let loaded = view(&completed, OutcomeCounts::default());
        assert_eq!(loaded.pending, 0);
        called_out_once_a_minute(
            &loaded,
            "no progress for 60 s; the run's portion is not finalized yet: are loaders running, \
             and does Oomnitza accept the finalize? see syncctl status",
        );
        completed.finalize = FinalizeState::Finalized {
            by: "loader-1".into(),
            at: "2026-12-07T00:00:00Z".into(),
        };
        completed.verification = Some(Verification::pending(0));
        let checking = view(&completed, OutcomeCounts::default());
        assert!(!checking.done);
        assert_eq!(
            no_progress(&checking, secs(600)),
            "",
            "verification has its own timeout"
        );
    }

    #[test]
    fn a_loading_run_with_events_pending_unchanged_for_a_minute_asks_for_loaders_once_a_minute() {
        let mut record = RunRecord::start("acme", "r1", true, "grpc");
        record.state = RunState::Completed;
        record.published = 10;
        let live = OutcomeCounts {
            written: 4,
            ..Default::default()
        };
        let loading = view(&record, live);
        assert_eq!(loading.outcome(), pb::RunOutcome::Loading);
        assert_eq!((loading.pending, loading.done), (6, false));
        called_out_once_a_minute(
            &loading,
            "no progress for 60 s; are loaders running, and taking records? see syncctl status",
        );

        // A run that is done says nothing, whatever is left pending.
        let secs = Duration::from_secs;
        for state in [RunState::Failed, RunState::QuotaExhausted] {
            record.state = state;
            let ended = view(&record, live);
            assert!(ended.done && ended.pending > 0, "{state:?}");
            assert_eq!(no_progress(&ended, secs(600)), "", "{state:?}");
        }
    }

    #[test]
    fn a_finalized_run_shows_its_kept_counts_and_whether_letters_were_left() {
        let mut record = RunRecord::start("acme", "r1", true, "grpc");
        record.state = RunState::Completed;
        record.published = 3;
        record.finalize = FinalizeState::Finalized {
            by: "loader-1".into(),
            at: "2025-05-01T10:00:00Z".into(),
        };
        record.counts = Some(OutcomeCounts {
            written: 2,
            dead_lettered: 1,
            ..Default::default()
        });
        let run = view(&record, OutcomeCounts::default());
        assert_eq!(run.pending, 0);
        assert!(run.done && run.counts_final);
        assert_eq!(run.outcome(), pb::RunOutcome::SucceededWithDeadLetters);
        assert_eq!(run.finalize.unwrap().by, "loader-1");
        record.state = RunState::Failed;
        assert_eq!(
            view(&record, OutcomeCounts::default()).outcome(),
            pb::RunOutcome::Failed
        );
    }
}
