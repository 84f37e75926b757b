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

use async_nats::jetstream;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::consume::Snapshot;
use crate::{BusError, Publisher, names};

/// What became of one worker event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to Oomnitza and accepted.
    Written,
    /// Identical to what was last written; not sent.
    Unchanged,
    /// Excluded by the integration's filter.
    Filtered,
    /// Could not be loaded; kept in the DLQ with the reason.
    DeadLettered,
    /// Its portion was canceled in Oomnitza; not sent.
    Canceled,
    /// Older than the run last applied for the same worker; not sent.
    Stale,
    /// A leaver, handled by the integration's leaver policy (see `crate::leavers`).
    Leaver,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 7] = [
        Outcome::Written,
        Outcome::Unchanged,
        Outcome::Filtered,
        Outcome::DeadLettered,
        Outcome::Canceled,
        Outcome::Stale,
        Outcome::Leaver,
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
            Outcome::Leaver => "leaver",
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
    /// Leavers handled.
    #[serde(default)]
    pub leavers: u64,
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
            + self.leavers
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
            Outcome::Leaver => &mut self.leavers,
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
/// Payload bytes per outcome message at most (NATS's default payload limit is 1 MiB).
const BYTES_PER_MESSAGE: usize = 512 * 1024;
/// A written record larger than this is recorded without its JSON: its check can then only
/// confirm that the user exists.
pub const MAX_RECORDED_RECORD: usize = 128 * 1024;

/// One recorded event: its dedup id, its worker, and for a written event `applied key \t
/// record JSON`.
#[derive(Debug, Clone)]
struct Recorded {
    msg_id: String,
    worker_id: String,
    detail: Option<String>,
}

impl Recorded {
    fn line_len(&self) -> usize {
        self.msg_id.len()
            + self.worker_id.len()
            + 2
            + self.detail.as_ref().map_or(0, |d| d.len() + 1)
    }
}

/// A written event of a run, as recorded: what the check of what Oomnitza applied reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenEvent {
    /// The event's dedup id.
    pub msg_id: String,
    /// The Sage People worker.
    pub worker_id: String,
    /// Its key in the applied-hash bucket (empty when the record had no sync value).
    pub applied_key: String,
    /// The record as sent (empty when it was too large to record).
    pub record_json: String,
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
    pub(crate) fn new(js: jetstream::Context, window: usize) -> OutcomeRecorder {
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
        self.push(integration, run_id, outcome, msg_id, worker_id, None);
        Ok(())
    }

    /// Queues a written event with what [`WrittenEvents`] gives back: its applied-hash
    /// key (empty for none) and the record as sent (dropped beyond [`MAX_RECORDED_RECORD`]).
    pub fn record_written(
        &mut self,
        integration: &str,
        run_id: &str,
        msg_id: &str,
        worker_id: &str,
        applied_key: &str,
        record_json: &str,
    ) {
        let json = if record_json.len() > MAX_RECORDED_RECORD {
            ""
        } else {
            record_json
        };
        let detail = [applied_key, "\t", json].concat();
        self.push(
            integration,
            run_id,
            Outcome::Written,
            msg_id,
            worker_id,
            Some(detail),
        );
    }

    fn push(
        &mut self,
        integration: &str,
        run_id: &str,
        outcome: Outcome,
        msg_id: &str,
        worker_id: &str,
        detail: Option<String>,
    ) {
        if !self.seen.insert(msg_id.to_owned()) {
            return;
        }
        self.pending
            .entry((integration.to_owned(), run_id.to_owned(), outcome))
            .or_default()
            .push(Recorded {
                msg_id: msg_id.to_owned(),
                worker_id: worker_id.to_owned(),
                detail,
            });
    }

    /// Publishes what was queued and waits until it is stored.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        for ((integration, run_id, outcome), events) in std::mem::take(&mut self.pending) {
            for chunk in chunks(&events) {
                let subject =
                    names::outcome_subject(&integration, &run_id, outcome.as_str(), chunk.len());
                let mut payload =
                    Vec::with_capacity(chunk.iter().map(Recorded::line_len).sum::<usize>());
                for event in chunk {
                    payload.extend_from_slice(event.msg_id.as_bytes());
                    payload.push(b'\t');
                    payload.extend_from_slice(event.worker_id.as_bytes());
                    if let Some(detail) = &event.detail {
                        payload.push(b'\t');
                        payload.extend_from_slice(detail.as_bytes());
                    }
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

/// `events` cut into runs of at most [`EVENTS_PER_MESSAGE`] events and [`BYTES_PER_MESSAGE`]
/// bytes (a single larger event stands alone).
fn chunks(events: &[Recorded]) -> Vec<&[Recorded]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, event) in events.iter().enumerate() {
        let len = event.line_len();
        if i > start && (i - start >= EVENTS_PER_MESSAGE || bytes + len > BYTES_PER_MESSAGE) {
            out.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// The outcome and event count a subject of the outcomes stream stands for
/// (`…<run>.<outcome>.<events>`, see [`names::outcome_subject`]).
fn parse_subject(subject: &str) -> Option<(Outcome, u64)> {
    let mut tokens = subject.rsplit('.');
    let events = tokens.next()?.parse::<u64>().ok()?;
    Some((Outcome::from_name(tokens.next()?)?, events))
}

/// Live counts of one run's outcomes, from the stream's per-subject totals. An event recorded
/// twice (redelivered after its outcome was stored) counts twice here; see [`exact_count`].
pub async fn count(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
) -> Result<OutcomeCounts, BusError> {
    // A handle without the stream-info request `get_stream` makes: every replica counts its
    // busy runs several times a second, and the request below is all the count needs.
    let stream = bus.stream(names::OUTCOMES_STREAM).await?;
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
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
) -> Result<OutcomeCounts, BusError> {
    let js = &bus.js;
    let mut counts = OutcomeCounts::default();
    let mut reader = FirstOutcomes::open(js, integration, run_id).await?;
    while let Some(events) = reader.next_message().await? {
        for (outcome, _) in events {
            counts.add(outcome, 1);
        }
    }
    Ok(counts)
}

/// The events of a run whose first recorded outcome is `written`, in groups, in the order they
/// were recorded (see [`WrittenEvents::next_group`]).
pub struct WrittenEvents {
    reader: FirstOutcomes,
    group: usize,
    batch: Vec<WrittenEvent>,
}

impl std::fmt::Debug for WrittenEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrittenEvents")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl WrittenEvents {
    /// Starts reading the written events of a run, `group` at a time.
    pub async fn open(
        bus: &crate::Bus,
        integration: &str,
        run_id: &str,
        group: usize,
    ) -> Result<WrittenEvents, BusError> {
        let js = &bus.js;
        Ok(WrittenEvents {
            reader: FirstOutcomes::open(js, integration, run_id).await?,
            group: group.max(1),
            batch: Vec::new(),
        })
    }

    /// The next group of at most `group` written events; `None` once all are read. An event
    /// recorded by a loader that did not keep what it sent comes without a key and record.
    pub async fn next_group(&mut self) -> Result<Option<Vec<WrittenEvent>>, BusError> {
        while self.batch.len() < self.group {
            let Some(events) = self.reader.next_message().await? else {
                break;
            };
            self.batch.extend(
                events
                    .into_iter()
                    .filter(|(outcome, _)| *outcome == Outcome::Written)
                    .map(|(_, line)| written_event(&line)),
            );
        }
        if self.batch.is_empty() {
            return Ok(None);
        }
        let rest = self.batch.split_off(self.batch.len().min(self.group));
        Ok(Some(std::mem::replace(&mut self.batch, rest)))
    }
}

/// A written event from its line (`msg id \t worker id [\t applied key \t record]`).
fn written_event(line: &[u8]) -> WrittenEvent {
    let text = String::from_utf8_lossy(line);
    let mut fields = text.splitn(4, '\t');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    WrittenEvent {
        msg_id: next(),
        worker_id: next(),
        applied_key: next(),
        record_json: next(),
    }
}

/// Reads every outcome message of a run and gives, message by message, the outcome and line of
/// each event the first time its id is seen.
struct FirstOutcomes {
    read: Snapshot,
    seen: HashSet<u64>,
    started: tokio::time::Instant,
}

impl FirstOutcomes {
    async fn open(
        js: &jetstream::Context,
        integration: &str,
        run_id: &str,
    ) -> Result<FirstOutcomes, BusError> {
        let what = format!("reading the outcomes of run {run_id} of {integration}");
        let filter = names::outcomes_filter(integration, run_id);
        Ok(FirstOutcomes {
            read: Snapshot::open(js, names::OUTCOMES_STREAM, filter, what).await?,
            seen: HashSet::new(),
            started: tokio::time::Instant::now(),
        })
    }

    /// The first-seen events of the next outcome message; `None` after the last.
    async fn next_message(&mut self) -> Result<Option<Vec<(Outcome, Vec<u8>)>>, BusError> {
        loop {
            if self.read.is_done() {
                return Ok(None);
            }
            // The outcomes can vanish while they are read (another replica finalized the run
            // and purged them, or they aged out): an ordered consumer would then wait forever.
            if self.started.elapsed() > READ_LIMIT {
                return Err(BusError::request(self.read.what(), "reading took too long"));
            }
            let missing = "no message within 5 s; the outcomes changed while they were read";
            let Some(message) = self.read.next(READ_IDLE, missing).await? else {
                return Ok(None);
            };
            let Some((outcome, _)) = parse_subject(message.subject.as_str()) else {
                continue;
            };
            // One line per event: its id, a tab, the worker id and its detail.
            let mut events = Vec::new();
            for line in message
                .payload
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
            {
                let id = line.split(|b| *b == b'\t').next().unwrap_or(line);
                if self.seen.insert(hash(id)) {
                    events.push((outcome, line.to_vec()));
                }
            }
            return Ok(Some(events));
        }
    }
}

fn hash(id: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Removes one run's outcome messages once its counts are kept elsewhere.
pub async fn purge(bus: &crate::Bus, integration: &str, run_id: &str) -> Result<(), BusError> {
    let stream = bus.stream(names::OUTCOMES_STREAM).await?;
    stream
        .purge()
        .filter(names::outcomes_filter(integration, run_id))
        .await
        .map_err(|e| BusError::request(format!("purging outcomes of run {run_id}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
