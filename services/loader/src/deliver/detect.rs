//! Change detection and stale-event protection, against the bus's applied-record store
//! ([`peoplesync_bus::applied`]): per integration and worker (identified by the record's first
//! sync key value), the hash of the record last written and the run that wrote it. A record
//! identical to what was last written is not sent again ("unchanged"), so a sync with no
//! changes in Sage People posts nothing; an event from a run older than the one last applied
//! is skipped ("stale"), so a late redelivery cannot undo a newer write. Run ids are UUID v7,
//! so their text order is their time order.

use peoplesync_bus::Bus;
use peoplesync_bus::applied::AppliedRecord;

use super::Record;
use crate::pipeline::{Disposition, Item};

/// The verdict for one record about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New or changed: send it.
    Send,
    /// Identical to what was last written.
    Unchanged,
    /// This very run already wrote it: a redelivery after a replica wrote the record but died
    /// before acking the event. Counted as written, not sent again.
    WrittenByThisRun,
    /// A newer run already wrote this worker.
    Stale,
}

/// What identifies one record about to be sent, against what was last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint<'a> {
    /// `peoplesync_core::record_hash` of the record.
    pub hash: &'a str,
    /// Its run.
    pub run_id: &'a str,
    /// When the extractor read the worker (ms since the epoch).
    pub observed_at_ms: i64,
}

/// The records of `items` (all [`Disposition::Send`], of run `portion`), each with its
/// verdict; a missing or unreadable entry means "send" (Oomnitza takes a record it already
/// has as an update with no change). The entries are read in one batched request per batch
/// where the server supports it.
pub(super) async fn check(bus: &Bus, portion: &str, items: Vec<Item>) -> Vec<Record> {
    // The key and hash move out of the item (which keeps only the JSON it sends) into the record.
    let mut records: Vec<Record> = items.into_iter().map(Record::new).collect();
    judge(bus, portion, &mut records).await;
    records
}

/// Sets the verdict of each of `records` of `portion` against what the applied store holds
/// now; leaves them as they are when it cannot be read.
pub(super) async fn judge(bus: &Bus, portion: &str, records: &mut [Record]) {
    let keys: Vec<String> = records.iter().filter_map(|r| r.key.clone()).collect();
    match bus.applied().lookup(&keys).await {
        Ok(entries) => {
            // One entry per key, in the order of the keyed records.
            let keyed = records.iter_mut().filter(|r| r.key.is_some());
            for (record, applied) in keyed.zip(entries) {
                let print = Fingerprint {
                    hash: &record.hash,
                    run_id: portion,
                    observed_at_ms: record.item.observed_at_ms,
                };
                record.verdict = verdict(applied.as_ref(), &print);
            }
        }
        Err(err) => tracing::warn!(error = %err,
            "cannot read applied hashes; taking the batch's records as changed"),
    }
}

impl Record {
    /// A record to send, before change detection (verdict [`Verdict::Send`]).
    fn new(mut item: Item) -> Record {
        let (key, hash) = match &mut item.disposition {
            Disposition::Send(outgoing) => (
                outgoing.applied_key.take(),
                std::mem::take(&mut outgoing.hash),
            ),
            // Only records to send get here; without a key a record is sent.
            Disposition::Done(..) | Disposition::Refused(_) | Disposition::Leaver(_) => {
                (None, String::new())
            }
        };
        Record {
            item,
            key,
            hash,
            verdict: Verdict::Send,
            result: None,
        }
    }
}

/// The verdict for `print` given what was last applied.
pub fn verdict(applied: Option<&AppliedRecord>, print: &Fingerprint<'_>) -> Verdict {
    match applied {
        Some(applied) if applied.observed_at_ms > print.observed_at_ms => Verdict::Stale,
        Some(applied) if applied.hash == print.hash && applied.run_id == print.run_id => {
            Verdict::WrittenByThisRun
        }
        Some(applied) if applied.hash == print.hash => Verdict::Unchanged,
        _ => Verdict::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(hash: &str, observed_at_ms: i64) -> Fingerprint<'_> {
        Fingerprint {
            hash,
            run_id: "r2",
            observed_at_ms,
        }
    }

    fn applied(hash: &str, observed_at_ms: i64) -> AppliedRecord {
        AppliedRecord {
            hash: hash.into(),
            run_id: "r1".into(),
            observed_at_ms,
        }
    }

    #[test]
    fn new_changed_unchanged_and_stale_records_are_told_apart() {
        assert_eq!(verdict(None, &print("h", 10)), Verdict::Send);
        assert_eq!(
            verdict(Some(&applied("old", 5)), &print("h", 10)),
            Verdict::Send
        );
        assert_eq!(
            verdict(Some(&applied("h", 5)), &print("h", 10)),
            Verdict::Unchanged
        );
        let by_this_run = AppliedRecord {
            run_id: "r2".into(),
            ..applied("h", 10)
        };
        assert_eq!(
            verdict(Some(&by_this_run), &print("h", 10)),
            Verdict::WrittenByThisRun,
            "a redelivery of what this run wrote counts as written, not unchanged"
        );
        assert_eq!(
            verdict(Some(&applied("newer", 20)), &print("h", 10)),
            Verdict::Stale,
            "a replayed or late event read before the applied version is not sent"
        );
    }
}
