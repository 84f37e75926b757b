//! Per event: decode, filter, map and validate — deciding, before any I/O, whether the event
//! becomes a record to send or is already done (filtered, or dead-lettered because it cannot
//! be built). Events that cannot even be decoded are dead-lettered too: nothing is dropped
//! without a trace.

use std::sync::Arc;

use async_nats::Subject;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use peoplesync_bus::{DeadLetter, Outcome, codec, names};
use peoplesync_core::{Evaluation, Integration, RecordInput, Tracking};
use peoplesync_proto::v1::{WorkerEvent, WorkerEventKind};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::leavers::LeaverTask;
use crate::progress::Tracked;

/// Which batch an event belongs to: its integration, its run (the portion) and the config
/// revision it was mapped with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// The integration.
    pub integration: String,
    /// The run, also the Oomnitza portion.
    pub run_id: String,
    /// The config revision used to map it.
    pub revision: u64,
}

/// A mapped record ready to send, reduced to what delivery needs. It is serialised, hashed
/// and keyed as soon as it is mapped, while the map is still in cache, and then kept as one
/// buffer: an event waits in the pipeline for a request slot for a while, and a held map of
/// a few dozen small allocations costs more to keep, send and drop than its JSON text. The key
/// and hash move out into the batch's change-detection fingerprints when it is delivered.
#[derive(Debug)]
pub struct Outgoing {
    /// The record as sent, in the bulk request's `records`.
    pub json: Box<RawValue>,
    /// Its key in the applied-record store (see [`peoplesync_bus::applied::key`]); `None` when the record has
    /// no value for its first sync field, so it cannot be tracked.
    pub applied_key: Option<String>,
    /// `peoplesync_core::record_hash` of the record, for change detection.
    pub hash: String,
}

impl Outgoing {
    /// Prepares `record` of `integration`, or says why it cannot be sent.
    pub fn new(
        integration_id: &str,
        integration: &Integration,
        record: &serde_json::Map<String, Value>,
    ) -> Result<Outgoing, String> {
        let (json, hash) = peoplesync_core::record_json(record)
            .map_err(|e| format!("the mapped record cannot be written as JSON: {e}"))?;
        let applied_key = integration
            .sync_field()
            .first()
            .and_then(|field| record.get(field))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(|v| peoplesync_bus::applied::key(integration_id, v));
        Ok(Outgoing {
            json,
            applied_key,
            hash,
        })
    }
}

/// What the pipeline decided for one event.
#[derive(Debug)]
pub enum Disposition {
    /// Send this record to Oomnitza.
    Send(Outgoing),
    /// Nothing to send; record this outcome (and dead letter, if any).
    Done(Outcome, Option<Box<DeadLetter>>),
    /// The mapping refused the record (a required field is empty, a template failed): it is
    /// reported to Oomnitza as failed (bulk `error`, as Oomnitza's own connector does), so it
    /// shows in the run's log there, and dead-lettered.
    Refused(Box<DeadLetter>),
    /// A leaver: handled by the integration's leaver policy ([`crate::leavers`]).
    Leaver(Box<LeaverTask>),
}

/// What settling an event needs of the JetStream message it came in: where to ack it, and
/// its subject and payload for a dead letter or a requeued copy. The message itself carries
/// its JetStream context and is several times larger, and items move from stage to stage.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's subject in the WORKERS stream.
    pub subject: Subject,
    /// The ack subject (`None` only for a message that did not come from a consumer).
    pub reply: Option<Subject>,
    /// The encoded event.
    pub payload: Bytes,
    /// Its sequence in the stream (0 if unknown).
    pub stream_sequence: u64,
}

impl Delivery {
    /// Acks, or naks, the message: hands the ack to the connection, as the JetStream client
    /// does; it is not confirmed by the server.
    pub async fn ack_with(&self, client: &async_nats::Client, kind: AckKind) -> Result<(), String> {
        let Some(reply) = &self.reply else {
            return Err("the message has no ack subject".into());
        };
        client
            .publish(reply.clone(), Bytes::from(kind))
            .await
            .map_err(|e| e.to_string())
    }
}

