//! Per-event outcomes, the source of a run's counts. Each settled batch publishes, before its
//! events are acked, one message per outcome it holds: subject
//! `peoplesync.<integration>.outcomes.<run>.<outcome>.<n>` with the `n` event ids (and worker
//! ids) as payload. The stream's per-subject totals give live counts in one request (the sum of
//! `n` × messages over a run's subjects). A loader killed between publishing and acking leaves
//! its events to be redelivered, and they are recorded again: so the live counts are an upper
//! bound, and [`exact_count`] — which reads the run's outcome messages and counts each event
//! once, by its first outcome — gives the counts a run is finalized with. One message per batch
//! and outcome, instead of one per event, takes a JetStream publish off every event.
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
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

    /// The outcome named `name` (see [`Outcome::as_str`]).
    pub fn from_name(name: &str) -> Option<Outcome> {
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

/// How long [`exact_count`] waits for the next outcome message before giving up.
const READ_IDLE: Duration = Duration::from_secs(5);
/// How long [`exact_count`] may take in all.
const READ_LIMIT: Duration = Duration::from_secs(300);

/// Events per outcome message at most (keeps a message far below NATS's payload limit).
const EVENTS_PER_MESSAGE: usize = 1_000;

/// One recorded event: its dedup id and its worker.
#[derive(Debug, Clone)]
struct Recorded {
    msg_id: String,
    worker_id: String,
}

/// Collects outcomes and publishes them, grouped per run and outcome, on [`flush`]; flush
/// before acking the events.
///
/// [`flush`]: OutcomeRecorder::flush
pub struct OutcomeRecorder {
    publisher: Publisher,
    pending: HashMap<(String, String, Outcome), Vec<Recorded>>,
    seen: HashSet<String>,
}

impl std::fmt::Debug for OutcomeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeRecorder")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl OutcomeRecorder {
    /// A recorder with up to `window` outcome messages in flight.
    pub fn new(js: jetstream::Context, window: usize) -> OutcomeRecorder {
        OutcomeRecorder {
            publisher: Publisher::new(js, window),
            pending: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    /// Queues the outcome of event `msg_id` (its `Nats-Msg-Id`) of `worker_id`. An event
    /// queued twice before a flush keeps its first outcome.
    pub async fn record(
        &mut self,
        integration: &str,
        run_id: &str,
        msg_id: &str,
        worker_id: &str,
        outcome: Outcome,
    ) -> Result<(), BusError> {
        if !self.seen.insert(msg_id.to_owned()) {
            return Ok(());
        }
        self.pending
            .entry((integration.to_owned(), run_id.to_owned(), outcome))
            .or_default()
            .push(Recorded {
                msg_id: msg_id.to_owned(),
                worker_id: worker_id.to_owned(),
            });
        Ok(())
    }

    /// Publishes what was queued and waits until it is stored.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        for ((integration, run_id, outcome), events) in std::mem::take(&mut self.pending) {
            for chunk in events.chunks(EVENTS_PER_MESSAGE) {
                let subject =
                    names::outcome_subject(&integration, &run_id, outcome.as_str(), chunk.len());
                let mut payload = Vec::with_capacity(chunk.len() * 80);
                for event in chunk {
                    payload.extend_from_slice(event.msg_id.as_bytes());
                    payload.push(b'\t');
                    payload.extend_from_slice(event.worker_id.as_bytes());
                    payload.push(b'\n');
                }
                let id = uuid::Uuid::now_v7().to_string();
                self.publisher
                    .publish(subject, id, Bytes::from(payload), None)
                    .await?;
            }
        }
        self.seen.clear();
        self.publisher.flush().await
    }
}

/// The outcome and event count a subject of the outcomes stream stands for. Subjects written
/// before outcomes were grouped (`...<run>.<outcome>`, one event each) still count.
fn parse_subject(subject: &str) -> Option<(Outcome, u64)> {
    let mut tokens = subject.rsplit('.');
    let last = tokens.next()?;
    match last.parse::<u64>() {
        Ok(n) => Some((Outcome::from_name(tokens.next()?)?, n)),
        Err(_) => Some((Outcome::from_name(last)?, 1)),
    }
}

