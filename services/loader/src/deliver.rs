//! Delivering one batch to Oomnitza. Records identical to what was last written, or older
//! than it, are settled without a request (see [`crate::applied`]). The rest are posted to
//! their portion in one bulk request, paced by the adaptive rate limit and retried while
//! Oomnitza answers transiently (exponential backoff with jitter, honouring `Retry-After`).
//! When Oomnitza refuses a record (422, 413, …) the batch is split in halves until the refused
//! records stand alone; those are dead-lettered and the rest are loaded. A `400` is Oomnitza's
//! answer to the envelope as a whole (an unknown field id, for one): once one record posted
//! alone confirms it, the integration is paused with the reason (`Deliverer::refuse`) and its
//! events stay on the stream — every batch of the run would be refused the same way. Before a
//! batch, the portion's state is read when [`crate::cancel`] says it is due; a portion an
//! administrator canceled gets no more posts. While a request keeps being retried, the events
//! get progress acks ([`crate::progress`]) so the stream does not hand them to another replica.

use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use peoplesync_bus::{Bus, CancelNote, DeadLetter, Outcome, PauseFlag};
use peoplesync_core::Integration;
use peoplesync_oomnitza::{BulkRequest, Error, ErrorKind, OomnitzaClient};
use serde_json::value::RawValue;

use crate::ack::{RetryCause, Settlement};
use crate::applied::{self, Fingerprint, Verdict};
use crate::batcher::Batch;
use crate::cancel::{PortionWatches, Step};
use crate::config::RetrySettings;
use crate::gates::{Failure, Gates};
use crate::limiter::AdaptiveLimiter;
use crate::pipeline::{Disposition, Item};
use peoplesync_bus::applied::AppliedRecord;

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
    /// What this replica knows of each portion's cancel state.
    portions: Arc<PortionWatches>,
    /// This replica's name, for the run record's cancel note.
    replica: String,
}

