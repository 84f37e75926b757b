//! Encoding and decoding the protobuf events carried on the bus, and time conversions.

use bytes::Bytes;
use peoplesync_proto::v1::{RunEvent, WorkerEvent};
use peoplesync_proto::{Message, Timestamp};

use crate::BusError;

/// Encodes a worker event for publishing.
pub fn encode_worker_event(event: &WorkerEvent) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

/// Decodes a worker event from a message payload.
pub fn decode_worker_event(payload: &Bytes) -> Result<WorkerEvent, BusError> {
    // Decoding from the shared buffer lets `raw` point into the payload instead of a copy.
    WorkerEvent::decode(payload.clone()).map_err(|e| BusError::Decode {
        what: "WorkerEvent",
        source: e.into(),
    })
}

/// Encodes a run event for publishing.
pub fn encode_run_event(event: &RunEvent) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

/// Decodes a run event from a message payload.
pub fn decode_run_event(payload: &[u8]) -> Result<RunEvent, BusError> {
    RunEvent::decode(payload).map_err(|e| BusError::Decode {
        what: "RunEvent",
        source: e.into(),
    })
}

/// A protobuf timestamp for `time`.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The protobuf timestamp of now.
pub fn now() -> Timestamp {
    timestamp(chrono::Utc::now())
}

/// The wire form of a normalised worker.
pub fn worker_to_proto(worker: &peoplesync_core::Worker) -> peoplesync_proto::v1::Worker {
    worker_into_proto(worker.clone())
}

/// Both conversions between a normalised worker and its wire form, from one list of the fields
/// they share (all of them): a field added to one type and not here fails to compile.
macro_rules! worker_conversions {
    ($($field:ident),* $(,)?) => {
        /// The wire form of a normalised worker, moving its fields instead of cloning them (the
        /// extractor's hot path).
        pub fn worker_into_proto(worker: peoplesync_core::Worker) -> peoplesync_proto::v1::Worker {
            peoplesync_proto::v1::Worker { $($field: worker.$field),* }
        }

        /// The normalised worker carried by an event.
        pub fn worker_from_proto(worker: peoplesync_proto::v1::Worker) -> peoplesync_core::Worker {
            peoplesync_core::Worker { $($field: worker.$field),* }
        }
    };
}

worker_conversions!(
    id,
    full_name,
    first_name,
    last_name,
    email,
    hr_department,
    job_title,
    employment_name,
    employment_active,
    start_date,
    end_date,
    work_location,
    address_line1,
    address_line2,
    address_line3,
    city,
    region,
    postal_code,
    country,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_round_trips_through_the_wire_form() {
        let worker = peoplesync_core::Worker {
            id: "a2G1".into(),
            first_name: Some("Zoë".into()),
            employment_active: Some(false),
            country: Some("日本".into()),
            ..Default::default()
        };
        let event = WorkerEvent {
            worker: Some(worker_to_proto(&worker)),
            ..Default::default()
        };
        let back = decode_worker_event(&encode_worker_event(&event)).unwrap();
        assert_eq!(worker_from_proto(back.worker.unwrap()), worker);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode_worker_event(&Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
    }
}
