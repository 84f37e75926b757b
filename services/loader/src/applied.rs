//! Change detection and stale-event protection, against the bus's applied-record store
//! ([`peoplesync_bus::applied`]): per integration
//! and worker (identified by the record's first sync key value), the hash of the record last
//! written and the run that wrote it. A record identical to what was last written is not sent
//! again ("unchanged"), so a sync with no changes in Sage People posts nothing; an event from a
//! run older than the one last applied is skipped ("stale"), so a late redelivery cannot undo
//! a newer write. Run ids are UUID v7, so their text order is their time order.

use peoplesync_bus::Bus;
use peoplesync_bus::applied::AppliedRecord;

/// What identifies one record about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Its KV key, when the record has a sync key value.
    pub key: Option<String>,
    /// `peoplesync_core::record_hash` of the record.
    pub hash: String,
    /// Its run.
    pub run_id: String,
    /// When the extractor read the worker (ms since the epoch).
    pub observed_at_ms: i64,
}

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

/// Decides, for each record, whether to send it; a missing or unreadable entry means "send"
/// (Oomnitza takes a record it already has as an update with no change). The entries are read
/// in one batched request per batch where the server supports it.
pub async fn check(bus: &Bus, records: &[Fingerprint]) -> Vec<Verdict> {
    let (keyed, keys): (Vec<usize>, Vec<String>) = records
        .iter()
        .enumerate()
        .filter_map(|(i, print)| Some((i, print.key.clone()?)))
        .unzip();
    let mut verdicts = vec![Verdict::Send; records.len()];
    match bus.applied().lookup(&keys).await {
        Ok(entries) => {
            for (i, applied) in keyed.iter().zip(entries) {
                verdicts[*i] = verdict(applied.as_ref(), &records[*i]);
            }
        }
        Err(err) => tracing::warn!(error = %err,
            "cannot read applied hashes; sending the batch's records as changed"),
    }
    verdicts
}

/// The verdict for `print` given what was last applied.
pub fn verdict(applied: Option<&AppliedRecord>, print: &Fingerprint) -> Verdict {
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

    fn print(hash: &str, observed_at_ms: i64) -> Fingerprint {
        Fingerprint {
            key: Some("k".into()),
            hash: hash.into(),
            run_id: "r2".into(),
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
