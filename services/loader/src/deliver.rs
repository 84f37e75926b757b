//! Delivering one batch to Oomnitza: post the records of a portion in one bulk request,
//! retrying transient failures with exponential backoff and jitter (honouring `Retry-After`);
//! when Oomnitza refuses the body (400/422), split the batch in halves until the refused
//! records are isolated, dead-letter those and load the rest. While a request keeps being
//! retried, the events get progress acks so the stream does not hand them to another replica.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use peoplesync_bus::{DeadLetter, Outcome};
use peoplesync_core::Integration;
use peoplesync_oomnitza::{BulkRequest, Error, ErrorKind, OomnitzaClient};
use serde_json::{Map, Value};

use crate::ack::{self, Settlement};
use crate::batcher::Batch;
use crate::config::RetrySettings;
use crate::pipeline::{Disposition, Item};

/// Posts batches for one replica.
#[derive(Clone)]
pub struct Deliverer {
    client: OomnitzaClient,
    retry: RetrySettings,
    ack_wait: Duration,
    /// Portions Oomnitza reported canceled: nothing more is sent to them.
    canceled: Arc<Mutex<HashSet<String>>>,
}

/// Oomnitza's answer to a refused record, as kept in its dead letter.
#[derive(Debug, Clone)]
struct Refusal {
    message: String,
    status: Option<u16>,
    excerpt: Option<String>,
}

/// What happened to one record of a batch.
#[derive(Debug)]
enum Delivered {
    Written,
    Refused(Refusal),
    Canceled,
    Finalized,
    Retry(Duration),
}

impl Deliverer {
    /// A deliverer posting with `client`.
    pub fn new(client: OomnitzaClient, retry: RetrySettings, ack_wait: Duration) -> Deliverer {
        Deliverer {
            client,
            retry,
            ack_wait,
            canceled: Arc::default(),
        }
    }

