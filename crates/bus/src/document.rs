//! JSON documents in the KV buckets: how every typed store encodes, decodes, reads and writes
//! one, with errors that name what the document is, its bucket and its key.

use std::marker::PhantomData;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BusError;

/// `value` as the JSON stored for a document of kind `what`.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Bytes, BusError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| BusError::request(format!("encoding the {what}"), e))
}

/// A stored document of kind `what`.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, value: &[u8]) -> Result<T, BusError> {
    serde_json::from_slice(value).map_err(|e| BusError::decode(what, e))
}

/// The value under `key` in `kv` — `None` when it was never written or has been deleted — and
/// the revision it was read at (0 when the key never existed), so a reader can tell it from
/// newer watch updates and write it back conditionally.
pub(crate) async fn read(kv: &kv::Store, key: &str) -> Result<(Option<Bytes>, u64), BusError> {
    let entry = kv
        .entry(key)
        .await
        .map_err(|e| BusError::kv(&kv.name, "read", key, e))?;
    Ok(match entry {
        Some(entry) if entry.operation == kv::Operation::Put => (Some(entry.value), entry.revision),
        Some(entry) => (None, entry.revision),
        None => (None, 0),
    })
}

/// The document of kind `what` under `key`, if there is one.
pub(crate) async fn get<T: DeserializeOwned>(
    kv: &kv::Store,
    what: &'static str,
    key: &str,
) -> Result<Option<T>, BusError> {
    let value = kv
        .get(key)
        .await
        .map_err(|e| BusError::kv(&kv.name, "read", key, e))?;
    value.map(|v| decode(what, &v)).transpose()
}

/// Stores `value` as the document of kind `what` under `key`; returns the new revision.
pub(crate) async fn put<T: Serialize>(
    kv: &kv::Store,
    what: &'static str,
    key: &str,
    value: &T,
) -> Result<u64, BusError> {
    kv.put(key, encode(what, value)?)
        .await
        .map_err(|e| BusError::kv(&kv.name, "write", key, e))
}

/// One kind of document kept per integration in a KV bucket: its name in errors and how an
/// integration's key is built, stated once for every read and write of it.
#[derive(Debug, Clone)]
pub(crate) struct PerIntegration<T> {
    kv: kv::Store,
    what: &'static str,
    key: fn(&str) -> String,
    kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> PerIntegration<T> {
    /// Documents of kind `what` in `kv`, an integration's under `key(integration)`.
    pub(crate) fn new(kv: kv::Store, what: &'static str, key: fn(&str) -> String) -> Self {
        PerIntegration {
            kv,
            what,
            key,
            kind: PhantomData,
        }
    }

    /// The document of `integration`, if there is one.
    pub(crate) async fn get(&self, integration: &str) -> Result<Option<T>, BusError> {
        get(&self.kv, self.what, &(self.key)(integration)).await
    }

    /// Stores `value` as the document of `integration`.
    pub(crate) async fn put(&self, integration: &str, value: &T) -> Result<(), BusError> {
        put(&self.kv, self.what, &(self.key)(integration), value)
            .await
            .map(drop)
    }
}