/// How long events wait on the stream after a configuration refusal paused their integration.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

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
        replica: String,
    ) -> Deliverer {
        Deliverer {
            bus,
            client,
            retry,
            limiter,
            gates,
            requests: Arc::new(Semaphore::new(in_flight.max(1))),
            portions: Arc::default(),
            replica,
        }
    }

    /// Delivers `batch` and decides how each of its events is settled.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Item, Settlement)> {
        let mut settled = Vec::with_capacity(batch.items.len());
        let mut to_send: Vec<Item> = Vec::new();
        let mut refused: Vec<Item> = Vec::new();
        let mut leavers: Vec<Item> = Vec::new();
        for item in batch.items {
            match &item.disposition {
                Disposition::Send(_) => to_send.push(item),
                Disposition::Refused(_) => refused.push(item),
                Disposition::Leaver(_) => leavers.push(item),
                Disposition::Done(outcome, letter) => {
                    let settlement = Settlement::Done(*outcome, letter.clone());
                    settled.push((item, settlement));
                }
            }
        }
        let Some(integration) = batch.integration else {
            settled.extend(refused.into_iter().map(dead_lettered));
            for item in to_send.into_iter().chain(leavers) {
                let reason =
                    "no integration config was active when the event was mapped".to_owned();
                settled.push((
                    item,
                    Settlement::Retry(Duration::from_secs(5), reason, RetryCause::Configuration),
                ));
            }
            return settled;
        };
        settled.extend(
            crate::leavers::handle_all(&self.bus, &self.client, &integration, leavers).await,
        );
        let portion = batch.key.run_id.clone();
        if !refused.is_empty() {
            let target = Target {
                integration: &integration,
                portion: &portion,
                revision: batch.key.revision,
            };
            self.report_refused(&target, &refused).await;
            settled.extend(refused.into_iter().map(dead_lettered));
        }
        if to_send.is_empty() {
            return settled;
        }
        // Paused because Oomnitza refused this integration's records as a whole: batches
        // already on their way are not posted either; their events wait on the stream.
        if let Some((_, reason)) = self.gates.refusal(&batch.key.integration) {
            for item in to_send {
                let settlement =
                    Settlement::Retry(REFUSED_RETRY, reason.clone(), RetryCause::Configuration);
                settled.push((item, settlement));
            }
            return settled;
        }

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
                    Disposition::Done(..) | Disposition::Refused(_) | Disposition::Leaver(_) => {
                        (None, String::new())
                    }
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
                // Drift repair: sent whatever was last written.
                Verdict::Send | Verdict::Unchanged if item.resend => {
                    sending.push(item);
                    sending_prints.push(print);
                }
                Verdict::Send => {
                    sending.push(item);
                    sending_prints.push(print);
                }
                Verdict::Unchanged => {
                    settled.push((item, Settlement::Done(Outcome::Unchanged, None)))
                }
                Verdict::WrittenByThisRun => {
                    // Its outcome keeps the key and record, as for a write, for the check.
                    let mut item = item;
                    if let Disposition::Send(outgoing) = &mut item.disposition {
                        outgoing.applied_key = print.key;
                    }
                    settled.push((item, Settlement::Done(Outcome::Written, None)))
                }
                Verdict::Stale => settled.push((item, Settlement::Done(Outcome::Stale, None))),
            }
        }
        if sending.is_empty() {
            return settled;
        }

        let mut results: Vec<Option<Delivered>> = (0..sending.len()).map(|_| None).collect();
        if self
            .admit(&batch.key.integration, &portion, sending.len())
            .await
        {
            results
                .iter_mut()
                .for_each(|r| *r = Some(Delivered::Canceled));
        } else {
            let refs: Vec<&Item> = sending.iter().collect();
            let records: Vec<&RawValue> = refs.iter().map(|item| record_of(item)).collect();
            let target = Target {
                integration: &integration,
                portion: &portion,
                revision: batch.key.revision,
            };
            self.post_isolating(&target, &records, &refs, 0, &mut results)
                .await;
        }

        let mut written = Vec::new();
        for ((mut item, result), print) in sending.into_iter().zip(results).zip(sending_prints) {
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
                        // The outcome keeps the key: a record Oomnitza does not apply, or
                        // one posted to a portion canceled later, has its hash dropped again.
                        if let Disposition::Send(outgoing) = &mut item.disposition {
                            outgoing.applied_key = Some(key.clone());
                        }
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
        self.bus.applied().remember(&written).await;
        settled
    }

    /// Whether `portion` was canceled in Oomnitza, before posting `records` records to it:
    /// starts a read of the portion's state when [`crate::cancel`] says it is due (waiting for
    /// a read in flight only when too many records were posted past the last one). No read is
    /// made while Oomnitza cannot take records.
    async fn admit(&self, integration: &str, portion: &str, records: usize) -> bool {
        if self.gates.failure().is_some() {
            return self.portions.is_canceled(portion);
        }
        let records = u64::try_from(records).unwrap_or(u64::MAX);
        loop {
            match self.portions.step(portion, records, Instant::now()) {
                Step::Post => return false,
                Step::Canceled { first } => {
                    if first {
                        self.note_canceled(integration, portion).await;
                    }
                    return true;
                }
                Step::Wait(mut reads) => {
                    // Bounded: a read in flight ends (its request has a timeout).
                    let _ = reads.changed().await;
                }
                Step::Read { issued } => {
                    let (client, portions, gates) = (
                        self.client.clone(),
                        Arc::clone(&self.portions),
                        self.gates.clone(),
                    );
                    let portion = portion.to_owned();
                    tokio::spawn(async move {
                        let canceled = match client.portion(&portion).await {
                            Ok(status) => Some(status.is_some_and(|s| s.canceled)),
                            Err(err) if err.kind() == ErrorKind::Unauthorized => {
                                gates.set_failure(Failure::Credentials, Some(err.to_string()));
                                None
                            }
                            Err(err) => {
                                tracing::debug!(portion, error = %err, "cannot read the portion's state; going on");
                                None
                            }
                        };
                        portions.read_done(&portion, issued, canceled);
                    });
                }
            }
        }
    }

    /// Remembers that `portion` was canceled, and notes it on the run record (once per replica).
    async fn mark_canceled(&self, integration: &str, portion: &str) {
        if self.portions.mark_canceled(portion, Instant::now()) {
            self.note_canceled(integration, portion).await;
        }
    }

    /// Notes on the run record that `portion` was seen canceled (the first replica's note stays).
    async fn note_canceled(&self, integration: &str, portion: &str) {
        tracing::warn!(
            integration,
            portion,
            "the portion was canceled in Oomnitza; not sending more of this run"
        );
        let note = CancelNote {
            noticed_by: self.replica.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let runs = self.bus.runs();
        let noted = runs
            .update(integration, portion, |record| {
                let new = record.canceled.is_none();
                if new {
                    record.canceled = Some(note.clone());
                }
                new
            })
            .await;
        if let Err(err) = noted {
            tracing::warn!(integration, portion, error = %err, "cannot note the cancel on the run record");
        }
    }

    /// Reports records the mapping refused to Oomnitza as failed — as they came from Sage
    /// People, with the bulk envelope's `error` set to the reason (one request per reason) —
    /// so they show in the run's log in Oomnitza, as its own connector's do. Best effort: the
    /// dead letter is what peoplesync keeps; a report that fails is logged. Nothing is reported
    /// to a canceled portion or while a configuration refusal holds the integration.
    async fn report_refused(&self, target: &Target<'_>, items: &[Item]) {
        let integration = &target.integration.config().id;
        if self.gates.refusal(integration).is_some()
            || self.admit(integration, target.portion, items.len()).await
        {
            return;
        }
        let mut by_reason: std::collections::BTreeMap<&str, Vec<Box<RawValue>>> =
            std::collections::BTreeMap::new();
        for item in items {
            let Disposition::Refused(letter) = &item.disposition else {
                continue;
            };
            let raw = peoplesync_bus::codec::decode_worker_event(&item.message.payload)
                .ok()
                .and_then(|event| String::from_utf8(event.raw.to_vec()).ok())
                .and_then(|raw| RawValue::from_string(raw).ok());
            if let Some(raw) = raw {
                by_reason.entry(&letter.reason).or_default().push(raw);
            }
        }
        for (reason, records) in by_reason {
            let records: Vec<&RawValue> = records.iter().map(|r| &**r).collect();
            if let Err(err) = self.post_with_retry(target, &records, Some(reason)).await {
                tracing::warn!(integration, portion = target.portion, error = %err,
                    "cannot report records the mapping refused to Oomnitza; they are dead-lettered");
            }
        }
    }

    /// Pauses `target`'s integration because Oomnitza refused its records as a whole with
    /// `err` (a `400`: the envelope, such as a field id the tenant does not have), and returns
    /// the reason given to operators. Every replica stops loading it (the pause flag in KV) until
    /// a newer config is stored or an operator resumes it.
    async fn refuse(&self, target: &Target<'_>, err: &Error) -> String {
        let integration = &target.integration.config().id;
        let reason = format!(
            "Oomnitza refused the records of integration {integration} as a whole ({}): this is a \
             configuration error, not a bad record. Fix the integration config (for example a \
             mapped field id that the tenant does not have) and store it with `syncctl \
             integration put`, which resumes loading; or fix it in Oomnitza and run `syncctl \
             resume {integration}`",
            refusal_summary(err)
        );
        if self.gates.refusal(integration).is_some() {
            return reason;
        }
        tracing::error!(integration, portion = target.portion, config_revision = target.revision, %reason,
            "pausing the integration: Oomnitza refused its records as a whole");
        let flag = PauseFlag::refused(target.revision, reason.clone());
        match self.bus.pauses().set(integration, &flag).await {
            Ok(revision) => self.gates.set_flag(integration, Some(&flag), revision),
            Err(bus) => {
                // The next flag the watch delivers (an operator's resume, say) still applies;
                // a batch refused again pauses this replica again.
                tracing::error!(integration, error = %bus, "cannot store the pause flag; pausing this replica only");
                self.gates.set_flag_locally(integration, &flag);
            }
        }
        reason
    }

    /// Posts `records` (at `offset` in the batch); on a refusal, halves and recurses until the
    /// refused records stand alone.
    async fn post_isolating(
        &self,
        target: &Target<'_>,
        records: &[&RawValue],
        items: &[&Item],
        offset: usize,
        results: &mut [Option<Delivered>],
    ) {
        let portion = target.portion;
        let outcome = self.post_with_retry(target, records, None).await;
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
            Err(err) if is_envelope_refusal(&err) => {
                // Confirmed when one record alone is refused the same way: then no record is to
                // blame. If it is taken, the refusal was about a record after all: isolate.
                let confirmed = if records.len() > 1 {
                    match self.post_with_retry(target, &records[..1], None).await {
                        Ok(()) => {
                            fill(results, offset, 1, || Delivered::Written);
                            Box::pin(self.post_isolating(
                                target,
                                &records[1..],
                                &items[1..],
                                offset + 1,
                                results,
                            ))
                            .await;
                            return;
                        }
                        Err(again) => is_envelope_refusal(&again),
                    }
                } else {
                    true
                };
                let (reason, cause) = if confirmed {
                    (self.refuse(target, &err).await, RetryCause::Configuration)
                } else {
                    (err.to_string(), RetryCause::Transient)
                };
                fill(results, offset, records.len(), || {
                    Delivered::Retry(REFUSED_RETRY, reason.clone(), cause)
                });
            }
            Err(err) if err.kind() == ErrorKind::Rejected && records.len() > 1 => {
                let mid = records.len() / 2;
                Box::pin(self.post_isolating(
                    target,
                    &records[..mid],
                    &items[..mid],
                    offset,
                    results,
                ))
                .await;
                Box::pin(self.post_isolating(
                    target,
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
                    self.mark_canceled(&target.integration.config().id, portion)
                        .await;
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
        target: &Target<'_>,
        records: &[&RawValue],
        error: Option<&str>,
    ) -> Result<(), Error> {
        let (integration, portion) = (target.integration, target.portion);
        let config = integration.config();
        let request = BulkRequest {
            portion,
            sync_field: integration.sync_field(),
            insert_only: config.preference.insert_only(),
            update_only: config.preference.update_only(),
            records,
            error,
        };
        let policy = peoplesync_retry::RetryPolicy {
            max_attempts: self.retry.max_attempts,
            initial_delay: Duration::from_millis(self.retry.initial_delay_ms),
            max_delay: Duration::from_millis(self.retry.max_delay_ms),
            max_elapsed: Duration::from_secs(self.retry.max_elapsed_secs),
        };
        let request = &request;
        peoplesync_retry::retry(&policy, "Oomnitza bulk", || async move {
            // A slot among the replica's `in_flight` requests, held for this attempt only: the
            // backoff between attempts waits without one.
            let slot = self.requests.acquire().await.ok();
            self.limiter.acquire().await;
            let started = Instant::now();
            metrics::gauge!(peoplesync_runtime::metrics::names::LOADER_IN_FLIGHT).increment(1.0);
            let result = self.client.post_bulk(request).await;
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
            match &result {
                Ok(()) => self.limiter.on_success(),
                Err(err) if err.status() == Some(429) => self.limiter.on_throttled(),
                Err(err) if err.kind() == ErrorKind::Transient => {
                    tracing::debug!(portion, error = %err, "bulk request failed transiently");
                }
                Err(_) => {}
            }
            result
        })
        .await
        .map_err(|gave_up| gave_up.error)
    }
}

/// Where a batch goes: its integration's config (and that config's KV revision) and portion.
struct Target<'a> {
    integration: &'a Integration,
    portion: &'a str,
    revision: u64,
}

/// Whether Oomnitza refused the request as a whole: a `400` is its answer to the envelope
/// (reference: missing portion, unknown data type, an unknown field id), not to one record.
fn is_envelope_refusal(err: &Error) -> bool {
    err.kind() == ErrorKind::Rejected && err.status() == Some(400)
}

/// The JSON of an item that is being sent (only items with [`Disposition::Send`] are).
fn record_of(item: &Item) -> &RawValue {
    match &item.disposition {
        Disposition::Send(outgoing) => &outgoing.json,
        Disposition::Done(..) | Disposition::Refused(_) | Disposition::Leaver(_) => {
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

/// The settlement of an item the mapping refused: dead-lettered with its reason.
fn dead_lettered(item: Item) -> (Item, Settlement) {
    let letter = match &item.disposition {
        Disposition::Refused(letter) => Some(letter.clone()),
        _ => None,
    };
    (item, Settlement::Done(Outcome::DeadLettered, letter))
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