/// One event on its way through the loader.
#[derive(Debug)]
pub struct Item {
    /// The message it came in, acked once its outcome is recorded.
    pub message: Delivery,
    /// Batch it belongs to.
    pub key: BatchKey,
    /// Its config, when one applied.
    pub integration: Option<Arc<Integration>>,
    /// Sage People worker id.
    pub worker_id: String,
    /// The event's id (`<run>.<worker>`), used as the dedup id of its outcome and dead letter
    /// — also for a requeued copy, whose own `Nats-Msg-Id` differs.
    pub msg_id: String,
    /// When the extractor read the worker (ms since the epoch; 0 if unknown), for the stale check.
    pub observed_at_ms: i64,
    /// Send the record even when it is identical to what was last written (drift repair).
    pub resend: bool,
    /// What to do with it.
    pub disposition: Disposition,
    /// Deliveries of this message so far (1 the first time).
    pub delivered: u64,
    /// Keeps the event from being redelivered while this replica holds it.
    pub tracked: Option<Tracked>,
}

/// Checks that `event`'s run and worker ids can become subject tokens and keys.
pub(crate) fn check_ids(event: &WorkerEvent) -> Result<(), String> {
    let worker = event.worker.as_ref().map_or("", |w| w.id.as_str());
    names::validate_event_id("run id", &event.run_id)
        .and_then(|()| names::validate_event_id("worker id", worker))
}

/// The worker id an event that cannot be attributed is dead-lettered under (with run
/// [`names::INVALID_RUN`]): its stream sequence, so two bad events never share a letter.
pub(crate) fn unattributed_worker(stream_sequence: u64) -> String {
    format!("seq-{stream_sequence}")
}

/// The item of an event that cannot be attributed to a run: dead-lettered under run
/// [`names::INVALID_RUN`] and its own worker id.
fn invalid_item(
    integration: String,
    worker_id: String,
    letter: Box<DeadLetter>,
    delivered: u64,
    message: Delivery,
) -> Item {
    Item {
        key: BatchKey {
            integration,
            run_id: names::INVALID_RUN.to_owned(),
            revision: 0,
        },
        integration: None,
        msg_id: names::event_msg_id(names::INVALID_RUN, &worker_id),
        worker_id,
        observed_at_ms: 0,
        resend: false,
        disposition: Disposition::Done(Outcome::DeadLettered, Some(letter)),
        delivered,
        tracked: None,
        message,
    }
}

