//! The run journal: the one writer of the extractor's run records (KV) and run events
//! (`RunEvent`s on the runs subject). Every kind of run — a full run, a one-worker sync, the
//! release of held removals — starts, reports progress, completes or fails through it, so the
//! record and the event always say the same thing.
//!
//! It takes a run id and [`Counts`], never a checkpoint: runs without one (a one-worker sync, an
//! approval) report what they did directly.

use peoplesync_bus::{Bus, BusError, RunRecord, RunState, Runs, codec, names};
use peoplesync_proto::v1::{RunEvent, RunEventKind};

/// What a run has done so far, as its record and its events report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Upsert events published.
    pub published: u64,
    /// Records skipped.
    pub skipped: u64,
    /// Removals published with the run.
    pub removed: u64,
    /// Removals held for approval.
    pub removals_held: u64,
    /// Pages read, and times the run was resumed: they keep the dedup ids of the events of a
    /// resumed run apart from those of its earlier attempts.
    pub pages: u64,
    /// See [`Counts::pages`].
    pub resumes: u64,
}

/// The run journal of one integration, for full runs or for the other kinds.
#[derive(Debug, Clone)]
pub struct Journal {
    bus: Bus,
    runs: Runs,
    integration: String,
    full: bool,
}

impl Journal {
    /// The journal of `integration`'s full runs (`full`) or of its other runs.
    pub fn new(bus: &Bus, integration: &str, full: bool) -> Journal {
        Journal {
            bus: bus.clone(),
            runs: bus.runs(),
            integration: integration.to_owned(),
            full,
        }
    }

    /// The integration.
    pub fn integration(&self) -> &str {
        &self.integration
    }

    /// The record of run `run_id`, if there is one.
    pub async fn record(&self, run_id: &str) -> Result<Option<RunRecord>, BusError> {
        Ok(self
            .runs
            .get(&self.integration, run_id)
            .await?
            .map(|(record, _)| record))
    }

    /// Records a new run `run_id` started by `trigger` (sending every record when
    /// `resend_all`), and says so on the runs subject.
    pub async fn start(
        &self,
        run_id: &str,
        trigger: &str,
        resend_all: bool,
    ) -> Result<(), BusError> {
        self.create(run_id, trigger, resend_all).await?;
        self.started(run_id).await
    }

    /// [`Journal::start`], or — when an earlier attempt created the record of `run_id` — marks
    /// that run running again ([`Journal::resume`]).
    pub async fn start_or_reuse(&self, run_id: &str, trigger: &str) -> Result<(), BusError> {
        if self.record(run_id).await?.is_none() {
            return self.start(run_id, trigger, false).await;
        }
        self.resume(run_id, Counts::default()).await
    }

    /// Creates the record of a new run.
    async fn create(&self, run_id: &str, trigger: &str, resend_all: bool) -> Result<(), BusError> {
        let record = RunRecord {
            resend_all,
            ..RunRecord::start(&self.integration, run_id, self.full, trigger)
        };
        self.runs.create(&record).await
    }

    /// Says on the runs subject that run `run_id` started.
    async fn started(&self, run_id: &str) -> Result<(), BusError> {
        self.event(run_id, RunEventKind::Started, Counts::default(), None)
            .await
    }

    /// Marks the interrupted run `run_id` as running again (its error cleared), and says on
    /// the runs subject that it started again after `counts` (whose pages and resumes keep this
    /// event apart from the earlier attempts'). An attempt that stopped between creating the
    /// record and announcing it is announced here.
    pub async fn resume(&self, run_id: &str, counts: Counts) -> Result<(), BusError> {
        self.runs
            .update(&self.integration, run_id, |r| {
                r.state = RunState::Running;
                r.error = None;
                r.finished_at = None;
                true
            })
            .await?;
        self.event(run_id, RunEventKind::Started, counts, None)
            .await
    }

