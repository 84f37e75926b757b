//! Consuming worker events from an integration's durable pull consumer, shared by every loader
//! replica. Events are fetched in small batches (so work spreads across replicas), and the
//! stream of messages never ends on its own: a missed heartbeat, a reconnect or a
//! deleted-and-recreated consumer is logged and consumption goes on, because a loader that
//! silently stops pulling looks healthy while nothing moves. [`WorkStream::drain`] finishes the
//! current fetch on shutdown so no delivered event waits for its ack timeout.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, consumer, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;

use crate::{Bus, BusError, names};

/// Removes the events of `integration` that its loaders' consumer has acknowledged but the
/// work stream still holds, and returns how many. A work-queue stream deletes an event when it
/// is acknowledged, but after a NATS server is killed (`kill -9`, a node crash) some
/// acknowledged events can stay stored below the consumer's ack floor for good: they are never
/// delivered again and only take space (found by the chaos suite: 846 of 100,000 after four
/// restarts). Everything at or below the ack floor is acknowledged, so removing it is safe.
pub async fn trim_acknowledged(bus: &crate::Bus, integration: &str) -> Result<u64, BusError> {
    trim(&bus.js, integration).await
}

async fn trim(js: &jetstream::Context, integration: &str) -> Result<u64, BusError> {
    let stream = js
        .get_stream_no_info(names::WORKERS_STREAM)
        .await
        .map_err(|e| BusError::request("opening the work stream", e))?;
    let consumer = names::loader_consumer(integration);
    let floor = stream
        .consumer_info(&consumer)
        .await
        .map_err(|e| BusError::request(format!("reading consumer {consumer}"), e))?
        .ack_floor
        .stream_sequence;
    if floor == 0 {
        return Ok(0);
    }
    let purged = stream
        .purge()
        .filter(names::workers_subject(integration))
        .sequence(floor + 1)
        .await
        .map_err(|e| BusError::request("removing acknowledged events from the work stream", e))?;
    Ok(purged.purged)
}

/// An event as the work stream stores it, read by its stream sequence.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The subject it was published to (`peoplesync.<integration>.workers`).
    pub subject: String,
    /// The encoded `WorkerEvent`.
    pub payload: bytes::Bytes,
}

/// The messages a stream holds under a filter when the read starts, each read once and in
/// order. Messages that vanish while they are read (purged by another replica, aged out) end
/// the read with an error instead of a wait for ever.
pub(crate) struct Snapshot {
    what: String,
    messages: Option<consumer::pull::Ordered>,
    remaining: u64,
}

impl Snapshot {
    /// Starts reading `stream` under `filter`; `what` names the read in errors.
    pub(crate) async fn open(
        js: &jetstream::Context,
        stream: &str,
        filter: String,
        what: String,
    ) -> Result<Snapshot, BusError> {
        let stream = js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| BusError::request(&what, e))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::request(&what, e))?;
        let remaining = consumer.cached_info().num_pending;
        // The consumer asks for nothing until the first read, so an empty read costs no fetch.
        let messages = if remaining == 0 {
            None
        } else {
            let messages = consumer.messages().await;
            Some(messages.map_err(|e| BusError::request(&what, e))?)
        };
        Ok(Snapshot {
            what,
            messages,
            remaining,
        })
    }

    /// What is read, as errors name it.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Whether every message is read.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// The next message; `None` after the last. When none comes within `idle`, the read fails
    /// with `missing` as the reason.
    pub(crate) async fn next(
        &mut self,
        idle: Duration,
        missing: &str,
    ) -> Result<Option<jetstream::Message>, BusError> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        if self.remaining == 0 {
            return Ok(None);
        }
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) => return Err(BusError::request(&self.what, err)),
            Ok(None) => return Err(BusError::request(&self.what, "the consumer ended early")),
            Err(_) => return Err(BusError::request(&self.what, missing)),
        };
        self.remaining -= 1;
        if let Ok(info) = message.info() {
            if info.pending < self.remaining {
                // Fewer left than were counted: some vanished (purged, aged out) meanwhile.
                return Err(BusError::request(
                    &self.what,
                    format!(
                        "{} message(s) vanished while they were read",
                        self.remaining - info.pending
                    ),
                ));
            }
            if info.pending == 0 {
                self.remaining = 0;
            }
        }
        Ok(Some(message))
    }
}

/// Up to `max` max-deliveries advisories (the server's notices of worker events it gave up
/// on), each yielded as it arrives, the fetch ending after `expires`; each is acknowledged by
/// the caller once handled.
pub async fn fetch_advisories(
    bus: &Bus,
    max: usize,
    expires: Duration,
) -> Result<impl futures::Stream<Item = jetstream::Message> + Unpin, BusError> {
    let consumer = bus.advisory_consumer().await?;
    let batch = consumer
        .fetch()
        .max_messages(max)
        .expires(expires)
        .messages()
        .await
        .map_err(|e| BusError::request("fetching max-deliveries advisories", e))?;
    Ok(batch.filter_map(|advisory| std::future::ready(advisory.ok())))
}

/// The work-stream event at `sequence`, or `None` when it is gone (acknowledged or removed).
/// Used for an event the server gave up delivering, which only its sequence names.
pub async fn stored_event(bus: &Bus, sequence: u64) -> Result<Option<StoredEvent>, BusError> {
    let stream = bus.stream(names::WORKERS_STREAM).await?;
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(Some(StoredEvent {
            subject: message.subject.to_string(),
            payload: message.payload,
        })),
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(err) => Err(BusError::request(
            format!("reading event {sequence} of the work stream"),
            err,
        )),
    }
}

