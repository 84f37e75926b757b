//! JSON documents in the KV buckets: how every typed store encodes, decodes and reads one,
//! with errors that name what the document is and where it lives.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BusError;

/// `value` as the JSON stored for a document of kind `what`.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Bytes, BusError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| BusError::decode(what, e))
}

/// A stored document of kind `what`.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, value: &[u8]) -> Result<T, BusError> {
    serde_json::from_slice(value).map_err(|e| BusError::decode(what, e))
}

/// The value under `key` in `kv` (the bucket `bucket`) — `None` when it was never written or
/// has been deleted — and the revision it was read at (0 when the key never existed), so a
/// reader can tell it from newer watch updates and write it back conditionally.
pub(crate) async fn read(
    kv: &kv::Store,
    bucket: &str,
    key: &str,
) -> Result<(Option<Bytes>, u64), BusError> {
    let entry = kv
        .entry(key)
        .await
        .map_err(|e| BusError::kv(bucket, "read", key, e))?;
    Ok(match entry {
        Some(entry) if entry.operation == kv::Operation::Put => (Some(entry.value), entry.revision),
        Some(entry) => (None, entry.revision),
        None => (None, 0),
    })
}
