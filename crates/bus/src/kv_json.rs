//! Reading and writing JSON values of the typed stores kept in a KV bucket, with errors that
//! name the bucket and the key.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::Serialize;

use crate::BusError;

/// The value under `key`, if any.
pub(crate) async fn get(kv: &kv::Store, key: &str) -> Result<Option<Bytes>, BusError> {
    kv.get(key)
        .await
        .map_err(|e| BusError::kv(&kv.name, "read", key, e))
}

/// `value` as the JSON stored under a key.
pub(crate) fn encode<T: Serialize>(
    kv: &kv::Store,
    key: &str,
    value: &T,
) -> Result<Bytes, BusError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| BusError::kv(&kv.name, "encode", key, e))
}

/// Stores `value` as JSON under `key`; returns the new revision.
pub(crate) async fn put<T: Serialize>(
    kv: &kv::Store,
    key: &str,
    value: &T,
) -> Result<u64, BusError> {
    let bytes = encode(kv, key, value)?;
    kv.put(key, bytes)
        .await
        .map_err(|e| BusError::kv(&kv.name, "write", key, e))
}
