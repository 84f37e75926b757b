//! The applied-record store (KV `peoplesync_applied`): per integration and worker, what the
//! loader last wrote to Oomnitza — the record's hash, the run that wrote it and when the
//! extractor read the worker. The loader reads it for change detection (a batch's entries in
//! one batched lookup, see [`crate::lookup`]), remembers each written batch, forgets an entry
//! a run wrote when Oomnitza did not apply it, and purges a leaver's entry. Callers hold a
//! [`Applied`] from [`Bus::applied`] and never see the bucket.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Bus, BusError, lookup};

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

/// The key of a worker's entry: the integration and a digest of its sync key value (values
/// such as e-mail addresses contain characters KV keys cannot hold).
///
/// The value is taken as sync keys are compared ([`peoplesync_core::sync_key_text`]: trimmed,
/// in lower case), as the extractor's collision check takes them (two workers whose values
/// differ in letter case only are held, so no two workers share a key). The loader computes the key from the record it sends, and a
/// leaver's purge from the user as Oomnitza shows it, which may hold the address in other
/// letters (`Ada@Example.com` sent, `ada@example.com` shown; Oomnitza does not publish
/// whether it keeps the case): both must name one entry.
pub fn key(integration: &str, sync_value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(peoplesync_core::sync_key_text(sync_value).as_bytes());
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

/// The applied-record store, borrowed from a [`Bus`].
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    bus: &'a Bus,
}

impl Bus {
    /// The applied-record store.
    pub fn applied(&self) -> Applied<'_> {
        Applied { bus: self }
    }
}

impl Applied<'_> {
    fn store(&self) -> &kv::Store {
        &self.bus.applied
    }

    /// The entry under each of `keys`, in order: `None` for a key that is absent, deleted or
    /// holds a value that does not decode. Read in one batched request per few hundred keys
    /// where the server supports it.
    pub async fn lookup(&self, keys: &[String]) -> Result<Vec<Option<AppliedRecord>>, BusError> {
        let values = lookup::values(&self.bus.client, self.store(), keys).await?;
        Ok(values
            .into_iter()
            .map(|value| value.and_then(|v| serde_json::from_slice(&v).ok()))
            .collect())
    }

    /// Remembers what was just written. The entries are published as one pipelined group
    /// closed by a single acknowledged write, at about half the CPU of an ack per entry: the
    /// server handles one connection's messages to one stream in order, so an error on that
    /// last write (stream limits, no JetStream) is seen. An entry lost without an error — the
    /// connection or the stream leader changing mid-group — goes unnoticed; it costs that
    /// record being sent again next run (Oomnitza treats it as an update with no change) and,
    /// until then, the worker's protection against older replayed events. Failures seen are
    /// logged.
    pub async fn remember(&self, records: &[(String, AppliedRecord)]) {
        let store = self.store();
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
            if let Err(err) = self
                .bus
                .client
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

    /// Drops the entry under `key` if `run_id` wrote it last (a newer run's entry stays), so
    /// the next run sends the record again. Failures are logged: the record then waits for a
    /// change in Sage People.
    pub async fn forget_if_written_by(&self, key: &str, run_id: &str) {
        if key.is_empty() {
            return;
        }
        let store = self.store();
        let entry = match store.entry(key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(key, error = %err, "cannot read an applied hash to drop it");
                return;
            }
        };
        let ours = serde_json::from_slice::<AppliedRecord>(&entry.value)
            .is_ok_and(|applied| applied.run_id == run_id);
        if !ours {
            return;
        }
        if let Err(err) = store
            .delete_expect_revision(key, Some(entry.revision))
            .await
        {
            tracing::warn!(key, error = %err, "cannot drop an applied hash; the record is sent again only once it changes");
        }
    }

    /// Removes the entry under `key` with its history.
    pub async fn purge(&self, key: &str) -> Result<(), BusError> {
        let store = self.store();
        store
            .purge(key)
            .await
            .map_err(|e| BusError::kv(&store.name, "purge", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_whatever_the_value() {
        let k = key("acme", "Zoë.O'Brien+test@example.com");
        assert!(k.starts_with("acme."));
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        );
        assert_ne!(k, key("acme", "zoe@example.com"));
        assert_ne!(key("acme", "a@example.com"), key("other", "a@example.com"));
        // Keys already stored must still be found: the spelling never changes.
        assert_eq!(
            key("acme", "zoe@example.com"),
            format!(
                "acme.{}",
                hex::encode(&Sha256::digest(b"zoe@example.com")[..20])
            )
        );
    }

    #[test]
    fn a_value_in_other_letters_or_with_spaces_names_the_same_entry() {
        let sent = key("acme", "Zoë.OBrien@Example.com");
        assert_eq!(sent, key("acme", "zoë.obrien@example.com"));
        assert_eq!(sent, key("acme", " ZOË.OBRIEN@EXAMPLE.COM "));
        assert_ne!(sent, key("acme", "zoe.obrien@example.com"));
    }
}