/// Live counts of one run's outcomes, from the stream's per-subject totals. An event recorded
/// twice (redelivered after its outcome was stored) counts twice here; see [`exact_count`].
pub async fn count(
    js: &jetstream::Context,
    integration: &str,
    run_id: &str,
) -> Result<OutcomeCounts, BusError> {
    // A handle without the stream-info request `get_stream` makes: every replica counts its
    // busy runs several times a second, and the request below is all the count needs.
    let stream = js
        .get_stream_no_info(names::OUTCOMES_STREAM)
        .await
        .map_err(|e| BusError::request("opening the outcomes stream", e))?;
    let filter = names::outcomes_filter(integration, run_id);
    let mut subjects = stream
        .info_with_subjects(&filter)
        .await
        .map_err(|e| BusError::request(format!("counting outcomes {filter}"), e))?;
    let mut counts = OutcomeCounts::default();
    while let Some((subject, messages)) = subjects
        .try_next()
        .await
        .map_err(|e| BusError::request(format!("counting outcomes {filter}"), e))?
    {
        if let Some((outcome, n)) = parse_subject(&subject) {
            counts.add(outcome, n * u64::try_from(messages).unwrap_or(0));
        }
    }
    Ok(counts)
}

/// Exact counts of one run's outcomes: every outcome message of the run is read and each event
/// counted once, with the first outcome stored for it. Events are told apart by a 64-bit hash
/// of their id, so a run of a million events needs about 16 MiB here, once, at finalize.
pub async fn exact_count(
    js: &jetstream::Context,
    integration: &str,
    run_id: &str,
) -> Result<OutcomeCounts, BusError> {
    let what = || format!("reading the outcomes of run {run_id} of {integration}");
    let stream = js
        .get_stream_no_info(names::OUTCOMES_STREAM)
        .await
        .map_err(|e| BusError::request(what(), e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names::outcomes_filter(integration, run_id),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::request(what(), e))?;
    let mut remaining = consumer.cached_info().num_pending;
    let mut counts = OutcomeCounts::default();
    if remaining == 0 {
        return Ok(counts);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::request(what(), e))?;
    let mut seen: HashSet<u64> = HashSet::new();
    let started = tokio::time::Instant::now();
    while remaining > 0 {
        // The outcomes can vanish while they are read (another replica finalized the run and
        // purged them, or they aged out): an ordered consumer would then wait forever.
        if started.elapsed() > READ_LIMIT {
            return Err(BusError::request(what(), "reading took too long"));
        }
        let message = match tokio::time::timeout(READ_IDLE, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) => return Err(BusError::request(what(), err)),
            Ok(None) => return Err(BusError::request(what(), "the consumer ended early")),
            Err(_) => {
                return Err(BusError::request(
                    what(),
                    "no message within 5 s; the outcomes changed while they were read",
                ));
            }
        };
        remaining -= 1;
        if message.info().is_ok_and(|info| info.pending == 0) {
            remaining = 0;
        }
        let Some((outcome, n)) = parse_subject(message.subject.as_str()) else {
            continue;
        };
        let ids: Vec<&[u8]> = if n == 1 && !message.payload.contains(&b'\t') {
            // An ungrouped outcome: the event id is the message's dedup id.
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().as_bytes().to_vec());
            match id {
                Some(id) => {
                    if seen.insert(hash(&id)) {
                        counts.add(outcome, 1);
                    }
                    continue;
                }
                None => vec![message.payload.as_ref()],
            }
        } else {
            message
                .payload
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| line.split(|b| *b == b'\t').next().unwrap_or(line))
                .collect()
        };
        for id in ids {
            if seen.insert(hash(id)) {
                counts.add(outcome, 1);
            }
        }
    }
    Ok(counts)
}

fn hash(id: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Removes one run's outcome messages once its counts are kept elsewhere.
pub async fn purge(
    js: &jetstream::Context,
    integration: &str,
    run_id: &str,
) -> Result<(), BusError> {
    let stream = js
        .get_stream_no_info(names::OUTCOMES_STREAM)
        .await
        .map_err(|e| BusError::request("opening the outcomes stream", e))?;
    stream
        .purge()
        .filter(names::outcomes_filter(integration, run_id))
        .await
        .map_err(|e| BusError::request(format!("purging outcomes of run {run_id}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_outcome_and_count() {
        assert_eq!(
            parse_subject("peoplesync.acme.outcomes.r1.written.100"),
            Some((Outcome::Written, 100))
        );
        assert_eq!(
            parse_subject("peoplesync.acme.outcomes.r1.dead_lettered"),
            Some((Outcome::DeadLettered, 1)),
            "an ungrouped outcome from before grouping counts one event"
        );
        assert_eq!(parse_subject("peoplesync.acme.outcomes.r1.bogus.3"), None);
    }
}
