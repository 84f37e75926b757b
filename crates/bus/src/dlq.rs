//! Dead letters: worker events that cannot be loaded, kept in the DLQ stream with the reason
//! in headers so an operator can see why, fix the cause, and replay them.
//!
//! A worker refused for the same reason run after run is one letter, not one per run: each
//! letter has its own subject (`peoplesync.<integration>.dlq.<key>`, the key hashed from
//! worker, stage and reason), and a new run's letter replaces the previous one atomically
//! (a subject roll-up, guarded by the subject's last sequence) carrying the count of runs
//! it was seen in and the first run and time. Several loader replicas and crashes are safe:
//! the guard makes concurrent writers re-read, and a run already counted is not counted again.

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{DeleteMessageErrorKind, LastRawMessageErrorKind},
};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{lost_to_another_writer, race_pause};
use crate::{BusError, names};

/// Header: why the event was dead-lettered.
pub const REASON: &str = "Peoplesync-Reason";
/// Header: where it failed: `pipeline` (filter/map), `oomnitza` (refused), `delivery` (retries
/// exhausted), [`STAGE_VERIFICATION`] (accepted but not applied), [`STAGE_EXTRACTOR`] (not
/// published).
pub const STAGE: &str = "Peoplesync-Stage";
/// The stage of a record Oomnitza accepted but did not apply, found by the check of a
/// finalized run; its payload is the record as sent, not the worker event.
pub const STAGE_VERIFICATION: &str = "verification";
/// The stage of a worker the extractor did not publish (its event is larger than NATS accepts,
/// or it shares a sync key with another worker); the payload is the start of the Sage People
/// record, nothing to replay.
pub const STAGE_EXTRACTOR: &str = "extractor";
/// Header: the HTTP status Oomnitza answered, when it did.
pub const HTTP_STATUS: &str = "Peoplesync-Http-Status";
/// Header: the start of Oomnitza's response body, on one line.
pub const BODY_EXCERPT: &str = "Peoplesync-Body-Excerpt";
/// Header: deliveries of the event before it was given up on.
pub const ATTEMPTS: &str = "Peoplesync-Attempts";
/// Header: the subject the event was published to.
pub const ORIGINAL_SUBJECT: &str = "Peoplesync-Original-Subject";
/// Header: the run the event belongs to.
pub const RUN_ID: &str = "Peoplesync-Run-Id";
/// Header: the Sage People worker id.
pub const WORKER_ID: &str = "Peoplesync-Worker-Id";
/// Header: the integration.
pub const INTEGRATION: &str = "Peoplesync-Integration";
/// Header: in how many runs the worker was refused for this reason (absent means 1).
pub const RUNS_SEEN: &str = "Peoplesync-Runs-Seen";
/// Header: the first run the worker was refused in for this reason (absent: [`RUN_ID`]).
pub const FIRST_RUN_ID: &str = "Peoplesync-First-Run-Id";
/// Header: when the worker was first refused for this reason (absent: the letter's time).
pub const FIRST_SEEN: &str = "Peoplesync-First-Seen";
/// Header: the latest runs counted, oldest first, separated by spaces, so a redelivered event
/// of a run already counted is not counted again.
pub const RECENT_RUNS: &str = "Peoplesync-Recent-Runs";

/// How many of the latest runs a letter remembers ([`RECENT_RUNS`]). An event is redelivered
/// within its own run's lifetime, long before this many later runs have refused the worker.
pub const RECENT_RUNS_KEPT: usize = 16;
/// Attempts to record one letter when other writers keep changing it between read and write
/// (each waits a random share of a growing delay, so racing replicas fall out of step).
const RECORD_ATTEMPTS: u32 = 32;

/// Why and where an event was given up on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The integration.
    pub integration: String,
    /// The run the event belongs to.
    pub run_id: String,
    /// The Sage People worker id.
    pub worker_id: String,
    /// Why it cannot be loaded, for an operator.
    pub reason: String,
    /// `pipeline`, `oomnitza` or `delivery`.
    pub stage: String,
    /// Oomnitza's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// The start of Oomnitza's answer.
    pub body_excerpt: Option<String>,
    /// Deliveries so far.
    pub attempts: u64,
    /// The subject the event came from.
    pub original_subject: String,
}

