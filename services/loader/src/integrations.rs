//! The compiled integration configs this replica maps with, kept in step with KV
//! `peoplesync_config` (key = integration id, value = the TOML). A new revision applies to the
//! next event without a restart; a revision that fails validation is refused with a log line
//! naming every problem, and the previous config stays active. A refusal is also noted on
//! `/readyz` (subject `config <id>`) until a valid revision is active: with no config active at
//! all, nothing of that integration is loaded, and the replica must say why.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use peoplesync_bus::{Bus, BusError, ConfigChange, Written};
use peoplesync_core::{Integration, IntegrationConfig};

/// The active config of every integration, shared by the replica's tasks.
#[derive(Clone, Default)]
pub struct Integrations {
    active: Arc<RwLock<HashMap<String, Active>>>,
    /// Where refused configs are noted (shown by `/readyz`).
    readiness: peoplesync_runtime::Readiness,
}

#[derive(Clone)]
struct Active {
    integration: Arc<Integration>,
    revision: u64,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations").finish_non_exhaustive()
    }
}

/// Why a config could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The TOML is invalid; the message lists every problem.
    #[error("integration config {id}: {message}")]
    Invalid {
        /// The integration.
        id: String,
        /// Every validation message.
        message: String,
    },
    /// KV failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl Integrations {
    /// The active compiled config of `id`, if one is loaded.
    pub fn get(&self, id: &str) -> Option<Arc<Integration>> {
        self.active
            .read()
            .ok()
            .and_then(|map| map.get(id).map(|a| a.integration.clone()))
    }

    /// The ids of every integration with an active config.
    pub fn ids(&self) -> Vec<String> {
        self.active
            .read()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The KV revision of the active config of `id`.
    pub fn revision(&self, id: &str) -> Option<u64> {
        self.active
            .read()
            .ok()
            .and_then(|map| map.get(id).map(|a| a.revision))
    }

    /// The active config of `id` with its KV revision, read together: two reads could straddle
    /// a config change and stamp an event mapped by one revision with the next one's number.
    pub fn get_with_revision(&self, id: &str) -> Option<(Arc<Integration>, u64)> {
        self.active
            .read()
            .ok()
            .and_then(|map| map.get(id).map(|a| (a.integration.clone(), a.revision)))
    }

    /// No config yet; refusals are noted on `readiness` (shown by `/readyz`).
    pub fn noting_on(readiness: peoplesync_runtime::Readiness) -> Integrations {
        Integrations {
            active: Arc::default(),
            readiness,
        }
    }

    /// Sets (`Some`) or clears (`None`) why `id`'s latest config was refused.
    fn note_refusal(&self, id: &str, note: Option<String>) {
        self.readiness.note(&format!("config {id}"), note);
    }

    /// Notes that revision `revision` of `id` was refused for `problem`, unless a newer one is
    /// already active.
    fn refused(&self, id: &str, revision: u64, problem: &str) {
        let note = match self.revision(id) {
            Some(active) if active >= revision => return,
            Some(active) => format!(
                "config revision {revision} refused ({problem}); revision {active} stays active: \
                 store a valid config with `syncctl integration put`"
            ),
            None => format!(
                "config revision {revision} refused ({problem}); no config of {id} is active, so \
                 none of its events are loaded: store a valid config with `syncctl integration put`"
            ),
        };
        self.note_refusal(id, Some(note));
    }

    /// Makes `config` (KV revision `revision`) active for its integration.
    fn activate(&self, id: &str, integration: Integration, revision: u64) {
        if let Ok(mut map) = self.active.write() {
            let newer = map.get(id).is_none_or(|a| a.revision < revision);
            if newer {
                map.insert(
                    id.to_owned(),
                    Active {
                        integration: Arc::new(integration),
                        revision,
                    },
                );
            }
        }
    }

    /// Parses and compiles a TOML config and, if valid, makes it active; otherwise logs why
    /// and keeps the previous one.
    fn apply(&self, id: &str, text: &[u8], revision: u64) {
        let compiled = std::str::from_utf8(text)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| IntegrationConfig::from_toml(text).map_err(|e| e.to_string()))
            .and_then(|config| Integration::compile(config).map_err(|e| e.to_string()));
        match compiled {
            Ok(integration) if integration.config().id == id => {
                tracing::info!(integration = id, revision, "integration config active");
                for deprecated in integration.config().deprecations() {
                    tracing::warn!(integration = id, revision, "{deprecated}");
                }
                self.activate(id, integration, revision);
                if self.revision(id) == Some(revision) {
                    self.note_refusal(id, None);
                }
            }
            Ok(integration) => {
                tracing::error!(
                    integration = id,
                    revision,
                    config_id = %integration.config().id,
                    "refusing integration config: its id does not match its KV key; keeping the previous config"
                );
                let problem = format!("its id is {:?}", integration.config().id);
                self.refused(id, revision, &problem);
            }
            Err(message) => {
                tracing::error!(
                    integration = id,
                    revision,
                    %message,
                    "refusing an invalid integration config; keeping the previous config"
                );
                self.refused(id, revision, &message);
            }
        }
    }

    /// Loads the config of `id` from KV, seeding it first when absent: with `seed` (a TOML
    /// file's text) if given, else with the shipped default.
    pub async fn load_or_seed(
        &self,
        bus: &Bus,
        id: &str,
        seed: Option<&str>,
    ) -> Result<(), SeedError> {
        let configs = bus.configs();
        if let Some(stored) = configs.get(id).await? {
            self.apply(id, &stored.text, stored.revision);
            if self.get(id).is_some() {
                return Ok(());
            }
        }
        let text = match seed {
            Some(text) => text.to_owned(),
            None => IntegrationConfig::default_for(id).to_toml(),
        };
        let config = IntegrationConfig::from_toml(&text).map_err(|e| SeedError::Invalid {
            id: id.to_owned(),
            message: e.to_string(),
        })?;
        if config.id != id {
            return Err(SeedError::Invalid {
                id: id.to_owned(),
                message: format!("the file's id is {:?}; it must be {id:?}", config.id),
            });
        }
        let integration = Integration::compile(config).map_err(|e| SeedError::Invalid {
            id: id.to_owned(),
            message: e.to_string(),
        })?;
        match configs.put(id, Bytes::from(text), 0).await? {
            Written::Stored(revision) => {
                tracing::info!(
                    integration = id,
                    revision,
                    "seeded the integration config in KV"
                );
                self.activate(id, integration, revision);
            }
            Written::Stale => {
                // Another replica seeded it first; use theirs.
                if let Some(stored) = configs.get(id).await? {
                    self.apply(id, &stored.text, stored.revision);
                }
            }
        }
        Ok(())
    }

    /// Loads every config in the bucket, then follows every change until the watch ends. Starting
    /// from the stored values (not only new ones) means integrations created through the control
    /// plane are served after a restart, and no change between start-up and the watch is missed.
    pub async fn watch(&self, bus: &Bus) -> Result<(), BusError> {
        let mut watch = bus.configs().watch(None).await?;
        while let Some(change) = watch.next().await {
            match change {
                Ok(ConfigChange::Stored(stored)) => {
                    self.apply(&stored.id, &stored.text, stored.revision);
                }
                Ok(ConfigChange::Removed { .. }) => {}
                Err(err) => tracing::warn!(error = %err, "integration config watch error"),
            }
        }
        Ok(())
    }
}
