//! Settling events after delivery: record each event's outcome (and dead letter) on the bus,
//! wait until those are stored, and only then ack the events. An event whose delivery must be
//! tried again is nak'ed with a delay, so the stream hands it back later. On its last allowed
//! delivery, an event that kept failing transiently is dead-lettered with its last error; one
//! held back only by the loader's own configuration (credentials refused, wrong URL) is
//! requeued as a fresh message instead, because nothing is wrong with the record. Outcomes and
//! dead letters keep the event's own id, so a requeued copy is still counted once.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use peoplesync_bus::{Bus, BusError, DeadLetter, Outcome, dlq};

use crate::pipeline::{Disposition, Item};

/// What to do with one delivered event.
#[derive(Debug)]
pub enum Settlement {
    /// Done: record the outcome (and dead letter), then ack.
    Done(Outcome, Option<Box<DeadLetter>>),
    /// Try again later: nak with this delay, for this reason and cause.
    Retry(Duration, String, RetryCause),
    /// A fresh copy was published: ack the original without an outcome.
    Requeued,
}

/// Why an event must be tried again, which decides what happens at its last delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// Oomnitza (or NATS) kept failing: dead-letter it at the limit.
    Transient,
    /// The loader cannot send anything (credentials, URL): requeue it at the limit.
    Configuration,
    /// Oomnitza accepted what was posted and has not processed it yet (its run log shows
    /// records processing): nothing failed, so requeue it at the limit.
    Processing,
    /// Not tried: the intake closed (Oomnitza down, or refusing the token) before its turn
    /// came, so nothing failed for it: requeue it at the limit.
    Held,
}

impl RetryCause {
    /// Whether an event retried for this cause is published again as a fresh message at its
    /// last delivery instead of being dead-lettered.
    fn requeues(self) -> bool {
        matches!(
            self,
            RetryCause::Configuration | RetryCause::Processing | RetryCause::Held
        )
    }
}

/// Settles `items`; returns the outcomes recorded. `max_deliver` is the consumer's limit.
pub async fn settle(
    bus: &Bus,
    items: Vec<(Item, Settlement)>,
    max_deliver: u64,
) -> Result<Vec<Outcome>, BusError> {
    let mut requeue = bus.publisher(64);
    for (item, settlement) in &items {
        if let Settlement::Retry(_, reason, cause) = settlement
            && cause.requeues()
            && item.delivered >= max_deliver
        {
            let sequence = item.message.stream_sequence;
            tracing::warn!(msg_id = %item.msg_id, deliveries = item.delivered, ?cause, %reason,
                "the event could not be settled by its last delivery (the loader cannot send, Oomnitza is still processing, or the intake closed before its turn); requeuing it as a fresh message");
            requeue
                .publish(
                    item.message.subject.to_string(),
                    format!("{}.requeue.{sequence}", item.msg_id),
                    item.message.payload.clone(),
                    None,
                )
                .await?;
        }
    }
    requeue.flush().await?;
    let items: Vec<(Item, Settlement)> = items
        .into_iter()
        .map(|(item, settlement)| match settlement {
            // The copy is stored; the original is done.
            Settlement::Retry(_, _, cause) if cause.requeues() && item.delivered >= max_deliver => {
                (item, Settlement::Requeued)
            }
            Settlement::Retry(_, reason, RetryCause::Transient)
                if item.delivered >= max_deliver =>
            {
                let letter = DeadLetter {
                    integration: item.key.integration.clone(),
                    run_id: item.key.run_id.clone(),
                    worker_id: item.worker_id.clone(),
                    reason: format!("gave up after {} deliveries: {reason}", item.delivered),
                    stage: "delivery".into(),
                    attempts: item.delivered,
                    original_subject: item.message.subject.to_string(),
                    ..Default::default()
                };
                (
                    item,
                    Settlement::Done(Outcome::DeadLettered, Some(Box::new(letter))),
                )
            }
            other => (item, other),
        })
        .collect();
    let mut outcomes = bus.outcome_recorder(items.len().max(1));
    let mut recorded = Vec::new();
    for (item, settlement) in &items {
        if let Settlement::Done(outcome, letter) = settlement {
            if let Some(letter) = letter {
                dlq::record(bus, letter, item.message.payload.clone()).await?;
            }
            match (&item.disposition, outcome) {
                // What was sent is kept with the outcome, for the check after finalize.
                (Disposition::Send(sent), Outcome::Written) => outcomes.record_written(
                    &item.key.integration,
                    &item.key.run_id,
                    &item.msg_id,
                    &item.worker_id,
                    sent.applied_key.as_deref().unwrap_or_default(),
                    sent.json.get(),
                ),
                _ => {
                    outcomes
                        .record(
                            &item.key.integration,
                            &item.key.run_id,
                            &item.msg_id,
                            &item.worker_id,
                            *outcome,
                        )
                        .await?
                }
            }
            recorded.push(*outcome);
        }
    }
    // Dead letters first (each is stored when `dlq::record` returns): an outcome says the
    // event is dealt with, so its letter must exist.
    outcomes.flush().await?;
    // One after another: an ack is handed to the connection's queue, not awaited at the server.
    for (item, settlement) in &items {
        let kind = match settlement {
            Settlement::Done(..) | Settlement::Requeued => AckKind::Ack,
            Settlement::Retry(delay, ..) => AckKind::Nak(Some(*delay)),
        };
        if let Err(err) = item.message.ack_with(bus.client(), kind).await {
            // The event comes back after ack_wait; its outcome is deduplicated then.
            tracing::warn!(msg_id = %item.msg_id, error = %err, "ack failed; the event will be redelivered");
        }
    }
    if let Some((item, _)) = items.first() {
        for outcome in Outcome::ALL {
            let n = recorded.iter().filter(|o| **o == outcome).count();
            if n > 0 {
                metrics::counter!(peoplesync_runtime::metrics::names::LOADER_EVENTS,
                    "integration" => item.key.integration.clone(), "outcome" => outcome.as_str())
                .increment(n as u64);
            }
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_transient_failure_is_dead_lettered_at_the_last_delivery() {
        assert!(!RetryCause::Transient.requeues());
        for nothing_failed in [
            RetryCause::Configuration,
            RetryCause::Processing,
            RetryCause::Held,
        ] {
            assert!(nothing_failed.requeues(), "{nothing_failed:?}");
        }
    }
}
