//! Pause flags in KV (`peoplesync_state`, key `pause.<integration>`): the control plane's
//! Pause and Resume write them; every loader replica watches them and stops pulling an
//! integration's events while it is paused. A flag is kept after Resume (with `paused: false`)
//! so operators can see who resumed and when.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::{BusError, document, names};

/// The prefix of every pause key.
pub const PREFIX: &str = "pause.";

/// The KV key of `integration`'s pause flag.
pub fn key(integration: &str) -> String {
    format!("{PREFIX}{integration}")
}

/// The integration a pause key belongs to, if `key` is one.
pub fn integration_of(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX).filter(|id| !id.is_empty())
}

/// Whether an integration is paused, who set it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseFlag {
    /// True while the loaders must not pull the integration's events.
    pub paused: bool,
    /// Who set this state (an operator name or the caller's address).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when a loader paused the integration itself because Oomnitza refused the records of
    /// this config revision as a whole (a configuration refusal, such as an unknown field id):
    /// the loaders resume it on their own once a newer config revision is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_config_revision: Option<u64>,
}

impl PauseFlag {
    /// A flag set now by `by`.
    pub fn now(paused: bool, by: &str, reason: Option<String>) -> PauseFlag {
        PauseFlag {
            paused,
            by: by.to_owned(),
            at: chrono::Utc::now().to_rfc3339(),
            reason,
            refused_config_revision: None,
        }
    }

    /// A pause set by a loader because Oomnitza refused the records of config revision
    /// `revision` as a whole, for `reason`.
    pub fn refused(revision: u64, reason: String) -> PauseFlag {
        PauseFlag {
            refused_config_revision: Some(revision),
            ..PauseFlag::now(
                true,
                "oomnitza-loader (configuration refused)",
                Some(reason),
            )
        }
    }
}

/// Pause flags in the state bucket.
#[derive(Clone, Debug)]
pub struct Pauses {
    kv: kv::Store,
}

impl Pauses {
    /// Pause flags stored in `state` (the `peoplesync_state` bucket).
    pub(crate) fn new(state: kv::Store) -> Pauses {
        Pauses { kv: state }
    }

    /// Stores `flag` for `integration`; returns the KV revision.
    pub async fn set(&self, integration: &str, flag: &PauseFlag) -> Result<u64, BusError> {
        let key = key(integration);
        let value = document::encode("pause flag", flag)?;
        self.kv
            .put(&key, value)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "write", &key, e))
    }

    /// The flag of `integration` (`None` when it was never paused or its flag was deleted) and
    /// the KV revision it was read at (0 when the key never existed), so a reader can tell it
    /// from newer watch updates.
    pub async fn get_with_revision(
        &self,
        integration: &str,
    ) -> Result<(Option<PauseFlag>, u64), BusError> {
        let (value, revision) = document::read(&self.kv, &key(integration)).await?;
        Ok((value.map(|v| decode(&v)).transpose()?, revision))
    }

    /// The flag of `integration`; `None` when it was never paused.
    pub async fn get(&self, integration: &str) -> Result<Option<PauseFlag>, BusError> {
        Ok(self.get_with_revision(integration).await?.0)
    }

    /// Whether `integration` is paused now.
    pub async fn is_paused(&self, integration: &str) -> Result<bool, BusError> {
        Ok(self.get(integration).await?.is_some_and(|f| f.paused))
    }

    /// Watches every pause flag, starting with the current ones (decode entries with
    /// [`decode`] and [`integration_of`] their key).
    pub async fn watch(&self) -> Result<kv::Watch, BusError> {
        let filter = format!("{PREFIX}>");
        self.kv
            .watch_with_history(&filter)
            .await
            .map_err(|e| BusError::kv(names::STATE_BUCKET, "watch", &filter, e))
    }
}

/// Decodes a pause flag from its KV value.
pub fn decode(value: &[u8]) -> Result<PauseFlag, BusError> {
    document::decode("pause flag", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_keys_name_their_integration() {
        let flag = PauseFlag::now(true, "ops@host", Some("Oomnitza maintenance".into()));
        let back = decode(&serde_json::to_vec(&flag).unwrap()).unwrap();
        assert_eq!(back, flag);
        let minimal = decode(br#"{"paused":false,"by":"x","at":"2025-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(minimal.reason, None);
        assert_eq!(integration_of(&key("acme")), Some("acme"));
        assert_eq!(integration_of("run.acme.r1"), None);
    }
}
