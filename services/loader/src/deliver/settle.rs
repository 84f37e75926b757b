//! Settling each record of a batch: from its verdict ([`super::detect`]) and what posting made
//! of it ([`super::post`]), the settlement its event gets ([`crate::ack`]) — written, unchanged,
//! stale, canceled, dead-lettered with Oomnitza's reason, or retried later — and, for a record
//! written, the applied entry to remember. A record counted as written keeps its applied key
//! on its outcome, so a record Oomnitza does not apply, or one posted to a portion canceled
//! later, has its entry dropped again.

use std::time::Duration;

use peoplesync_bus::applied::AppliedRecord;
use peoplesync_bus::{DeadLetter, Outcome};

use super::Record;
use super::detect::Verdict;
use super::post::{Delivered, Refusal};
use crate::ack::{RetryCause, Settlement};
use crate::pipeline::{Disposition, Item};

/// The settlement of `record`, of run `portion`; a record written adds its applied entry to
/// `written`.
pub(super) fn settle(
    record: Record,
    portion: &str,
    written: &mut Vec<(String, AppliedRecord)>,
) -> (Item, Settlement) {
    let Record {
        mut item,
        key,
        hash,
        verdict,
        result,
    } = record;
    let delivered = match verdict {
        Verdict::Unchanged if !item.resend => {
            return (item, Settlement::Done(Outcome::Unchanged, None));
        }
        Verdict::WrittenByThisRun => {
            // Its outcome keeps the key and record, as for a write, for the check.
            keep_key(&mut item, key);
            return (item, Settlement::Done(Outcome::Written, None));
        }
        Verdict::Stale => return (item, Settlement::Done(Outcome::Stale, None)),
        Verdict::Send | Verdict::Unchanged => result.unwrap_or_else(|| {
            Delivered::Retry(
                Duration::from_secs(5),
                "not attempted".into(),
                RetryCause::Transient,
            )
        }),
    };
    let settlement = match delivered {
        Delivered::Written => {
            if let Some(key) = key {
                let record = AppliedRecord {
                    hash,
                    run_id: portion.to_owned(),
                    observed_at_ms: item.observed_at_ms,
                };
                keep_key(&mut item, Some(key.clone()));
                written.push((key, record));
            }
            Settlement::Done(Outcome::Written, None)
        }
        Delivered::Canceled => Settlement::Done(Outcome::Canceled, None),
        Delivered::Refused(refusal) => dead_letter(&item, refusal),
        Delivered::Finalized => {
            let refusal = Refusal {
                message: format!(
                    "portion {portion} was finalized before this record was loaded; replay it from the DLQ"
                ),
                status: Some(409),
                excerpt: None,
            };
            dead_letter(&item, refusal)
        }
        Delivered::Retry(delay, reason, cause) => Settlement::Retry(delay, reason, cause),
    };
    (item, settlement)
}

/// Puts the applied key back on the item's outgoing record, where its outcome finds it.
fn keep_key(item: &mut Item, key: Option<String>) {
    if let Disposition::Send(outgoing) = &mut item.disposition {
        outgoing.applied_key = key;
    }
}

/// The settlement of an item the mapping refused: dead-lettered with its reason.
pub(super) fn refused_by_mapping(item: Item) -> (Item, Settlement) {
    let letter = match &item.disposition {
        Disposition::Refused(letter) => Some(letter.clone()),
        _ => None,
    };
    (item, Settlement::Done(Outcome::DeadLettered, letter))
}

/// Dead-lettered with Oomnitza's `refusal`.
fn dead_letter(item: &Item, refusal: Refusal) -> Settlement {
    let letter = DeadLetter {
        integration: item.key.integration.clone(),
        run_id: item.key.run_id.clone(),
        worker_id: item.worker_id.clone(),
        reason: refusal.message,
        stage: "oomnitza".into(),
        http_status: refusal.status,
        body_excerpt: refusal.excerpt,
        attempts: item.delivered,
        original_subject: item.message.subject.to_string(),
    };
    Settlement::Done(Outcome::DeadLettered, Some(Box::new(letter)))
}