/// Builds the item for `message`. `lookup` returns the active config of an integration.
pub fn prepare(
    message: jetstream::Message,
    lookup: impl Fn(&str) -> Option<(Arc<Integration>, u64)>,
) -> Item {
    let (stream_sequence, delivered) = message.info().map_or((0, 1), |i| {
        (i.stream_sequence, u64::try_from(i.delivered).unwrap_or(1))
    });
    let integration_id = names::integration_of_subject(message.subject.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned())
        // Without a dedup id the stream sequence still tells the event apart from others.
        .unwrap_or_else(|| format!("unknown.seq-{stream_sequence}"));
    let message = Delivery {
        subject: message.subject.clone(),
        reply: message.reply.clone(),
        payload: message.payload.clone(),
        stream_sequence,
    };
    let dead = |run_id: &str, worker_id: &str, reason: String| DeadLetter {
        integration: integration_id.clone(),
        run_id: run_id.to_owned(),
        worker_id: worker_id.to_owned(),
        reason,
        stage: "pipeline".into(),
        attempts: delivered,
        original_subject: message.subject.to_string(),
        ..Default::default()
    };

    // An event that cannot be attributed to a run and worker is dead-lettered once, under an
    // identity of its own (its stream sequence), so two bad events never share a letter or a
    // dedup id, and no bad id becomes a subject token or key.
    let invalid = |reason: String| {
        let worker_id = unattributed_worker(stream_sequence);
        let letter = dead(names::INVALID_RUN, &worker_id, reason);
        (worker_id, Box::new(letter))
    };
    let event = match codec::decode_worker_event(&message.payload) {
        Ok(event) => event,
        Err(err) => {
            let (worker_id, letter) = invalid(format!(
                "the event cannot be decoded (dedup id {msg_id:?}): {err}"
            ));
            return invalid_item(integration_id, worker_id, letter, delivered, message);
        }
    };
    if let Err(problem) = check_ids(&event) {
        let (worker_id, letter) = invalid(format!("the event cannot be loaded: {problem}"));
        return invalid_item(integration_id, worker_id, letter, delivered, message);
    }
    let kind = event.kind();
    // prost reads an unknown kind as Unspecified: keep the number for the letter.
    let kind_number = event.kind;
    let resend = event.resend;
    let worker = event
        .worker
        .map(codec::worker_from_proto)
        .unwrap_or_default();
    let worker_id = worker.id.clone();
    let run_id = event.run_id.clone();
    let msg_id = names::msg_id_of(&run_id, &worker_id, kind == WorkerEventKind::Ended);
    let observed_at_ms = event.observed_at.map_or(0, |t| {
        // Saturating throughout: a forged timestamp must not overflow.
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    });
    let config = lookup(&integration_id);
    let revision = config.as_ref().map_or(0, |(_, r)| *r);
    let key = BatchKey {
        integration: integration_id.clone(),
        run_id: run_id.clone(),
        revision,
    };
    let disposition = match (&config, kind) {
        // Neither an upsert, an end nor a removal (a newer or a forged producer): loading it as
        // an upsert could write what the event never meant.
        (_, WorkerEventKind::Unspecified) => Disposition::Done(
            Outcome::DeadLettered,
            Some(Box::new(dead(
                &run_id,
                &worker_id,
                format!(
                    "the event's kind ({kind_number}) is neither upsert, ended nor removed; is \
                     the extractor a newer version than this loader?"
                ),
            ))),
        ),
        (None, _) => Disposition::Done(
            Outcome::DeadLettered,
            Some(Box::new(dead(
                &run_id,
                &worker_id,
                format!(
                    "no valid integration config for {integration_id:?} in KV peoplesync_config"
                ),
            ))),
        ),
        (Some(_), WorkerEventKind::Removed | WorkerEventKind::Ended) => {
            let listed = kind == WorkerEventKind::Ended;
            let raw = raw_record(&event.raw, listed);
            let tracking = tracking_of(event.tracking);
            Disposition::Leaver(Box::new(LeaverTask {
                worker: worker.clone(),
                raw,
                tracking,
                listed,
            }))
        }
        (Some((integration, _)), _) => {
            // Decoding the raw record costs more than mapping with the default config; only
            // configs whose templates or sources read it pay for it.
            let raw = raw_record(&event.raw, integration.reads_raw());
            let tracking = tracking_of(event.tracking);
            let input = RecordInput {
                raw: &raw,
                worker: &worker,
                tracking: &tracking,
            };
            match integration.evaluate(&input) {
                Evaluation::Load { record } => {
                    match Outgoing::new(&integration_id, integration, &record) {
                        Ok(outgoing) => Disposition::Send(outgoing),
                        Err(reason) => {
                            Disposition::Refused(Box::new(dead(&run_id, &worker_id, reason)))
                        }
                    }
                }
                Evaluation::Filtered { reason } => {
                    tracing::debug!(integration = %integration_id, worker = %worker_id, %reason, "filtered");
                    Disposition::Done(Outcome::Filtered, None)
                }
                Evaluation::Unloadable { reason } => {
                    tracing::warn!(integration = %integration_id, run_id = %run_id, worker = %worker_id, %reason,
                        "worker cannot be loaded; dead-lettered");
                    Disposition::Refused(Box::new(dead(&run_id, &worker_id, reason)))
                }
            }
        }
    };
    Item {
        message,
        key,
        integration: config.map(|(i, _)| i),
        worker_id,
        msg_id,
        observed_at_ms,
        resend,
        disposition,
        delivered,
        tracked: None,
    }
}

/// The raw Sage People record of an event, decoded only when `wanted` (`Null` otherwise, or
/// when it does not decode).
fn raw_record(raw: &[u8], wanted: bool) -> Value {
    if wanted {
        serde_json::from_slice(raw).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

/// The tracking fields an event carries (empty when it has none).
fn tracking_of(tracking: Option<peoplesync_proto::v1::Tracking>) -> Tracking {
    tracking
        .map(|t| Tracking {
            credentials: t.credentials,
            hostname: t.hostname,
        })
        .unwrap_or_default()
}