    /// Brings the counts in the record of `run_id` up to `counts` (published and skipped),
    /// while the run is going: a progress note that lands after the run ended (a page's
    /// bookkeeping left behind when the run stopped) must not rewrite its final counts.
    pub async fn progress(&self, run_id: &str, counts: Counts) -> Result<(), BusError> {
        self.runs
            .update(&self.integration, run_id, |r| {
                if r.state != RunState::Running {
                    return false;
                }
                r.published = counts.published;
                r.skipped = counts.skipped;
                true
            })
            .await?;
        Ok(())
    }

    /// Records run `run_id` as completed with `counts`, and says so on the runs subject.
    /// `removals_skipped` is why a full run could not compute its removals, if it could not.
    pub async fn complete(
        &self,
        run_id: &str,
        counts: Counts,
        removals_skipped: Option<&str>,
    ) -> Result<(), BusError> {
        let now = chrono::Utc::now().to_rfc3339();
        self.runs
            .update(&self.integration, run_id, |r| {
                r.state = RunState::Completed;
                r.published = counts.published;
                r.skipped = counts.skipped;
                r.removed = counts.removed;
                r.removals_held = counts.removals_held;
                r.removals_skipped = removals_skipped.map(str::to_owned);
                r.error = None;
                r.finished_at = Some(now.clone());
                true
            })
            .await?;
        self.event(run_id, RunEventKind::Completed, counts, None)
            .await
    }

    /// Records run `run_id` as stopped in `state` with `message` after `counts`, and says so on
    /// the runs subject.
    pub async fn fail(
        &self,
        run_id: &str,
        state: RunState,
        counts: Counts,
        message: &str,
    ) -> Result<(), BusError> {
        let now = chrono::Utc::now().to_rfc3339();
        self.runs
            .update(&self.integration, run_id, |r| {
                r.state = state;
                r.published = counts.published;
                r.skipped = counts.skipped;
                r.error = Some(message.to_owned());
                r.finished_at = Some(now.clone());
                true
            })
            .await?;
        self.event(run_id, RunEventKind::Failed, counts, Some(message))
            .await
    }

    /// Records how many workers run `run_id` found no longer listed but still employed (moved
    /// out of the `source_filter`): set, not added, so a settle done again counts them once.
    pub async fn moved_out(&self, run_id: &str, workers: u64) -> Result<(), BusError> {
        self.runs
            .update(&self.integration, run_id, |r| {
                let changed = r.moved_out != workers;
                r.moved_out = workers;
                changed
            })
            .await?;
        Ok(())
    }

    /// Records that run `run_id` holds no removals any more: another run released them, held
    /// them again in its place, or dropped them.
    pub async fn removals_released(&self, run_id: &str) -> Result<(), BusError> {
        self.runs
            .update(&self.integration, run_id, |r| {
                let held = r.removals_held > 0;
                r.removals_held = 0;
                held
            })
            .await?;
        Ok(())
    }

    /// Publishes a `RunEvent` of `kind` for run `run_id` and waits for its ack.
    async fn event(
        &self,
        run_id: &str,
        kind: RunEventKind,
        counts: Counts,
        error: Option<&str>,
    ) -> Result<(), BusError> {
        let integration = self.integration.as_str();
        let event = RunEvent {
            integration_id: integration.to_owned(),
            run_id: run_id.to_owned(),
            kind: kind.into(),
            at: Some(codec::now()),
            published: counts.published,
            removed: counts.removed,
            skipped: counts.skipped,
            error: error.unwrap_or_default().to_owned(),
            full: self.full,
        };
        let suffix = match kind {
            RunEventKind::Started => "started",
            RunEventKind::Completed => "completed",
            _ => "failed",
        };
        let mut publisher = self.bus.publisher(1);
        publisher
            .publish(
                names::runs_subject(integration),
                format!("{run_id}.{suffix}.{}.{}", counts.pages, counts.resumes),
                codec::encode_run_event(&event),
                None,
            )
            .await?;
        publisher.flush().await
    }
}
