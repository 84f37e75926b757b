//! Posting a batch's records to their portion: one bulk request, paced by the adaptive rate
//! limit and retried while Oomnitza answers transiently (exponential backoff with jitter,
//! honouring `Retry-After`). When Oomnitza refuses a record (422, 413, …) the records are split
//! in halves until the refused ones stand alone; those are dead-lettered and the rest are
//! loaded. A `400` is Oomnitza's answer to the envelope as a whole (an unknown field id, for
//! one): once one record posted alone confirms it, the integration is paused with the reason
//! ([`refuse_as_a_whole`], which a leaver update refused the same way uses too) and its events
//! stay on the stream — every batch of the run would be refused the same way. Each record's
//! result is kept on the record itself.

use std::time::{Duration, Instant};

use peoplesync_bus::{Bus, PauseFlag};
use peoplesync_core::Integration;
use peoplesync_oomnitza::{BulkRequest, Error, ErrorKind, OomnitzaClient};
use serde_json::value::RawValue;

use super::{Deliverer, Record};
use crate::ack::RetryCause;
use crate::gates::{Failure, Gates};

/// How long events wait on the stream after a configuration refusal paused their integration.
pub(crate) const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Oomnitza's answer to a refused record, as kept in its dead letter.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) message: String,
    pub(super) status: Option<u16>,
    pub(super) excerpt: Option<String>,
}

/// What posting made of one record.
#[derive(Debug, Clone)]
pub(super) enum Delivered {
    /// Oomnitza accepted it (a `2xx`: accepted, not yet confirmed as applied).
    Written,
    /// Oomnitza refused this record: it is dead-lettered.
    Refused(Refusal),
    /// Its portion was canceled in Oomnitza.
    Canceled,
    /// Its portion was finalized before it was loaded.
    Finalized,
    /// Try again later: after this delay, for this reason and cause.
    Retry(Duration, String, RetryCause),
}

/// What came of a bulk request that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Posted {
    /// Oomnitza accepted it.
    Accepted,
    /// Not sent: an operator paused the integration while the request waited for its turn.
    Paused,
}

/// The result of records held back by a pause: back to the stream, not counted as failed;
/// they are not pulled again while the pause lasts.
pub(super) fn paused() -> Delivered {
    Delivered::Retry(PAUSED_RETRY, PAUSED.to_owned(), RetryCause::Held)
}

/// How soon events held back by a pause go back to the stream.
pub(super) const PAUSED_RETRY: Duration = Duration::from_secs(2);

/// Why events held back by a pause wait.
pub(super) const PAUSED: &str = "the integration is paused";

/// Where a batch goes: its integration's config (and that config's KV revision) and portion.
pub(crate) struct Target<'a> {
    pub(crate) integration: &'a Integration,
    pub(crate) portion: &'a str,
    pub(crate) revision: u64,
}

/// Pauses `target`'s integration because Oomnitza refused its records as a whole with `err` (a
/// `400`: the envelope, such as a field id the tenant does not have), and returns the reason
/// given to operators. Every replica stops loading it (the pause flag in KV) until a newer config
/// is stored or an operator resumes it. Used for bulk posts and leaver updates alike.
pub(crate) async fn refuse_as_a_whole(
    bus: &Bus,
    client: &OomnitzaClient,
    gates: &Gates,
    target: &Target<'_>,
    err: &Error,
) -> String {
    let integration = &target.integration.config().id;
    let reason = format!(
        "Oomnitza refused the records of integration {integration} as a whole ({}): this is a \
         configuration error, not a bad record. Fix the integration config (for example a \
         mapped field id that the tenant does not have) and store it with `syncctl \
         integration put`, which resumes loading; or fix it in Oomnitza and run `syncctl \
         resume {integration}`",
        refusal_summary(err)
    );
    if gates.refusal(integration).is_some() {
        return reason;
    }
    // Paused here at once, so this replica's other batches wait instead of each probing.
    let answered = PauseFlag::refused(target.revision, reason.clone());
    gates.set_flag_locally(integration, &answered);
    let reason = naming_every_unknown_field(client, target.integration, reason).await;
    tracing::error!(integration, portion = target.portion, config_revision = target.revision, %reason,
        "pausing the integration: Oomnitza refused its records as a whole");
    let flag = PauseFlag::refused(target.revision, reason.clone());
    match bus.pauses().set(integration, &flag).await {
        Ok(revision) => gates.set_flag(integration, Some(&flag), revision),
        Err(bus) => {
            // The next flag the watch delivers (an operator's resume, say) still applies;
            // a batch refused again pauses this replica again.
            tracing::error!(integration, error = %bus, "cannot store the pause flag; pausing this replica only");
            gates.set_flag_locally(integration, &flag);
        }
    }
    reason
}

/// The reason to pause with: a refusal may name only the first field id Oomnitza does not
/// know (how many it names is unpublished), so the probe `syncctl check` and the start-up
/// check make (repeated test runs, nothing applied) names every one, and one fix of the
/// config is enough. When the probe names none, or cannot be made, `answered` stands.
async fn naming_every_unknown_field(
    client: &OomnitzaClient,
    integration: &Integration,
    answered: String,
) -> String {
    let config = integration.config();
    match peoplesync_control::probe_mapped_fields(client, config).await {
        Ok(probe) => match crate::startup::finding(&config.id, probe) {
            crate::startup::Finding::Unknown(reason) => reason,
            _ => answered,
        },
        Err(err) => {
            tracing::warn!(integration = %config.id, error = %err,
                "cannot ask Oomnitza which mapped field ids it does not know; pausing with its refusal");
            answered
        }
    }
}

