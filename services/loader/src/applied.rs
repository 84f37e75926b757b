//! Change detection and stale-event protection, in KV `peoplesync_applied`: per integration
//! and worker (identified by the record's first sync key value), the hash of the record last
//! written and the run that wrote it. A record identical to what was last written is not sent
//! again ("unchanged"), so a sync with no changes in Sage People posts nothing; an event from a
//! run older than the one last applied is skipped ("stale"), so a late redelivery cannot undo
//! a newer write. Run ids are UUID v7, so their text order is their time order.

use bytes::Bytes;
use peoplesync_bus::{Bus, lookup};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What was last written for one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// `peoplesync_core::record_hash` of the record.
    pub hash: String,
    /// The run that wrote it.
    pub run_id: String,
    /// When the extractor read the worker in that run (ms since the epoch).
    #[serde(default)]
    pub observed_at_ms: i64,
}

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

/// The KV key of a worker: the integration and a digest of its sync key value (values such as
/// e-mail addresses contain characters KV keys cannot hold).
pub fn key(integration: &str, sync_value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(sync_value.as_bytes());
    // Built for every record; written directly rather than through `format!` and `hex`.
    let mut key = String::with_capacity(integration.len() + 41);
    key.push_str(integration);
    key.push('.');
    for byte in &digest[..20] {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    key
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
    match lookup::values(bus.client(), bus.applied_kv(), &keys).await {
        Ok(values) => {
            for (i, value) in keyed.iter().zip(values) {
                let applied = value.and_then(|v| serde_json::from_slice::<AppliedRecord>(&v).ok());
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

/// Remembers what was just written. The entries are published as one pipelined group closed
/// by a single acknowledged write, at about half the CPU of an ack per entry: the server
/// handles one connection's messages to one stream in order, so an error on that last write
/// (stream limits, no JetStream) is seen. An entry lost without an error — the connection or
/// the stream leader changing mid-group — goes unnoticed; it costs that record being sent
/// again next run (Oomnitza treats it as an update with no change) and, until then, the
/// worker's protection against older replayed events. Failures seen are logged.
pub async fn remember(bus: &Bus, records: &[(String, AppliedRecord)]) {
    let store = bus.applied_kv();
    let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
    let encoded: Vec<(&str, Bytes)> = records
        .iter()
        .filter_map(|(key, record)| {
            Some((key.as_str(), Bytes::from(serde_json::to_vec(record).ok()?)))
        })
        .collect();
    let Some(((last_key, last_value), group)) = encoded.split_last() else {
        return;
    };
    for (key, value) in group {
        if let Err(err) = bus
            .client()
            .publish([prefix, key].concat(), value.clone())
            .await
        {
            tracing::warn!(key, error = %err, "cannot record the applied hash; the record will be sent again next run");
        }
    }
    if let Err(err) = store.put(last_key, last_value.clone()).await {
        tracing::warn!(records = encoded.len(), error = %err,
            "cannot confirm the applied hashes of a batch; its records may be sent again next run");
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

    #[test]
    fn keys_are_valid_kv_keys_whatever_the_value() {
        let k = key("acme", "Zoë.O'Brien+test@example.com");
        assert!(k.starts_with("acme."));
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        );
        assert_ne!(k, key("acme", "zoe@example.com"));
        // Keys already stored must still be found: the spelling never changes.
        assert_eq!(
            key("acme", "zoe@example.com"),
            format!(
                "acme.{}",
                hex::encode(&Sha256::digest(b"zoe@example.com")[..20])
            )
        );
    }
}
