//! Turning Sage People records into the bus's `WorkerEvent`s: normalise, keep the raw record
//! (with its `additionalFields`, so templates can reach them), attach tracking, encode. Pure:
//! no I/O, so the hot path of a run is cheap to test and to profile.

use bytes::Bytes;
use peoplesync_bus::codec;
use peoplesync_bus::names;
use peoplesync_core::{NormaliseError, Worker};
use peoplesync_proto::Timestamp;
use peoplesync_proto::v1::{self as proto, WorkerEvent, WorkerEventKind};
use serde_json::Value;

/// One event ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The worker's Sage People id.
    pub worker_id: String,
    /// Its dedup id (`Nats-Msg-Id`): `<run_id>.<worker_id>`.
    pub msg_id: String,
    /// The protobuf `WorkerEvent`.
    pub payload: Bytes,
    /// The worker has left (see [`EventBuilder::judging_end_dates`]): the event is kept for
    /// the end of the run (and published as an upsert only with leaver action `none`).
    pub ended: bool,
}

/// Headroom left below NATS's payload limit for an event's headers.
const HEADER_ROOM: usize = 4 * 1024;

/// The largest event payload a NATS server whose `max_payload` is that accepts (less room for
/// headers); 0, not known yet (no server info), sets no limit: NATS answers.
pub fn max_event_bytes(max_payload: usize) -> usize {
    match max_payload {
        0 => usize::MAX,
        max => max.saturating_sub(HEADER_ROOM),
    }
}

/// What an operator does about an event too large to publish.
pub const TOO_LARGE_FIX: &str =
    "Shorten its largest field in Sage People (or raise max_payload on the NATS servers)";

impl Encoded {
    /// Why this event cannot be published where events may be `max` bytes
    /// ([`max_event_bytes`]), if it cannot.
    pub fn too_large(&self, max: usize) -> Option<String> {
        let size = self.payload.len();
        (size > max).then(|| {
            format!(
                "worker {}'s event is {size} bytes, more than NATS accepts in one message \
                 ({max} bytes)",
                self.worker_id
            )
        })
    }
}

/// Builds the events of one run.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    integration: String,
    run_id: String,
    tracking: proto::Tracking,
    ids: u128,
    /// Events are to be sent even when unchanged.
    resend: bool,
    /// How end dates are judged; `None` judges nobody as having left.
    end_dates: Option<crate::ended::EndDates>,
}

impl EventBuilder {
    /// Events of `run_id` of `integration`, read through credential set `credentials` from
    /// Sage People host `hostname` (Oomnitza's "Connect:" tracking fields).
    pub fn new(integration: &str, run_id: &str, credentials: &str, hostname: &str) -> Self {
        EventBuilder {
            integration: integration.to_owned(),
            run_id: run_id.to_owned(),
            tracking: proto::Tracking {
                credentials: credentials.to_owned(),
                hostname: hostname.to_owned(),
            },
            ids: uuid::Uuid::now_v7().as_u128(),
            resend: false,
            end_dates: None,
        }
    }

    /// Marks the upserts of workers who have left by `end_dates.today` (in the integration's
    /// time zone) as [`Encoded::ended`].
    pub fn judging_end_dates(mut self, end_dates: crate::ended::EndDates) -> Self {
        self.end_dates = Some(end_dates);
        self
    }

    /// Marks every event built as one to send even when unchanged (drift repair).
    pub fn resending(mut self, resend: bool) -> Self {
        self.resend = resend;
        self
    }

    /// A UUID v7 for the event at `sequence`: the builder's own, with the sequence added to
    /// its random bits. Unique per builder and sortable like any v7, at a fraction of the cost
    /// of reading the clock and the random generator for every event.
    fn event_id(&self, sequence: u64) -> String {
        // The low 62 bits are random in v7; adding a sequence leaves the version and variant
        // bits alone unless it carries past them, which the mask prevents.
        const RANDOM_B: u128 = (1 << 62) - 1;
        let random = (self.ids & RANDOM_B).wrapping_add(u128::from(sequence)) & RANDOM_B;
        uuid::Uuid::from_u128((self.ids & !RANDOM_B) | random).to_string()
    }

    /// The upsert event of one listed record, `sequence` being its 1-based position in the run.
    pub fn upsert(
        &self,
        raw: &Value,
        sequence: u64,
        observed_at: Timestamp,
    ) -> Result<Encoded, NormaliseError> {
        let worker = Worker::from_raw(raw)?;
        self.upsert_worker(raw, worker, sequence, observed_at)
    }

    /// [`EventBuilder::upsert`] of a record already normalised into `worker`.
    pub fn upsert_worker(
        &self,
        raw: &Value,
        worker: Worker,
        sequence: u64,
        observed_at: Timestamp,
    ) -> Result<Encoded, NormaliseError> {
        // The id becomes a dedup id, a key and a subject token downstream: a loader would
        // dead-letter the event outside its run, which then never completes its count.
        names::validate_event_id("worker id", &worker.id).map_err(NormaliseError::UnusableId)?;
        let ended = self.has_left(&worker);
        // The client hands records over parsed, not as the bytes of the HTTP body, so the raw
        // record is serialised again; sized once, since records are about a kilobyte.
        let mut bytes = Vec::with_capacity(1536);
        if serde_json::to_writer(&mut bytes, raw).is_err() {
            bytes = b"{}".to_vec();
        }
        let raw = bytes;
        let mut encoded = self.encode(
            codec::worker_into_proto(worker),
            raw,
            sequence,
            observed_at,
            WorkerEventKind::Upsert,
        );
        encoded.ended = ended;
        Ok(encoded)
    }