impl Deliverer {
    /// Posts `records`; on a refusal, halves and recurses until the refused records stand
    /// alone. Each record's result is set on it.
    pub(super) async fn post_isolating(&self, target: &Target<'_>, records: &mut [Record]) {
        let portion = target.portion;
        let outcome = {
            let jsons: Vec<&RawValue> = records.iter().map(Record::json).collect();
            self.post_with_retry(target, &jsons, None).await
        };
        match outcome {
            Ok(Posted::Accepted) => set_all(records, &Delivered::Written),
            Ok(Posted::Paused) => set_all(records, &paused()),
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
                let retry = Delivered::Retry(
                    Duration::from_secs(5),
                    err.to_string(),
                    RetryCause::Configuration,
                );
                set_all(records, &retry);
            }
            Err(err) if is_envelope_refusal(&err) => {
                // Confirmed when one record alone is refused the same way: then no record is to
                // blame. If it is taken, the refusal was about a record after all: isolate.
                let confirmed = match records.split_first_mut() {
                    Some((first, rest)) if !rest.is_empty() => {
                        match self.post_with_retry(target, &[first.json()], None).await {
                            Ok(Posted::Accepted) => {
                                first.result = Some(Delivered::Written);
                                Box::pin(self.post_isolating(target, rest)).await;
                                return;
                            }
                            Ok(Posted::Paused) => {
                                set_all(records, &paused());
                                return;
                            }
                            Err(again) => is_envelope_refusal(&again),
                        }
                    }
                    _ => true,
                };
                let (reason, cause) = if confirmed {
                    let reason =
                        refuse_as_a_whole(&self.bus, &self.client, &self.gates, target, &err).await;
                    (reason, RetryCause::Configuration)
                } else {
                    (err.to_string(), RetryCause::Transient)
                };
                set_all(records, &Delivered::Retry(REFUSED_RETRY, reason, cause));
            }
            Err(err) if err.kind() == ErrorKind::Rejected && records.len() > 1 => {
                let (first, second) = records.split_at_mut(records.len() / 2);
                Box::pin(self.post_isolating(target, first)).await;
                Box::pin(self.post_isolating(target, second)).await;
            }
            Err(err) if err.kind() == ErrorKind::Rejected => {
                tracing::warn!(portion, error = %err, "Oomnitza refused a record; dead-lettering it");
                let refusal = Refusal {
                    message: format!("Oomnitza refused the record ({})", refusal_summary(&err)),
                    status: err.status(),
                    excerpt: err.body_excerpt().map(str::to_owned),
                };
                set_all(records, &Delivered::Refused(refusal));
            }
            Err(err) if err.kind() == ErrorKind::Closed => match self.client.portion(portion).await
            {
                Ok(Some(status)) if status.canceled => {
                    self.mark_canceled(&target.integration.config().id, portion)
                        .await;
                    set_all(records, &Delivered::Canceled);
                }
                Ok(Some(status)) if status.finalized => set_all(records, &Delivered::Finalized),
                other => {
                    // Closed but neither canceled nor finalized, or unreadable: try again later.
                    let reason = match other {
                        Err(lookup) => format!("{err}; reading the portion failed: {lookup}"),
                        _ => err.to_string(),
                    };
                    let retry =
                        Delivered::Retry(Duration::from_secs(30), reason, RetryCause::Transient);
                    set_all(records, &retry);
                }
            },
            Err(err) if err.kind() == ErrorKind::Unauthorized => {
                // The gate stops pulling until the credentials work again, so the events can
                // come back soon: they are not delivered while the gate is closed.
                self.gates.set_refused_credentials(&self.client, &err);
                let retry = Delivered::Retry(
                    Duration::from_secs(2),
                    err.to_string(),
                    RetryCause::Configuration,
                );
                set_all(records, &retry);
            }
            Err(err) => {
                // Transient answers outlasted the retries (or Oomnitza asked to wait longer than
                // a retry may): stop pulling until Oomnitza answers again, and hand the events
                // back with the delay Oomnitza asked for, or a growing one.
                let delay = err.retry_after().unwrap_or_else(|| {
                    redelivery_delay(records.first().map_or(1, |r| r.item.delivered))
                });
                tracing::warn!(portion, error = %err, ?delay, "bulk request kept failing; events go back to the stream");
                self.gates
                    .set_failure(Failure::Unavailable, Some(err.to_string()));
                let retry = Delivered::Retry(delay, err.to_string(), RetryCause::Transient);
                set_all(records, &retry);
            }
        }
    }

    /// One bulk request, retried while Oomnitza answers transiently; not sent when an
    /// operator pauses the integration before its turn comes.
    pub(super) async fn post_with_retry(
        &self,
        target: &Target<'_>,
        records: &[&RawValue],
        error: Option<&str>,
    ) -> Result<Posted, Error> {
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
            if self.paused_by_an_operator(&config.id) {
                return Ok(Posted::Paused);
            }
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
            result.map(|()| Posted::Accepted)
        })
        .await
        .map_err(|gave_up| gave_up.error)
    }
}

/// Whether Oomnitza refused the request as a whole: a `400` is its answer to the envelope
/// (reference: missing portion, unknown data type, an unknown field id), not to one record.
pub(crate) fn is_envelope_refusal(err: &Error) -> bool {
    err.kind() == ErrorKind::Rejected && err.status() == Some(400)
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

/// How long an event waits before it is delivered again after in-process retries ran out:
/// longer each time, at most five minutes.
fn redelivery_delay(delivered: u64) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << delivered.min(6));
    Duration::from_secs(secs.min(300))
}

/// Gives every one of `records` the result `delivered`.
fn set_all(records: &mut [Record], delivered: &Delivered) {
    for record in records {
        record.result = Some(delivered.clone());
    }
}
