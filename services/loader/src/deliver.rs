//! Delivering one batch to Oomnitza. Records identical to what was last written, or older
//! than it, are settled without a request (see [`crate::applied`]). The rest are posted to
//! their portion in one bulk request, paced by the adaptive rate limit and retried while
//! Oomnitza answers transiently (exponential backoff with jitter, honouring `Retry-After`).
//! When Oomnitza refuses the body (400/422) the batch is split in halves until the refused
//! records stand alone; those are dead-lettered and the rest are loaded. While a request keeps
//! being retried, the events get progress acks ([`crate::progress`]) so the stream does not
//! hand them to another replica.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use backon::{BackoffBuilder, ExponentialBuilder};
use peoplesync_bus::{Bus, DeadLetter, Outcome};
use peoplesync_core::Integration;
use peoplesync_oomnitza::{BulkRequest, Error, ErrorKind, OomnitzaClient};
use serde_json::value::RawValue;

use crate::ack::{RetryCause, Settlement};
use crate::applied::{self, AppliedRecord, Fingerprint, Verdict};
use crate::batcher::Batch;
use crate::config::RetrySettings;
use crate::gates::{Failure, Gates};
use crate::limiter::AdaptiveLimiter;
use crate::pipeline::{Disposition, Item};

/// Posts batches for one replica.
#[derive(Clone)]
pub struct Deliverer {
    bus: Bus,
    client: OomnitzaClient,
    retry: RetrySettings,
    limiter: AdaptiveLimiter,
    gates: Gates,
    /// Bulk requests in flight at Oomnitza (`batch.in_flight`).
    requests: Arc<Semaphore>,
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
    Retry(Duration, String, RetryCause),
}

impl Deliverer {
    /// A deliverer posting with `client`, at most `in_flight` requests at once, paced by
    /// `limiter`, reporting credential failures to `gates`.
    pub fn new(
        bus: Bus,
        client: OomnitzaClient,
        retry: RetrySettings,
        limiter: AdaptiveLimiter,
        gates: Gates,
        in_flight: usize,
    ) -> Deliverer {
        Deliverer {
            bus,
            client,
            retry,
            limiter,
            gates,
            requests: Arc::new(Semaphore::new(in_flight.max(1))),
            canceled: Arc::default(),
        }
    }

    /// Delivers `batch` and decides how each of its events is settled.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Item, Settlement)> {
        let mut settled = Vec::with_capacity(batch.items.len());
        let mut to_send: Vec<Item> = Vec::new();
        for item in batch.items {
            match &item.disposition {
                Disposition::Send(_) => to_send.push(item),
                Disposition::Done(outcome, letter) => {
                    let settlement = Settlement::Done(*outcome, letter.clone());
                    settled.push((item, settlement));
                }
            }
        }
        let Some(integration) = batch.integration else {
            for item in to_send {
                let reason =
                    "no integration config was active when the event was mapped".to_owned();
                settled.push((
                    item,
                    Settlement::Retry(Duration::from_secs(5), reason, RetryCause::Configuration),
                ));
            }
            return settled;
        };
        if to_send.is_empty() {
            return settled;
        }
        let portion = batch.key.run_id.clone();

        // Change detection: only new or changed records are sent.
        // One fingerprint per item, in order: the verdicts are zipped back onto `to_send`.
        // The key and hash move into the fingerprint: the item keeps only the JSON it sends.
        let fingerprints: Vec<Fingerprint> = to_send
            .iter_mut()
            .map(|item| {
                let (key, hash) = match &mut item.disposition {
                    Disposition::Send(outgoing) => (
                        outgoing.applied_key.take(),
                        std::mem::take(&mut outgoing.hash),
                    ),
                    // Not in `to_send` (only records to send are); without a key it is sent.
                    Disposition::Done(..) => (None, String::new()),
                };
                Fingerprint {
                    key,
                    hash,
                    run_id: portion.clone(),
                    observed_at_ms: item.observed_at_ms,
                }
            })
            .collect();
        let verdicts = applied::check(&self.bus, &fingerprints).await;
        let mut sending = Vec::new();
        let mut sending_prints = Vec::new();
        for ((item, verdict), print) in to_send.into_iter().zip(verdicts).zip(fingerprints) {
            match verdict {
                Verdict::Send => {
                    sending.push(item);
                    sending_prints.push(print);
                }
                Verdict::Unchanged => {
                    settled.push((item, Settlement::Done(Outcome::Unchanged, None)))
                }
                Verdict::Stale => settled.push((item, Settlement::Done(Outcome::Stale, None))),
            }
        }
        if sending.is_empty() {
            return settled;
        }