/// A dead letter as stored, for listing and replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRecord {
    /// Sequence in the DLQ stream (the handle for replay and purge).
    pub sequence: u64,
    /// What was recorded, for the latest run it was seen in.
    pub letter: DeadLetter,
    /// When it was last dead-lettered (the stream's time of the message).
    pub at: String,
    /// Across how many runs the worker has been refused for this reason.
    pub seen: Seen,
    /// The original event payload (of the latest run).
    #[serde(skip)]
    pub payload: Bytes,
}

impl DeadLetterRecord {
    fn from_raw(raw: jetstream::message::StreamMessage) -> DeadLetterRecord {
        let letter = DeadLetter::from_headers(&raw.headers);
        let at = raw.time.to_string();
        let seen = Seen::from_headers(&raw.headers, &letter.run_id, &at);
        DeadLetterRecord {
            sequence: raw.sequence,
            letter,
            at,
            seen,
            payload: raw.payload,
        }
    }
}

/// The runs a letter has been seen in. A letter without the counting headers reads as seen
/// once, in its own run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// How many runs refused the worker for this reason (at least 1).
    pub runs: u64,
    /// The first of those runs.
    pub first_run_id: String,
    /// When the first refusal was dead-lettered (the stream's time of that message).
    pub first_at: String,
    /// The latest runs counted, oldest first, at most [`RECENT_RUNS_KEPT`].
    pub recent_runs: Vec<String>,
}

impl Seen {
    /// Reads the counts of a stored letter of run `run_id` stored at `at`.
    pub fn from_headers(headers: &HeaderMap, run_id: &str, at: &str) -> Seen {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut recent_runs: Vec<String> = get(RECENT_RUNS)
            .map(|v| v.split(' ').map(str::to_owned).collect())
            .unwrap_or_default();
        if recent_runs.is_empty() && !run_id.is_empty() {
            recent_runs.push(run_id.to_owned());
        }
        Seen {
            runs: get(RUNS_SEEN)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1),
            first_run_id: get(FIRST_RUN_ID).unwrap_or_else(|| run_id.to_owned()),
            first_at: get(FIRST_SEEN).unwrap_or_else(|| at.to_owned()),
            recent_runs,
        }
    }

    /// Whether run `run_id` has already been counted.
    pub fn includes(&self, run_id: &str) -> bool {
        self.recent_runs.iter().any(|r| r == run_id)
    }

    /// The counts after one more run, `run_id`, refused the worker.
    fn next(&self, run_id: &str) -> Seen {
        let mut recent_runs = self.recent_runs.clone();
        recent_runs.push(run_id.to_owned());
        let excess = recent_runs.len().saturating_sub(RECENT_RUNS_KEPT);
        recent_runs.drain(..excess);
        Seen {
            runs: self.runs.saturating_add(1),
            first_run_id: self.first_run_id.clone(),
            first_at: self.first_at.clone(),
            recent_runs,
        }
    }

    fn write(&self, headers: &mut HeaderMap) {
        headers.insert(RUNS_SEEN, self.runs.to_string().as_str());
        headers.insert(FIRST_RUN_ID, one_line(&self.first_run_id, 200).as_str());
        if !self.first_at.is_empty() {
            headers.insert(FIRST_SEEN, one_line(&self.first_at, 100).as_str());
        }
        // Run ids are UUIDs or `dlq-…`/`unknown`; spaces would split them, so they go too.
        let recent: Vec<String> = self
            .recent_runs
            .iter()
            .map(|r| one_line(r, 200).replace(' ', "_"))
            .collect();
        headers.insert(RECENT_RUNS, recent.join(" ").as_str());
    }
}

/// What [`record`] did with a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored: a new letter, or the letter of an earlier run replaced by one counting this run.
    Stored {
        /// Its sequence in the DLQ stream.
        sequence: u64,
        /// Runs it has now been seen in (1 for a new letter).
        runs: u64,
    },
    /// This run was already counted on the letter (the event was redelivered): nothing written.
    AlreadyCounted {
        /// The letter's sequence.
        sequence: u64,
        /// Runs it has been seen in.
        runs: u64,
    },
    /// NATS dropped it as a repeat of this event's earlier letter (same run and worker, within
    /// the stream's duplicate window), possibly filed under another reason.
    Duplicate {
        /// The sequence of the earlier letter.
        sequence: u64,
    },
}

