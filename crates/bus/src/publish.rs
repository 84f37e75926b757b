//! Publishing to JetStream with a dedup id per message and acks awaited in a bounded window:
//! up to `window` messages are in flight at once (pipelined), the oldest ack is awaited before
//! another is sent, and a publish whose ack timed out is sent again with the same id, so the
//! server's dedup window turns a retry that raced a late ack into a no-op.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;

use crate::BusError;

/// Attempts per message when acks time out or the connection drops.
const MAX_ATTEMPTS: u32 = 5;

struct InFlight {
    subject: String,
    id: String,
    payload: Bytes,
    headers: Option<HeaderMap>,
    ack: PublishAckFuture,
}

/// A pipelined JetStream publisher. Call [`Publisher::flush`] before relying on everything
/// published so far being stored (for example before writing a checkpoint).
pub struct Publisher {
    js: jetstream::Context,
    window: usize,
    in_flight: VecDeque<InFlight>,
    sent: u64,
    stored: u64,
    duplicates: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("window", &self.window)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl Publisher {
    /// A publisher keeping at most `window` (at least 1) acks outstanding.
    pub fn new(js: jetstream::Context, window: usize) -> Publisher {
        Publisher {
            js,
            window: window.max(1),
            in_flight: VecDeque::new(),
            sent: 0,
            stored: 0,
            duplicates: 0,
        }
    }

    /// Publishes `payload` to `subject` with dedup id `id`; waits only when the window is full.
    pub async fn publish(
        &mut self,
        subject: String,
        id: String,
        payload: Bytes,
        headers: Option<HeaderMap>,
    ) -> Result<(), BusError> {
        while self.in_flight.len() >= self.window {
            self.settle_oldest().await?;
        }
        let ack = send(&self.js, &subject, &id, &payload, headers.as_ref()).await?;
        self.in_flight.push_back(InFlight {
            subject,
            id,
            payload,
            headers,
            ack,
        });
        self.sent += 1;
        Ok(())
    }

    /// The JetStream context this publisher writes through.
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Messages handed to [`Publisher::publish`] so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages acknowledged so far (stored or duplicate). Acks are settled in publishing
    /// order, so these are always the first `acknowledged()` messages sent.
    pub fn acknowledged(&self) -> u64 {
        self.stored + self.duplicates
    }

    /// Waits until the first `count` messages sent are acknowledged, leaving later ones in
    /// flight; lets a caller checkpoint one batch while the next is being published.
    pub async fn settle_until(&mut self, count: u64) -> Result<(), BusError> {
        while self.acknowledged() < count && !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits until every message published so far is acknowledged by the server.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Messages the server stored (acknowledged as new) so far.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Messages the server acknowledged as duplicates of an earlier id and dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    async fn settle_oldest(&mut self) -> Result<(), BusError> {
        let Some(first) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let mut attempt = 1;
        let mut pending = first.ack;
        loop {
            match pending.await {
                Ok(ack) => {
                    if ack.duplicate {
                        self.duplicates += 1;
                    } else {
                        self.stored += 1;
                    }
                    return Ok(());
                }
                Err(err) if attempt < MAX_ATTEMPTS && is_retryable(&err) => {
                    tracing::warn!(subject = %first.subject, id = %first.id, attempt, error = %err,
                        "publish not acknowledged; sending again with the same id");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                    pending = send(
                        &self.js,
                        &first.subject,
                        &first.id,
                        &first.payload,
                        first.headers.as_ref(),
                    )
                    .await?;
                }
                Err(err) => {
                    return Err(BusError::Publish {
                        subject: first.subject,
                        id: first.id,
                        message: err.to_string(),
                    });
                }
            }
        }
    }
}

fn is_retryable(err: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind as K;
    matches!(err.kind(), K::TimedOut | K::BrokenPipe | K::MaxAckPending)
}

async fn send(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: &Bytes,
    headers: Option<&HeaderMap>,
) -> Result<PublishAckFuture, BusError> {
    let mut message = PublishMessage::build().payload(payload.clone());
    if let Some(headers) = headers {
        message = message.headers(headers.clone());
    }
    let message = message.message_id(id);
    js.send_publish(subject.to_owned(), message)
        .await
        .map_err(|err| BusError::Publish {
            subject: subject.to_owned(),
            id: id.to_owned(),
            message: err.to_string(),
        })
}