    /// Delivers `batch` and decides how each of its events is settled.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Item, Settlement)> {
        let mut settled = Vec::with_capacity(batch.items.len());
        let mut to_send: Vec<Item> = Vec::new();
        for item in batch.items {
            match item.disposition {
                Disposition::Send(_) => to_send.push(item),
                Disposition::Done(outcome, ref letter) => {
                    let settlement = Settlement::Done(outcome, letter.clone());
                    settled.push((item, settlement));
                }
            }
        }
        if to_send.is_empty() {
            return settled;
        }
        let Some(integration) = batch.integration else {
            // Unreachable in practice: Send items always carry their config.
            for item in to_send {
                settled.push((item, Settlement::Retry(Duration::from_secs(5))));
            }
            return settled;
        };
        let portion = batch.key.run_id.clone();
        let records: Vec<Map<String, Value>> = to_send
            .iter()
            .map(|item| match &item.disposition {
                Disposition::Send(record) => record.clone(),
                Disposition::Done(..) => Map::new(),
            })
            .collect();
        let refs: Vec<&Item> = to_send.iter().collect();
        let mut results: Vec<Option<Delivered>> = (0..records.len()).map(|_| None).collect();
        if self.is_canceled(&portion) {
            results
                .iter_mut()
                .for_each(|r| *r = Some(Delivered::Canceled));
        } else {
            self.post_isolating(&integration, &portion, &records, &refs, 0, &mut results)
                .await;
        }
        for (item, result) in to_send.into_iter().zip(results) {
            let settlement = match result.unwrap_or(Delivered::Retry(Duration::from_secs(5))) {
                Delivered::Written => Settlement::Done(Outcome::Written, None),
                Delivered::Canceled => Settlement::Done(Outcome::Canceled, None),
                Delivered::Refused(refusal) => {
                    let letter = letter(&item, refusal);
                    Settlement::Done(Outcome::DeadLettered, Some(Box::new(letter)))
                }
                Delivered::Finalized => {
                    let refusal = Refusal {
                        message: format!(
                            "portion {portion} was finalized before this record was loaded; replay it from the DLQ"
                        ),
                        status: Some(409),
                        excerpt: None,
                    };
                    Settlement::Done(
                        Outcome::DeadLettered,
                        Some(Box::new(letter(&item, refusal))),
                    )
                }
                Delivered::Retry(delay) => Settlement::Retry(delay),
            };
            settled.push((item, settlement));
        }
        settled
    }

    fn is_canceled(&self, portion: &str) -> bool {
        self.canceled.lock().is_ok_and(|set| set.contains(portion))
    }

    /// Posts `records` (at `offset` in the batch); on a refusal, halves and recurses until the
    /// refused records stand alone.
    async fn post_isolating(
        &self,
        integration: &Integration,
        portion: &str,
        records: &[Map<String, Value>],
        items: &[&Item],
        offset: usize,
        results: &mut [Option<Delivered>],
    ) {
        let outcome = self
            .post_with_retry(integration, portion, records, items)
            .await;
        match outcome {
            Ok(()) => fill(results, offset, records.len(), || Delivered::Written),
            Err(err) if err.kind() == ErrorKind::Rejected && records.len() > 1 => {
                let mid = records.len() / 2;
                Box::pin(self.post_isolating(
                    integration,
                    portion,
                    &records[..mid],
                    &items[..mid],
                    offset,
                    results,
                ))
                .await;
                Box::pin(self.post_isolating(
                    integration,
                    portion,
                    &records[mid..],
                    &items[mid..],
                    offset + mid,
                    results,
                ))
                .await;
            }
            Err(err)
                if err.kind() == ErrorKind::Rejected
                    || err.kind() == ErrorKind::InvalidResponse =>
            {
                tracing::warn!(portion, error = %err, "Oomnitza refused a record; dead-lettering it");
                let refusal = Refusal {
                    message: format!("Oomnitza refused the record: {err}"),
                    status: err.status(),
                    excerpt: err.body_excerpt().map(str::to_owned),
                };
                fill(results, offset, records.len(), || {
                    Delivered::Refused(refusal.clone())
                });
            }
            Err(err) if err.kind() == ErrorKind::Closed => {
                let canceled = match self.client.portion(portion).await {
                    Ok(Some(status)) => status.canceled,
                    _ => false,
                };
                if canceled {
                    tracing::warn!(
                        portion,
                        "the portion was canceled in Oomnitza; not sending more of this run"
                    );
                    if let Ok(mut set) = self.canceled.lock() {
                        set.insert(portion.to_owned());
                    }
                    fill(results, offset, records.len(), || Delivered::Canceled);
                } else {
                    fill(results, offset, records.len(), || Delivered::Finalized);
                }
            }
            Err(err) if err.kind() == ErrorKind::Unauthorized => {
                tracing::error!(error = %err, "Oomnitza refused the loader's credentials; events go back to the stream and are retried in 60s");
                fill(results, offset, records.len(), || {
                    Delivered::Retry(Duration::from_secs(60))
                });
            }
            Err(err) => {
                let delay = redelivery_delay(items.first().map_or(1, |i| i.delivered));
                tracing::warn!(portion, error = %err, ?delay, "bulk request kept failing; events go back to the stream");
                fill(results, offset, records.len(), || Delivered::Retry(delay));
            }
        }
    }

    /// One bulk request, retried while Oomnitza answers transiently.
    async fn post_with_retry(
        &self,
        integration: &Integration,
        portion: &str,
        records: &[Map<String, Value>],
        items: &[&Item],
    ) -> Result<(), Error> {
        let config = integration.config();
        let request = BulkRequest {
            portion,
            sync_field: integration.sync_field(),
            insert_only: config.preference.insert_only(),
            update_only: config.preference.update_only(),
            records,
            error: None,
        };
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.initial_delay_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_delay_ms))
            .with_max_times(self.retry.max_attempts.saturating_sub(1))
            .with_total_delay(Some(Duration::from_secs(self.retry.max_elapsed_secs)))
            .with_jitter()
            .build();
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let err = match self.client.post_bulk(&request).await {
                Ok(()) => return Ok(()),
                Err(err) if err.kind() == ErrorKind::Transient => err,
                Err(err) => return Err(err),
            };
            let Some(backoff) = delays.next() else {
                return Err(err);
            };
            let delay = err
                .retry_after()
                .map_or(backoff, |after| after.max(backoff));
            tracing::debug!(portion, error = %err, ?delay, "bulk request failed transiently; retrying");
            if last_progress.elapsed() + delay >= self.ack_wait / 2 {
                ack::progress(items).await;
                last_progress = tokio::time::Instant::now();
            }
            tokio::time::sleep(delay).await;
        }
    }
}

fn letter(item: &Item, refusal: Refusal) -> DeadLetter {
    DeadLetter {
        integration: item.key.integration.clone(),
        run_id: item.key.run_id.clone(),
        worker_id: item.worker_id.clone(),
        reason: refusal.message,
        stage: "oomnitza".into(),
        http_status: refusal.status,
        body_excerpt: refusal.excerpt,
        attempts: item.delivered,
        original_subject: item.message.subject.to_string(),
    }
}

fn fill(
    results: &mut [Option<Delivered>],
    offset: usize,
    len: usize,
    make: impl Fn() -> Delivered,
) {
    for slot in results.iter_mut().skip(offset).take(len) {
        *slot = Some(make());
    }
}

/// How long an event waits before it is delivered again after in-process retries ran out:
/// longer each time, at most five minutes.
fn redelivery_delay(delivered: u64) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << delivered.min(6));
    Duration::from_secs(secs.min(300))
}
