//! The integration configs: the one reader, writer and watcher of the config bucket. A config
//! is stored as the TOML text an operator wrote, under the integration's id; every change gets
//! a new revision, and a writer says which revision it read so concurrent edits are refused
//! rather than lost.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::lost_to_another_writer;
use crate::{Bus, BusError, document, names};

/// One integration's stored config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfig {
    /// The integration's id (the key).
    pub id: String,
    /// The config's TOML text, as stored.
    pub text: Bytes,
    /// The revision it was stored at.
    pub revision: u64,
}

/// A change to the stored configs, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// A config was stored (created or replaced).
    Stored(StoredConfig),
    /// A config was deleted or purged.
    Removed {
        /// The integration's id.
        id: String,
    },
}

impl ConfigChange {
    fn of(entry: kv::Entry) -> ConfigChange {
        match entry.operation {
            kv::Operation::Put => ConfigChange::Stored(StoredConfig {
                id: entry.key,
                text: entry.value,
                revision: entry.revision,
            }),
            kv::Operation::Delete | kv::Operation::Purge => ConfigChange::Removed { id: entry.key },
        }
    }
}

/// The outcome of a conditional write ([`Configs::put`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, at this revision.
    Stored(u64),
    /// Not stored: the config's revision is not the one given (another writer was first, or
    /// a config exists where none was expected).
    Stale,
}

/// The integration configs (see the module docs).
#[derive(Clone, Debug)]
pub struct Configs {
    kv: kv::Store,
}

impl Bus {
    /// The integration configs.
    pub fn configs(&self) -> Configs {
        Configs {
            kv: self.config.clone(),
        }
    }
}

impl Configs {
    /// The stored config of `id`, if it has one.
    pub async fn get(&self, id: &str) -> Result<Option<StoredConfig>, BusError> {
        let (text, revision) = document::read(&self.kv, id).await?;
        Ok(text.map(|text| StoredConfig {
            id: id.to_owned(),
            text,
            revision,
        }))
    }

    /// Stores `text` as the config of `id` if its revision is `revision`, where `0` means it
    /// has no config yet.
    pub async fn put(&self, id: &str, text: Bytes, revision: u64) -> Result<Written, BusError> {
        if revision == 0 {
            match self.kv.create(id, text).await {
                Ok(revision) => Ok(Written::Stored(revision)),
                Err(err) if lost_to_another_writer(&err) => Ok(Written::Stale),
                Err(err) => Err(BusError::kv(names::CONFIG_BUCKET, "create", id, err)),
            }
        } else {
            match self.kv.update(id, text, revision).await {
                Ok(revision) => Ok(Written::Stored(revision)),
                Err(err) if lost_to_another_writer(&err) => Ok(Written::Stale),
                Err(err) => Err(BusError::kv(names::CONFIG_BUCKET, "update", id, err)),
            }
        }
    }

    /// Follows the config of `id` (every config with `None`), starting with what is stored
    /// now, so nothing changed between a read and the watch is missed.
    pub async fn watch(&self, id: Option<&str>) -> Result<ConfigWatch, BusError> {
        let key = id.unwrap_or(">");
        ConfigWatch::of(self.kv.watch_with_history(key).await, key)
    }

    /// Follows the changes to the config of `id` made from now on (not what is stored now).
    pub async fn changes(&self, id: &str) -> Result<ConfigWatch, BusError> {
        ConfigWatch::of(self.kv.watch(id).await, id)
    }
}

/// A watch of the configs ([`Configs::watch`], [`Configs::changes`]).
pub struct ConfigWatch {
    inner: kv::Watch,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch").finish_non_exhaustive()
    }
}

impl ConfigWatch {
    fn of(watch: Result<kv::Watch, kv::WatchError>, key: &str) -> Result<ConfigWatch, BusError> {
        watch
            .map(|inner| ConfigWatch { inner })
            .map_err(|e| BusError::kv(names::CONFIG_BUCKET, "watch", key, e))
    }

    /// The next change; `None` once the watch has ended (the connection was lost for good or
    /// the bucket went away), after which the caller watches again.
    pub async fn next(&mut self) -> Option<Result<ConfigChange, BusError>> {
        let entry = self.inner.next().await?;
        Some(
            entry
                .map(ConfigChange::of)
                .map_err(|e| BusError::kv(names::CONFIG_BUCKET, "watch", ">", e)),
        )
    }
}
