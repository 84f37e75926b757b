//! The sync keys several workers shared in an integration's last full run (KV
//! `peoplesync_state`, key `synckeys.<integration>`; [`Bus::sync_keys`]). The extractor holds
//! such workers back until each has its own key; only digests of the key values are kept,
//! never the values.

use serde::{Deserialize, Serialize};

use crate::document::PerIntegration;
use crate::{Bus, BusError, names};

/// What the state bucket keeps between runs: the keys shared in the last full run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedKeys {
    /// The run that found them.
    pub run_id: String,
    /// Workers that run listed (sizes the next run's table).
    #[serde(default)]
    pub listed: u64,
    /// Each shared key.
    pub shared: Vec<SharedKey>,
}

/// One key value several workers had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedKey {
    /// Hex digest of the field and value.
    pub key: String,
    /// The Oomnitza field.
    pub field: String,
    /// The workers that had it, in listing order.
    pub workers: Vec<String>,
}

/// The shared sync keys of every integration.
#[derive(Debug, Clone)]
pub struct SyncKeys {
    tables: PerIntegration<SharedKeys>,
}

impl Bus {
    /// The sync keys shared in each integration's last full run.
    pub fn sync_keys(&self) -> SyncKeys {
        SyncKeys {
            tables: PerIntegration::new(
                self.state.clone(),
                "shared sync keys",
                names::sync_keys_key,
            ),
        }
    }
}

impl SyncKeys {
    /// The keys shared in `integration`'s last full run; none when nothing (readable) is stored.
    pub async fn load(&self, integration: &str) -> Result<SharedKeys, BusError> {
        // An unreadable table is treated as empty: it is rebuilt by the next full run.
        match self.tables.get(integration).await {
            Ok(shared) => Ok(shared.unwrap_or_default()),
            Err(BusError::Decode { .. }) => Ok(SharedKeys::default()),
            Err(err) => Err(err),
        }
    }

    /// Stores `shared` as the keys shared in `integration`'s last full run.
    pub async fn save(&self, integration: &str, shared: &SharedKeys) -> Result<(), BusError> {
        self.tables.put(integration, shared).await
    }
}