impl DeadLetter {
    /// The headers carrying this dead letter.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(INTEGRATION, one_line(&self.integration, 200).as_str());
        headers.insert(RUN_ID, one_line(&self.run_id, 200).as_str());
        headers.insert(WORKER_ID, one_line(&self.worker_id, 200).as_str());
        headers.insert(REASON, one_line(&self.reason, 1000).as_str());
        headers.insert(STAGE, one_line(&self.stage, 50).as_str());
        headers.insert(ATTEMPTS, self.attempts.to_string().as_str());
        headers.insert(
            ORIGINAL_SUBJECT,
            one_line(&self.original_subject, 200).as_str(),
        );
        if let Some(status) = self.http_status {
            headers.insert(HTTP_STATUS, status.to_string().as_str());
        }
        if let Some(body) = &self.body_excerpt {
            headers.insert(BODY_EXCERPT, one_line(body, 500).as_str());
        }
        headers
    }

    /// Reads a dead letter back from its headers.
    pub fn from_headers(headers: &HeaderMap) -> DeadLetter {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        DeadLetter {
            integration: get(INTEGRATION),
            run_id: get(RUN_ID),
            worker_id: get(WORKER_ID),
            reason: get(REASON),
            stage: get(STAGE),
            http_status: get(HTTP_STATUS).parse().ok(),
            body_excerpt: headers.get(BODY_EXCERPT).map(|v| v.as_str().to_owned()),
            attempts: get(ATTEMPTS).parse().unwrap_or(0),
            original_subject: get(ORIGINAL_SUBJECT),
        }
    }
}

/// The key of `letter` across runs: the same worker refused at the same stage for the same
/// reason has the same key in every run. A hash, so any worker id or reason text makes a
/// valid subject token.
pub fn letter_key(letter: &DeadLetter) -> String {
    let mut hash = Sha256::new();
    for part in [&letter.worker_id, &letter.stage, &letter.reason] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// Stores a dead letter, one per worker and reason across runs: the first refusal creates the
/// letter; a later run's refusal replaces it with one counting that run too (its payload and
/// headers are the latest run's); a redelivered event of a run already counted changes
/// nothing. The dedup id is the event's, as before, so one event files at most one letter.
pub async fn record(
    bus: &crate::Bus,
    letter: &DeadLetter,
    payload: Bytes,
) -> Result<Recorded, BusError> {
    let js = &bus.js;
    let subject = names::dlq_letter_subject(&letter.integration, &letter_key(letter));
    let id = names::event_msg_id(&letter.run_id, &letter.worker_id);
    let stream = bus.stream(names::DLQ_STREAM).await?;
    let mut last_error = String::new();
    for attempt in 1..=RECORD_ATTEMPTS {
        let previous = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(raw) => Some(DeadLetterRecord::from_raw(raw)),
            Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => None,
            Err(err) => {
                return Err(BusError::request(
                    format!("reading the dead letter on {subject}"),
                    err,
                ));
            }
        };
        let (seen, expected) = match &previous {
            Some(p) if p.seen.includes(&letter.run_id) => {
                return Ok(Recorded::AlreadyCounted {
                    sequence: p.sequence,
                    runs: p.seen.runs,
                });
            }
            Some(p) => (p.seen.next(&letter.run_id), p.sequence),
            // The first time: first run and time are the letter's own.
            None => (
                Seen {
                    runs: 1,
                    first_run_id: letter.run_id.clone(),
                    first_at: String::new(),
                    recent_runs: vec![letter.run_id.clone()],
                },
                0,
            ),
        };
        let mut headers = letter.headers();
        seen.write(&mut headers);
        // Replace the previous letter of this subject in the same write.
        headers.insert(async_nats::header::NATS_ROLLUP, "sub");
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers)
            .message_id(&id)
            // 0: only if the subject has no letter; otherwise only if it is still the one read.
            .expected_last_subject_sequence(expected);
        let ack = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match ack {
            Ok(ack) if ack.duplicate => {
                return Ok(Recorded::Duplicate {
                    sequence: ack.sequence,
                });
            }
            Ok(ack) => {
                return Ok(Recorded::Stored {
                    sequence: ack.sequence,
                    runs: seen.runs,
                });
            }
            // Another replica wrote this letter since it was read, or the ack was lost: read
            // again and decide afresh (a letter stored by a lost ack is then already counted).
            Err(err)
                if lost_to_another_writer(&err)
                    || matches!(
                        err.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) =>
            {
                last_error = err.to_string();
                tokio::time::sleep(race_pause(attempt)).await;
            }
            Err(err) => {
                return Err(BusError::Publish {
                    subject,
                    id,
                    source: err.into(),
                });
            }
        }
    }
    Err(BusError::Publish {
        subject,
        id,
        source: format!(
            "the letter kept changing or the server kept failing over {RECORD_ATTEMPTS} attempts: {last_error}"
        )
        .into(),
    })
}