        let mut results: Vec<Option<Delivered>> = (0..sending.len()).map(|_| None).collect();
        if self.is_canceled(&portion) {
            results
                .iter_mut()
                .for_each(|r| *r = Some(Delivered::Canceled));
        } else {
            let refs: Vec<&Item> = sending.iter().collect();
            let records: Vec<&RawValue> = refs.iter().map(|item| record_of(item)).collect();
            self.post_isolating(&integration, &portion, &records, &refs, 0, &mut results)
                .await;
        }

        let mut written = Vec::new();
        for ((item, result), print) in sending.into_iter().zip(results).zip(sending_prints) {
            let result = result.unwrap_or_else(|| {
                Delivered::Retry(
                    Duration::from_secs(5),
                    "not attempted".into(),
                    RetryCause::Transient,
                )
            });
            let settlement = match result {
                Delivered::Written => {
                    if let Some(key) = print.key {
                        let record = AppliedRecord {
                            hash: print.hash,
                            run_id: print.run_id,
                            observed_at_ms: print.observed_at_ms,
                        };
                        written.push((key, record));
                    }
                    Settlement::Done(Outcome::Written, None)
                }
                Delivered::Canceled => Settlement::Done(Outcome::Canceled, None),
                Delivered::Refused(refusal) => Settlement::Done(
                    Outcome::DeadLettered,
                    Some(Box::new(letter(&item, refusal))),
                ),
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
                Delivered::Retry(delay, reason, cause) => Settlement::Retry(delay, reason, cause),
            };
            settled.push((item, settlement));
        }
        applied::remember(&self.bus, &written).await;
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
        records: &[&RawValue],
        items: &[&Item],
        offset: usize,
        results: &mut [Option<Delivered>],
    ) {
        let outcome = self.post_with_retry(integration, portion, records).await;
        match outcome {
            Ok(()) => fill(results, offset, records.len(), || Delivered::Written),
            // A 404 for the bulk endpoint itself, or a redirect, means OOMNITZA_URL points at the
            // wrong place: no record is to blame, so nothing is split or dead-lettered.
            Err(err)
                if err.status() == Some(404)
                    || err.status().is_some_and(|s| (300..400).contains(&s)) =>
            {
                self.gates.set_failure(
                    Failure::Misconfigured,
                    Some(format!(
                        "{err}; check OOMNITZA_URL (it must be the tenant's base URL)"
                    )),
                );
                let reason = err.to_string();
                fill(results, offset, records.len(), || {
                    Delivered::Retry(
                        Duration::from_secs(5),
                        reason.clone(),
                        RetryCause::Configuration,
                    )
                });
            }
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
            Err(err) if err.kind() == ErrorKind::Rejected => {
                tracing::warn!(portion, error = %err, "Oomnitza refused a record; dead-lettering it");
                let refusal = Refusal {
                    message: format!("Oomnitza refused the record ({})", refusal_summary(&err)),
                    status: err.status(),
                    excerpt: err.body_excerpt().map(str::to_owned),
                };
                fill(results, offset, records.len(), || {
                    Delivered::Refused(refusal.clone())
                });
            }
            Err(err) if err.kind() == ErrorKind::Closed => match self.client.portion(portion).await
            {
                Ok(Some(status)) if status.canceled => {
                    tracing::warn!(
                        portion,
                        "the portion was canceled in Oomnitza; not sending more of this run"
                    );
                    if let Ok(mut set) = self.canceled.lock() {
                        set.insert(portion.to_owned());
                    }
                    fill(results, offset, records.len(), || Delivered::Canceled);
                }
                Ok(Some(status)) if status.finalized => {
                    fill(results, offset, records.len(), || Delivered::Finalized)
                }
                other => {
                    // Closed but neither canceled nor finalized, or unreadable: try again later.
                    let reason = match other {
                        Err(lookup) => format!("{err}; reading the portion failed: {lookup}"),
                        _ => err.to_string(),
                    };
                    fill(results, offset, records.len(), || {
                        Delivered::Retry(
                            Duration::from_secs(30),
                            reason.clone(),
                            RetryCause::Transient,
                        )
                    });
                }
            },
            Err(err) if err.kind() == ErrorKind::Unauthorized => {
                // The gate stops pulling until the credentials work again, so the events can
                // come back soon: they are not delivered while the gate is closed.
                self.gates
                    .set_failure(Failure::Credentials, Some(err.to_string()));
                let reason = err.to_string();
                fill(results, offset, records.len(), || {
                    Delivered::Retry(
                        Duration::from_secs(2),
                        reason.clone(),
                        RetryCause::Configuration,
                    )
                });
            }
            Err(err) => {
                // Transient answers outlasted the retries (or Oomnitza asked to wait longer than
                // a retry may): stop pulling until Oomnitza answers again, and hand the events
                // back with the delay Oomnitza asked for, or a growing one.
                let delay = err
                    .retry_after()
                    .unwrap_or_else(|| redelivery_delay(items.first().map_or(1, |i| i.delivered)));
                tracing::warn!(portion, error = %err, ?delay, "bulk request kept failing; events go back to the stream");
                self.gates
                    .set_failure(Failure::Unavailable, Some(err.to_string()));
                let reason = err.to_string();
                fill(results, offset, records.len(), || {
                    Delivered::Retry(delay, reason.clone(), RetryCause::Transient)
                });
            }
        }
    }

    /// One bulk request, retried while Oomnitza answers transiently.
    async fn post_with_retry(
        &self,
        integration: &Integration,
        portion: &str,
        records: &[&RawValue],
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
        loop {
            // A slot among the replica's `in_flight` requests, held for this attempt only: the
            // backoff below waits without one.
            let slot = self.requests.acquire().await.ok();
            self.limiter.acquire().await;
            let started = Instant::now();
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_IN_FLIGHT).increment(1.0);
            let result = self.client.post_bulk(&request).await;
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_IN_FLIGHT).decrement(1.0);
            drop(slot);
            metrics::histogram!(peoplesync_runtime::metrics::names::LOADER_BULK_REQUEST_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let status = match &result {
                Ok(()) => "200".to_owned(),
                Err(err) => err
                    .status()
                    .map_or_else(|| err.kind().to_string(), |s| s.to_string()),
            };
            metrics::counter!(peoplesync_runtime::metrics::names::LOADER_BULK_REQUESTS, "status" => status)
                .increment(1);
            let err = match result {
                Ok(()) => {
                    self.limiter.on_success();
                    return Ok(());
                }
                Err(err) if err.kind() == ErrorKind::Transient => err,
                Err(err) => return Err(err),
            };
            if err.status() == Some(429) {
                self.limiter.on_throttled();
            }
            let Some(backoff) = delays.next() else {
                return Err(err);
            };
            let delay = err
                .retry_after()
                .map_or(backoff, |after| after.max(backoff));
            tracing::debug!(portion, error = %err, ?delay, "bulk request failed transiently; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The JSON of an item that is being sent (only items with [`Disposition::Send`] are).
fn record_of(item: &Item) -> &RawValue {
    match &item.disposition {
        Disposition::Send(outgoing) => &outgoing.json,
        Disposition::Done(..) => {
            static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
            NULL.get_or_init(Box::default)
        }
    }
}

/// Oomnitza's answer in a few words for a dead letter's reason (the full body is kept in the
/// body-excerpt header).
fn refusal_summary(err: &Error) -> String {
    match (err.status(), err.body_excerpt()) {
        (Some(status), Some(body)) => format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        ),
        (Some(status), None) => format!("HTTP {status}"),
        _ => err.to_string(),
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
