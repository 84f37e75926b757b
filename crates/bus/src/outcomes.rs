//! Per-event outcomes, the source of a run's counts. Each handled event publishes one outcome
//! message (subject `peoplesync.<integration>.outcomes.<run>.<outcome>`, dedup id = the event's)
//! before it is acked. A loader killed between the two leaves the event to be redelivered, and
//! its second outcome is dropped as a duplicate, so the counts stay exact under redelivery —
//! which a counter bumped before or after the ack cannot promise.

use async_nats::jetstream;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::{BusError, Publisher, names};

/// What became of one worker event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to Oomnitza and accepted.
    Written,
    /// Identical to what was last written; not sent.
    Unchanged,
    /// Excluded by the integration's filter (or a removal with no action).
    Filtered,
    /// Could not be loaded; kept in the DLQ with the reason.
    DeadLettered,
    /// Its portion was canceled in Oomnitza; not sent.
    Canceled,
    /// Older than the run last applied for the same worker; not sent.
    Stale,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 6] = [
        Outcome::Written,
        Outcome::Unchanged,
        Outcome::Filtered,
        Outcome::DeadLettered,
        Outcome::Canceled,
        Outcome::Stale,
    ];

    /// The outcome's name, as used in subjects, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Unchanged => "unchanged",
            Outcome::Filtered => "filtered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Canceled => "canceled",
            Outcome::Stale => "stale",
        }
    }

    fn from_str(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// Counts of outcomes in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Written to Oomnitza.
    pub written: u64,
    /// Unchanged since last written.
    pub unchanged: u64,
    /// Filtered out.
    pub filtered: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Not sent because the portion was canceled.
    pub canceled: u64,
    /// Skipped as stale.
    pub stale: u64,
}

impl OutcomeCounts {
    /// Events accounted for.
    pub fn total(&self) -> u64 {
        self.written
            + self.unchanged
            + self.filtered
            + self.dead_lettered
            + self.canceled
            + self.stale
    }

    /// Adds `n` to `outcome`'s count.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        let slot = match outcome {
            Outcome::Written => &mut self.written,
            Outcome::Unchanged => &mut self.unchanged,
            Outcome::Filtered => &mut self.filtered,
            Outcome::DeadLettered => &mut self.dead_lettered,
            Outcome::Canceled => &mut self.canceled,
            Outcome::Stale => &mut self.stale,
        };
        *slot += n;
    }
}

/// Records outcomes through a pipelined publisher; flush before acking the events.
pub struct OutcomeRecorder {
    publisher: Publisher,
}

impl std::fmt::Debug for OutcomeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeRecorder").finish_non_exhaustive()
    }
}

impl OutcomeRecorder {
    /// A recorder with up to `window` outcome publishes in flight.
    pub fn new(js: jetstream::Context, window: usize) -> OutcomeRecorder {
        OutcomeRecorder {
            publisher: Publisher::new(js, window),
        }
    }

    /// Queues the outcome of event `msg_id` (its `Nats-Msg-Id`) with the worker id as payload.
    pub async fn record(
        &mut self,
        integration: &str,
        run_id: &str,
        msg_id: &str,
        worker_id: &str,
        outcome: Outcome,
    ) -> Result<(), BusError> {
        self.publisher
            .publish(
                names::outcome_subject(integration, run_id, outcome.as_str()),
                msg_id.to_owned(),
                Bytes::copy_from_slice(worker_id.as_bytes()),
                None,
            )
            .await
    }

    /// Waits until every queued outcome is stored.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        self.publisher.flush().await
    }
}

/// Reads the counts of one run's outcomes from the stream's per-subject totals.
pub async fn count(
    js: &jetstream::Context,
    integration: &str,
    run_id: &str,
) -> Result<OutcomeCounts, BusError> {
    let stream = js
        .get_stream(names::OUTCOMES_STREAM)
        .await
        .map_err(|e| BusError::request("opening the outcomes stream", e))?;
    let filter = names::outcomes_filter(integration, run_id);
    let mut subjects = stream
        .info_with_subjects(&filter)
        .await
        .map_err(|e| BusError::request(format!("counting outcomes {filter}"), e))?;
    let mut counts = OutcomeCounts::default();
    while let Some((subject, n)) = subjects
        .try_next()
        .await
        .map_err(|e| BusError::request(format!("counting outcomes {filter}"), e))?
    {
        if let Some(outcome) = subject.rsplit('.').next().and_then(Outcome::from_str) {
            counts.add(outcome, u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(counts)
}

/// Removes one run's outcome messages once its counts are kept elsewhere.
pub async fn purge(
    js: &jetstream::Context,
    integration: &str,
    run_id: &str,
) -> Result<(), BusError> {
    let stream = js
        .get_stream(names::OUTCOMES_STREAM)
        .await
        .map_err(|e| BusError::request("opening the outcomes stream", e))?;
    stream
        .purge()
        .filter(names::outcomes_filter(integration, run_id))
        .await
        .map_err(|e| BusError::request(format!("purging outcomes of run {run_id}"), e))?;
    Ok(())
}
