//! Publishing to JetStream with a dedup id per message and acks awaited in a bounded window:
//! up to `window` messages are in flight at once (pipelined), and the oldest ack is awaited
//! before another is sent.
//!
//! When an ack is lost (NATS restarted, a cluster node went away, the connection dropped), every
//! ack still outstanding was very likely lost with it, and async-nats starts an ack's timeout only
//! when it is awaited; waiting for them one by one would cost one timeout per message. So the
//! whole window is sent again at once, with the same ids (the server's dedup window turns a
//! message that had been stored into a no-op), and sending again goes on with a growing pause
//! until the acks come back or one deadline (two minutes unless set) has passed since the first
//! lost ack.
//!
//! A send that fails for a reason that may pass (the client's queue full while the connection
//! is down, which the client gives up on after its request timeout) is treated like a lost
//! ack: the message stays in the window without one, and nothing newer is sent until the
//! window has been sent again in order, so messages are stored in the order they were
//! published. (The wait for an ack permit is unbounded in the client, so the bus gives each
//! connection more permits than any window holds; see `setup`.) A long outage is logged every round and ends
//! in an error at the deadline. A send that can never succeed (too large, a bad subject) fails
//! at once.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use tokio::time::Instant;

use crate::BusError;

/// How long acks may stay lost before publishing fails, unless set with
/// [`Publisher::with_deadline`].
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(120);

/// The longest pause between two re-sends of the window.
const MAX_PAUSE: Duration = Duration::from_secs(5);

struct InFlight {
    subject: String,
    id: String,
    payload: Bytes,
    headers: Option<HeaderMap>,
    /// `None` once awaited without an answer, until the window is sent again.
    ack: Option<PublishAckFuture>,
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
    deadline: Duration,
    /// When the first ack of the current streak of lost ones was found lost.
    failing_since: Option<Instant>,
    resends: u64,
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
    pub(crate) fn new(js: jetstream::Context, window: usize) -> Publisher {
        Publisher {
            js,
            window: window.max(1),
            in_flight: VecDeque::new(),
            sent: 0,
            stored: 0,
            duplicates: 0,
            deadline: DEFAULT_ACK_DEADLINE,
            failing_since: None,
            resends: 0,
        }
    }

    /// Fails a publish only once acks have stayed lost for `deadline` (at least one second).
    pub fn with_deadline(mut self, deadline: Duration) -> Publisher {
        self.deadline = deadline.max(Duration::from_secs(1));
        self
    }

    /// Times the window in flight was sent again after a lost ack.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Publishes `payload` to `subject` with dedup id `id`; waits only when the window is full.
    pub async fn publish(
        &mut self,
        subject: String,
        id: String,
        payload: Bytes,
        headers: Option<HeaderMap>,
    ) -> Result<(), BusError> {
        // A message not sent yet goes out again, in order, before anything newer.
        while self.in_flight.len() >= self.window || self.has_unsent() {
            self.settle_oldest().await?;
        }
        let ack = match send(&self.js, &subject, &id, &payload, headers.as_ref()).await {
            Ok(ack) => Some(ack),
            Err(failed) if failed.may_pass => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.deadline {
                    return Err(self.gave_up(failed.error.to_string()));
                }
                tracing::warn!(error = %failed.error, in_flight = self.in_flight.len(),
                    "cannot send to NATS; the message is sent again with the window");
                None
            }
            Err(failed) => return Err(failed.error),
        };
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