    /// Whether `worker` has left (inactive, or end date passed) by the end dates this builder
    /// judges with.
    pub fn has_left(&self, worker: &Worker) -> bool {
        self.end_dates.is_some_and(|d| d.has_left(worker))
    }

    /// The event saying that a worker has left, from the upsert kept for them when their run
    /// listed them (see [`crate::ended`]): the worker as last listed, in this builder's run.
    pub fn ended(
        &self,
        kept: &Bytes,
        sequence: u64,
        observed_at: Timestamp,
    ) -> Result<Encoded, peoplesync_bus::BusError> {
        let event = codec::decode_worker_event(kept)?;
        let worker = event.worker.unwrap_or_default();
        Ok(self.encode(
            worker,
            event.raw.to_vec(),
            sequence,
            observed_at,
            WorkerEventKind::Ended,
        ))
    }

    /// The event saying worker `id` is no longer listed.
    pub fn removed(&self, id: &str, sequence: u64, observed_at: Timestamp) -> Encoded {
        let raw = serde_json::to_vec(&serde_json::json!({ "id": id })).unwrap_or_default();
        let worker = proto::Worker {
            id: id.to_owned(),
            ..Default::default()
        };
        self.encode(worker, raw, sequence, observed_at, WorkerEventKind::Removed)
    }

    fn encode(
        &self,
        worker: proto::Worker,
        raw: Vec<u8>,
        sequence: u64,
        observed_at: Timestamp,
        kind: WorkerEventKind,
    ) -> Encoded {
        let worker_id = worker.id.clone();
        let event = WorkerEvent {
            event_id: self.event_id(sequence),
            integration_id: self.integration.clone(),
            run_id: self.run_id.clone(),
            kind: kind.into(),
            observed_at: Some(observed_at),
            worker: Some(worker),
            raw: raw.into(),
            tracking: Some(self.tracking.clone()),
            sequence,
            resend: self.resend,
        };
        Encoded {
            msg_id: names::msg_id_of(&self.run_id, &worker_id, kind == WorkerEventKind::Ended),
            worker_id,
            payload: codec::encode_worker_event(&event),
            ended: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder() -> EventBuilder {
        EventBuilder::new("acme", "run-1", "emea", "acme.my.salesforce.com")
    }

    #[test]
    fn an_upsert_carries_the_normalised_worker_the_raw_record_and_tracking() {
        let raw = json!({
            "id": "a2G1", "emailAddress": " Ada@Example.com ",
            "additionalFields": [{"name": "Cost Centre", "value": "CC-1"}]
        });
        let encoded = builder().upsert(&raw, 7, codec::now()).unwrap();
        assert_eq!(encoded.msg_id, "run-1.a2G1");
        let event = codec::decode_worker_event(&encoded.payload).unwrap();
        assert_eq!(event.kind(), WorkerEventKind::Upsert);
        assert_eq!(event.sequence, 7);
        let worker = event.worker.unwrap();
        assert_eq!(
            worker.email.as_deref(),
            Some("Ada@Example.com"),
            "kept as Sage People holds it"
        );
        let back: Value = serde_json::from_slice(&event.raw).unwrap();
        assert_eq!(back["additionalFields"][0]["value"], "CC-1");
        let tracking = event.tracking.unwrap();
        assert_eq!(
            (tracking.credentials.as_str(), tracking.hostname.as_str()),
            ("emea", "acme.my.salesforce.com")
        );
    }

    #[test]
    fn event_ids_are_distinct_version_7_uuids() {
        let builder = builder();
        let ids: std::collections::HashSet<String> =
            (1..=1000).map(|n| builder.event_id(n)).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            let uuid = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(uuid.get_version_num(), 7);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn a_record_without_id_is_refused() {
        assert!(
            builder()
                .upsert(&json!({"fullName": "x"}), 1, codec::now())
                .is_err()
        );
    }

    #[test]
    fn a_record_whose_id_cannot_name_it_on_the_bus_is_refused_saying_why() {
        for id in ["a2G bad", "a2G.dot", "a2G>", "*", &"a".repeat(200)] {
            let err = builder()
                .upsert(&json!({"id": id, "emailAddress": "x@y.z"}), 1, codec::now())
                .expect_err(id);
            assert!(
                matches!(&err, NormaliseError::UnusableId(why) if why.contains("worker id")),
                "{id}: {err}"
            );
        }
    }

    #[test]
    fn a_removal_names_only_the_worker() {
        let encoded = builder().removed("a2G9", 3, codec::now());
        let event = codec::decode_worker_event(&encoded.payload).unwrap();
        assert_eq!(event.kind(), WorkerEventKind::Removed);
        assert_eq!(event.worker.unwrap().id, "a2G9");
        assert_eq!(encoded.msg_id, "run-1.a2G9");
    }
}
