//! Dead letters: worker events that cannot be loaded, kept in the DLQ stream with the reason
//! in headers so an operator can see why, fix the cause, and replay them.

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    stream::{DeleteMessageErrorKind, LastRawMessageErrorKind},
};
use bytes::Bytes;
use serde::Serialize;

use crate::{BusError, Publisher, names};

/// Header: why the event was dead-lettered.
pub const REASON: &str = "Peoplesync-Reason";
/// Header: where it failed: `pipeline` (filter/map), `oomnitza` (refused), `delivery` (retries exhausted).
pub const STAGE: &str = "Peoplesync-Stage";
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
    /// What was recorded.
    pub letter: DeadLetter,
    /// When it was dead-lettered (RFC 3339).
    pub at: String,
    /// The original event payload.
    #[serde(skip)]
    pub payload: Bytes,
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

/// Queues a dead letter on `publisher` (dedup id: the event's, so a redelivered event is
/// dead-lettered once). Flush the publisher before acking the original event.
pub async fn publish(
    publisher: &mut Publisher,
    letter: &DeadLetter,
    payload: Bytes,
) -> Result<(), BusError> {
    publisher
        .publish(
            names::dlq_subject(&letter.integration),
            names::event_msg_id(&letter.run_id, &letter.worker_id),
            payload,
            Some(letter.headers()),
        )
        .await
}

/// Reads the dead letter at `sequence`, or `None` if there is none (purged or never there).
pub async fn get(
    js: &jetstream::Context,
    sequence: u64,
) -> Result<Option<DeadLetterRecord>, BusError> {
    let stream = js
        .get_stream(names::DLQ_STREAM)
        .await
        .map_err(|e| BusError::request("opening the DLQ stream", e))?;
    match stream.get_raw_message(sequence).await {
        Ok(raw) => Ok(Some(DeadLetterRecord {
            sequence,
            letter: DeadLetter::from_headers(&raw.headers),
            at: raw.time.to_string(),
            payload: raw.payload,
        })),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(BusError::request(
            format!("reading dead letter {sequence}"),
            err,
        )),
    }
}

/// Sequence numbers currently held in the DLQ stream (first..=last, some may be deleted).
pub async fn sequence_range(js: &jetstream::Context) -> Result<(u64, u64, u64), BusError> {
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
    js: &jetstream::Context,
    integration: &str,
    sequence: u64,
) -> Result<Option<DeadLetterRecord>, BusError> {
    let stream = js
        .get_stream_no_info(names::DLQ_STREAM)
        .await
        .map_err(|e| BusError::request("opening the DLQ stream", e))?;
    let subject = names::dlq_subject(integration);
    match stream
        .get_first_raw_message_by_subject(&subject, sequence.max(1))
        .await
    {
        Ok(raw) => Ok(Some(DeadLetterRecord {
            sequence: raw.sequence,
            letter: DeadLetter::from_headers(&raw.headers),
            at: raw.time.to_string(),
            payload: raw.payload,
        })),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(BusError::request(
            format!("reading dead letters of {integration} from sequence {sequence}"),
            err,
        )),
    }
}

/// Deletes the dead letter at `sequence`; false when it was not there (already gone).
pub async fn delete(js: &jetstream::Context, sequence: u64) -> Result<bool, BusError> {
    let stream = js
        .get_stream_no_info(names::DLQ_STREAM)
        .await
        .map_err(|e| BusError::request("opening the DLQ stream", e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_stay_on_one_line() {
        let letter = DeadLetter {
            integration: "acme".into(),
            run_id: "r1".into(),
            worker_id: "w1".into(),
            reason: "refused:\nEMAIL not an e-mail".into(),
            stage: "oomnitza".into(),
            http_status: Some(422),
            body_excerpt: Some("{\"errors\":\r\n[1]}".into()),
            attempts: 2,
            original_subject: "peoplesync.acme.workers".into(),
        };
        let back = DeadLetter::from_headers(&letter.headers());
        assert_eq!(back.reason, "refused: EMAIL not an e-mail");
        assert_eq!(back.http_status, Some(422));
        assert_eq!(back.body_excerpt.as_deref(), Some("{\"errors\":  [1]}"));
        assert_eq!(back.attempts, 2);
        assert_eq!(back.worker_id, "w1");
    }
}