    /// Whether some message in the window has not been sent (its send failed): it goes out
    /// again, with the window, before anything newer. Unsent messages are always the last of
    /// the window (a failed send is the newest; a failed resend leaves the rest unsent).
    fn has_unsent(&self) -> bool {
        self.in_flight.back().is_some_and(|m| m.ack.is_none())
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
        loop {
            let Some(first) = self.in_flight.front_mut() else {
                return Ok(());
            };
            let Some(ack) = first.ack.take() else {
                self.resend_window().await?;
                continue;
            };
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        self.duplicates += 1;
                    } else {
                        self.stored += 1;
                    }
                    self.in_flight.pop_front();
                    if self.failing_since.take().is_some() {
                        tracing::info!(resends = self.resends, "NATS acknowledges publishes again");
                    }
                    return Ok(());
                }
                Err(err) if is_retryable(&err) => {
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.deadline {
                        return Err(self.gave_up(err.to_string()));
                    }
                    tracing::warn!(in_flight = self.in_flight.len(), error = %err,
                        round = self.resends + 1,
                        "a publish was not acknowledged; sending the whole window again with the same ids");
                    // Every later ack is lost too: send them all again now.
                    self.resend_window().await?;
                }
                Err(err) => {
                    let first = self.in_flight.pop_front();
                    return Err(BusError::Publish {
                        subject: first
                            .as_ref()
                            .map(|f| f.subject.clone())
                            .unwrap_or_default(),
                        id: first.map(|f| f.id).unwrap_or_default(),
                        source: err.into(),
                    });
                }
            }
        }
    }

    /// Sends every message in flight again, after a pause that grows with each round; a send
    /// refused while the connection is down is tried again in the next round.
    async fn resend_window(&mut self) -> Result<(), BusError> {
        let round = u32::try_from(self.resends.min(8)).unwrap_or(8);
        let pause = (Duration::from_millis(250) * 2u32.pow(round)).min(MAX_PAUSE);
        tokio::time::sleep(pause).await;
        self.resends += 1;
        for index in 0..self.in_flight.len() {
            let message = &self.in_flight[index];
            match send(
                &self.js,
                &message.subject,
                &message.id,
                &message.payload,
                message.headers.as_ref(),
            )
            .await
            {
                Ok(ack) => self.in_flight[index].ack = Some(ack),
                Err(failed) if !failed.may_pass => return Err(failed.error),
                Err(failed) => {
                    let err = failed.error;
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.deadline {
                        return Err(self.gave_up(err.to_string()));
                    }
                    tracing::warn!(error = %err, "cannot send to NATS; trying the window again");
                    // The rest keep no ack and are sent in the next round.
                    for rest in self.in_flight.iter_mut().skip(index) {
                        rest.ack = None;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn gave_up(&self, error: String) -> BusError {
        let first = self.in_flight.front();
        BusError::Publish {
            subject: first.map(|f| f.subject.clone()).unwrap_or_default(),
            id: first.map(|f| f.id.clone()).unwrap_or_default(),
            source: format!(
                "NATS has not acknowledged publishes for {} s ({error}; {} messages in flight, sent again {} times)",
                self.deadline.as_secs(),
                self.in_flight.len(),
                self.resends
            )
            .into(),
        }
    }
}

/// Whether sending again may help: a lost or refused ack, or JetStream answering "no
/// responders" or an error while it recovers after a restart. A message that can never be
/// stored (too large, a failed expectation) is not retried.
fn is_retryable(err: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind as K;
    !matches!(
        err.kind(),
        K::WrongLastMessageId | K::WrongLastSequence | K::MaxPayloadExceeded
    )
}

/// A send that failed, and whether sending again may succeed.
struct SendFailed {
    error: BusError,
    may_pass: bool,
}

async fn send(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    payload: &Bytes,
    headers: Option<&HeaderMap>,
) -> Result<PublishAckFuture, SendFailed> {
    let mut message = PublishMessage::build().payload(payload.clone());
    if let Some(headers) = headers {
        message = message.headers(headers.clone());
    }
    let message = message.message_id(id);
    let failed = |source: Box<dyn std::error::Error + Send + Sync>, may_pass| SendFailed {
        error: BusError::Publish {
            subject: subject.to_owned(),
            id: id.to_owned(),
            source,
        },
        may_pass,
    };
    // The client bounds the hand-over itself (its request timeout while its queue is full);
    // ack permits never run out, as the bus's context has more than the windows hold.
    match js.send_publish(subject.to_owned(), message).await {
        Ok(ack) => Ok(ack),
        Err(err) => {
            use jetstream::context::PublishErrorKind as K;
            // Only a send the client could not hand over (its queue full, no ack permit) may
            // pass; a message too large or a subject the client refuses never will.
            let may_pass = matches!(err.kind(), K::TimedOut | K::MaxAckPending | K::BrokenPipe);
            Err(failed(err.into(), may_pass))
        }
    }
}
