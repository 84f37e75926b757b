//! Consuming worker events from the loaders' shared durable pull consumer. The stream of
//! messages never ends on its own: a missed heartbeat, a reconnect or a deleted-and-recreated
//! consumer is logged and consumption goes on, because a loader that silently stops pulling
//! looks healthy while nothing moves.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;

use crate::{Bus, BusError};

/// An endless source of worker events for one loader replica.
pub struct WorkStream {
    bus: Bus,
    batch: usize,
    consumer: Option<PullConsumer>,
    messages: Option<pull::Stream>,
}

impl std::fmt::Debug for WorkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkStream")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl WorkStream {
    /// Pulls at most `batch` messages per request, so work spreads across replicas.
    pub fn new(bus: Bus, batch: usize) -> WorkStream {
        WorkStream {
            bus,
            batch: batch.max(1),
            consumer: None,
            messages: None,
        }
    }

    /// The next message. Waits as long as it takes; errors are logged and retried, so the
    /// caller stops consuming only through its own cancellation.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            match self.try_next().await {
                Ok(Some(message)) => return message,
                Ok(None) => {
                    tracing::warn!("worker event stream ended; pulling again");
                    self.messages = None;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pulling worker events failed; retrying in 1s");
                    self.messages = None;
                    self.consumer = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_next(&mut self) -> Result<Option<jetstream::Message>, BusError> {
        if self.messages.is_none() {
            if self.consumer.is_none() {
                self.consumer = Some(self.bus.loader_consumer().await?);
            }
            let Some(consumer) = self.consumer.as_ref() else {
                return Ok(None);
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| BusError::request("starting to pull worker events", e))?;
            self.messages = Some(messages);
        }
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        loop {
            match messages.next().await {
                None => return Ok(None),
                Some(Ok(message)) => return Ok(Some(message)),
                Some(Err(err)) => {
                    use jetstream::consumer::pull::MessagesErrorKind as K;
                    match err.kind() {
                        // The library re-issues its pull; nothing is lost.
                        K::MissingHeartbeat => {
                            tracing::debug!("missed heartbeat while pulling; continuing")
                        }
                        K::ConsumerDeleted | K::NoResponders => {
                            return Err(BusError::request("pulling worker events", err));
                        }
                        _ => tracing::warn!(error = %err, "pull error; continuing"),
                    }
                }
            }
        }
    }
}