/// Reads the dead letter at `sequence`, or `None` if there is none (purged or never there).
pub async fn get(bus: &crate::Bus, sequence: u64) -> Result<Option<DeadLetterRecord>, BusError> {
    let stream = bus.stream(names::DLQ_STREAM).await?;
    match stream.get_raw_message(sequence).await {
        Ok(raw) => Ok(Some(DeadLetterRecord::from_raw(raw))),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(BusError::request(
            format!("reading dead letter {sequence}"),
            err,
        )),
    }
}

/// Sequence numbers currently held in the DLQ stream (first..=last, some may be deleted).
pub async fn sequence_range(bus: &crate::Bus) -> Result<(u64, u64, u64), BusError> {
    let js = &bus.js;
    let mut stream = js
        .get_stream(names::DLQ_STREAM)
        .await
        .map_err(|e| BusError::request("opening the DLQ stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| BusError::request("reading DLQ stream info", e))?;
    Ok((
        info.state.first_sequence,
        info.state.last_sequence,
        info.state.messages,
    ))
}

/// The first dead letter of `integration` at or after `sequence`, or `None` when there is none
/// (one request per letter: callers scanning the queue bound how many they read).
pub async fn next(
    bus: &crate::Bus,
    integration: &str,
    sequence: u64,
) -> Result<Option<DeadLetterRecord>, BusError> {
    let stream = bus.stream(names::DLQ_STREAM).await?;
    let subject = names::dlq_filter(integration);
    match stream
        .get_first_raw_message_by_subject(&subject, sequence.max(1))
        .await
    {
        Ok(raw) => Ok(Some(DeadLetterRecord::from_raw(raw))),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(BusError::request(
            format!("reading dead letters of {integration} from sequence {sequence}"),
            err,
        )),
    }
}

/// Deletes the dead letter at `sequence`; false when it was not there (already gone).
pub async fn delete(bus: &crate::Bus, sequence: u64) -> Result<bool, BusError> {
    let stream = bus.stream(names::DLQ_STREAM).await?;
    match stream.delete_message(sequence).await {
        Ok(deleted) => Ok(deleted),
        // The server answers "no message found" for a sequence already deleted or purged.
        Err(err)
            if matches!(err.kind(), DeleteMessageErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND) =>
        {
            Ok(false)
        }
        Err(err) => Err(BusError::request(
            format!("deleting dead letter {sequence}"),
            err,
        )),
    }
}

/// Collapses `text` to one header-safe line of at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Removes `integration`'s dead letters up to DLQ sequence `through` (every one when `None`),
/// and returns how many.
pub async fn purge_all_through(
    bus: &crate::Bus,
    integration: &str,
    through: Option<u64>,
) -> Result<u64, BusError> {
    let subject = names::dlq_filter(integration);
    let stream = bus.stream(names::DLQ_STREAM).await?;
    let purge = stream.purge().filter(&subject);
    let purged = match through {
        // `sequence` keeps that sequence and those after it.
        Some(through) => purge.sequence(through.saturating_add(1)).await,
        None => purge.await,
    }
    .map_err(|e| BusError::request(format!("purging {subject}"), e))?;
    Ok(purged.purged)
}

/// Publishes a dead-lettered worker event again, as worker `worker_id`'s event of run
/// `run_id`, and waits for NATS to store it. Returns `false` when NATS dropped it as a
/// duplicate of an event already published under that id.
pub async fn republish(
    bus: &crate::Bus,
    integration: &str,
    run_id: &str,
    worker_id: &str,
    payload: Bytes,
) -> Result<bool, BusError> {
    let id = names::event_msg_id(run_id, worker_id);
    let subject = names::workers_subject(integration);
    let message = PublishMessage::build().payload(payload).message_id(&id);
    let ack = bus
        .js
        .send_publish(subject.clone(), message)
        .await
        .map_err(|e| BusError::publish(&subject, &id, e))?
        .await
        // Sent, but not confirmed: it may be stored already.
        .map_err(|e| BusError::publish(&subject, &id, format!("not acknowledged: {e}")))?;
    Ok(!ack.duplicate)
}

#[cfg(test)]
mod tests;