/// Removes the work-stream event at `sequence` (one the server gave up delivering, once it is
/// dead-lettered).
pub async fn remove_event(bus: &Bus, sequence: u64) -> Result<(), BusError> {
    bus.stream(names::WORKERS_STREAM)
        .await?
        .delete_message(sequence)
        .await
        .map(drop)
        .map_err(|e| BusError::request(format!("removing abandoned event {sequence}"), e))
}

/// How long one fetch waits for messages before it is renewed.
const FETCH_EXPIRES: Duration = Duration::from_secs(2);

/// An endless source of one integration's worker events for one loader replica.
pub struct WorkStream {
    bus: Bus,
    integration: String,
    batch: usize,
    consumer: Option<PullConsumer>,
    fetch: Option<pull::Batch>,
}

impl std::fmt::Debug for WorkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkStream")
            .field("integration", &self.integration)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl WorkStream {
    /// Fetches at most `batch` messages per request from `integration`'s consumer.
    pub fn new(bus: Bus, integration: &str, batch: usize) -> WorkStream {
        WorkStream {
            bus,
            integration: integration.to_owned(),
            batch: batch.max(1),
            consumer: None,
            fetch: None,
        }
    }

    /// Binds the consumer now (creating it if needed), so readiness can be reported before the
    /// first event arrives.
    pub async fn bind(&mut self) -> Result<(), BusError> {
        if self.consumer.is_none() {
            self.consumer = Some(self.bus.loader_consumer(&self.integration).await?);
        }
        Ok(())
    }

    /// The next message. Waits as long as it takes; errors are logged and retried, so the
    /// caller stops consuming only through its own cancellation.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            if let Some(message) = self.next_of_fetch().await {
                return message;
            }
        }
    }

    /// The next message of the current fetch, asking for one (of up to `batch` messages) if
    /// none is under way; `None` once that fetch has ended (all its messages taken, or it
    /// expired), so the caller decides when the next one is asked for. A caller that asks
    /// only when it can take a whole fetch at once never leaves delivered messages waiting in
    /// the client's buffer, where nothing keeps their ack timers from running out. Errors are
    /// logged and end the fetch after a 1 s pause.
    pub async fn next_of_fetch(&mut self) -> Option<jetstream::Message> {
        match self.try_next().await {
            Ok(Some(message)) => Some(message),
            Ok(None) => {
                self.fetch = None;
                None
            }
            Err(err) => {
                tracing::warn!(integration = %self.integration, error = %err,
                    "pulling worker events failed; retrying in 1s");
                self.fetch = None;
                self.consumer = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        }
    }

    /// Ends consumption: waits (at most the fetch's expiry) for the messages the current fetch
    /// has been promised and returns them, so they can be handled instead of redelivered later.
    pub async fn drain(&mut self) -> Vec<jetstream::Message> {
        let mut messages = Vec::new();
        if let Some(mut fetch) = self.fetch.take() {
            let deadline = tokio::time::sleep(FETCH_EXPIRES + Duration::from_millis(500));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    next = fetch.next() => match next {
                        Some(Ok(message)) => messages.push(message),
                        Some(Err(_)) => continue,
                        None => break,
                    },
                }
            }
        }
        messages
    }

    async fn try_next(&mut self) -> Result<Option<jetstream::Message>, BusError> {
        if self.fetch.is_none() {
            self.bind().await?;
            let Some(consumer) = self.consumer.as_ref() else {
                return Ok(None);
            };
            let fetch = consumer
                .fetch()
                .max_messages(self.batch)
                .expires(FETCH_EXPIRES)
                .messages()
                .await
                .map_err(|e| BusError::request("pulling worker events", e))?;
            self.fetch = Some(fetch);
        }
        let Some(fetch) = self.fetch.as_mut() else {
            return Ok(None);
        };
        match fetch.next().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(err)) => {
                tracing::debug!(integration = %self.integration, error = %err, "fetch ended with an error; fetching again");
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Acknowledged events a work-queue stream failed to delete (as after a NATS server crash)
    //! are removed; nothing unacknowledged and nothing of another integration is.

    use async_nats::jetstream::{self, consumer::pull, stream};
    use futures::StreamExt;
    use peoplesync_testkit::NatsServer;

    use super::trim;
    use crate::names;

    #[tokio::test]
    async fn acknowledged_events_left_in_the_work_stream_are_removed_and_nothing_else() {
        let nats = NatsServer::start();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        // Limits retention keeps acknowledged events, as a work-queue stream sometimes does after
        // its server was killed.
        let stream = js
            .create_stream(stream::Config {
                name: names::WORKERS_STREAM.into(),
                subjects: vec!["peoplesync.*.workers".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(names::loader_consumer("acme")),
                filter_subject: names::workers_subject("acme"),
                ..Default::default()
            })
            .await
            .unwrap();
        for (integration, n) in [("acme", 10), ("other", 2)] {
            for i in 0..n {
                js.publish(names::workers_subject(integration), format!("{i}").into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        let mut batch = consumer.fetch().max_messages(6).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            message.unwrap().double_ack().await.unwrap();
        }

        let removed = trim(&js, "acme").await.unwrap();
        assert_eq!(removed, 6, "the acknowledged events");
        let info = js
            .get_stream(names::WORKERS_STREAM)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_eq!(
            info.state.messages,
            4 + 2,
            "unacknowledged and other events stay"
        );
        assert_eq!(trim(&js, "acme").await.unwrap(), 0);
    }
}
