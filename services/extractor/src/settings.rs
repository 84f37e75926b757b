//! What each integration tells the extractor — which credential set to read with, the
//! `$filter`, the schedule — read from the integration config in KV `peoplesync_config` (key =
//! integration id; the shipped default when absent) at the start of every run, so changes apply
//! without a restart. And the Sage People clients, one per credential set, shared by every
//! integration that uses the set so they share its access token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use peoplesync_bus::{Bus, names};
use peoplesync_core::{IntegrationConfig, ScheduleConfig};
use peoplesync_sage_people::SageClient;

use crate::config::{ExtractorConfig, SecretSource};

/// The extractor's part of an integration config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationSettings {
    /// The credential set to read with.
    pub credentials: String,
    /// The `$filter` passed to Sage People.
    pub source_filter: Option<String>,
    /// When full runs start.
    pub schedule: ScheduleConfig,
    /// The time zone end dates are judged in (see `peoplesync_core::leavers::time_zone`).
    pub time_zone: chrono_tz::Tz,
    /// What the loaders do with leavers (decides whether their upserts are published).
    pub leaver_action: peoplesync_core::LeaverAction,
}

impl IntegrationSettings {
    /// The settings of a parsed integration config.
    pub fn of(config: &IntegrationConfig) -> IntegrationSettings {
        IntegrationSettings {
            credentials: config.credentials.clone(),
            source_filter: config
                .source_filter
                .clone()
                .filter(|f| !f.trim().is_empty()),
            schedule: config.schedule.clone(),
            time_zone: peoplesync_core::leavers::time_zone(config),
            leaver_action: config.leavers.action,
        }
    }
}

/// The settings of `integration` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// KV could not be read.
    #[error(
        "reading the integration config of {integration} from KV {bucket}: {message}; check that NATS is reachable"
    )]
    Unreadable {
        /// The integration.
        integration: String,
        /// The bucket.
        bucket: &'static str,
        /// What failed.
        message: String,
    },
    /// The stored config does not validate.
    #[error(
        "the integration config of {integration} in KV {bucket} is invalid: {message}; fix it with syncctl (or PutIntegration) and run again"
    )]
    Invalid {
        /// The integration.
        integration: String,
        /// The bucket.
        bucket: &'static str,
        /// The validation errors.
        message: String,
    },
}

/// Reads the settings of `integration` from KV, or the shipped default's when it has none.
pub async fn load(bus: &Bus, integration: &str) -> Result<IntegrationSettings, SettingsError> {
    load_config(bus, integration)
        .await
        .map(|config| IntegrationSettings::of(&config))
}

/// Reads the whole integration config of `integration` from KV, or the shipped default when
/// it has none.
pub async fn load_config(bus: &Bus, integration: &str) -> Result<IntegrationConfig, SettingsError> {
    let stored = bus
        .configs()
        .get(integration)
        .await
        .map_err(|e| SettingsError::Unreadable {
            integration: integration.to_owned(),
            bucket: names::CONFIG_BUCKET,
            message: e.to_string(),
        })?;
    match stored {
        Some(stored) => parse_config(integration, &stored.text),
        None => Ok(IntegrationConfig::default_for(integration)),
    }
}

/// Parses a stored integration config.
pub fn parse(integration: &str, value: &[u8]) -> Result<IntegrationSettings, SettingsError> {
    parse_config(integration, value).map(|config| IntegrationSettings::of(&config))
}

fn parse_config(integration: &str, value: &[u8]) -> Result<IntegrationConfig, SettingsError> {
    let invalid = |message: String| SettingsError::Invalid {
        integration: integration.to_owned(),
        bucket: names::CONFIG_BUCKET,
        message,
    };
    let text = std::str::from_utf8(value).map_err(|_| invalid("it is not UTF-8 text".into()))?;
    IntegrationConfig::from_toml(text).map_err(|e| invalid(e.to_string()))
}

/// The Sage People clients, one per credential set, built on first use.
#[derive(Debug)]
pub struct Sources {
    config: Arc<ExtractorConfig>,
    secrets: SecretSource,
    clients: Mutex<HashMap<String, SageClient>>,
}

impl Sources {
    /// Clients of the sets in `config`, with secrets from `secrets`.
    pub fn new(config: Arc<ExtractorConfig>, secrets: SecretSource) -> Sources {
        Sources {
            config,
            secrets,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The login host of credential set `name` ([`crate::config::CredentialSet::login_host`]),
    /// if it is configured.
    pub fn login_host(&self, name: &str) -> Option<String> {
        self.config.credentials.get(name)?.login_host()
    }

    /// The client of credential set `name`; the error says what to configure.
    pub fn client(&self, name: &str) -> Result<SageClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(name) {
            return Ok(client.clone());
        }
        let sage_config = self
            .config
            .sage_config_with(name, &self.secrets)
            .map_err(|e| e.to_string())?;
        let client = SageClient::new(sage_config).map_err(|e| e.to_string())?;
        clients.insert(name.to_owned(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_stored_config() {
        let mut config = IntegrationConfig::default_for("acme");
        config.credentials = "emea".into();
        config.source_filter = Some("workAddress.country eq 'France'".into());
        let settings = parse("acme", config.to_toml().as_bytes()).unwrap();
        assert_eq!(settings.credentials, "emea");
        assert_eq!(
            settings.source_filter.as_deref(),
            Some("workAddress.country eq 'France'")
        );
    }

    #[test]
    fn an_invalid_stored_config_says_how_to_fix_it() {
        let err = parse("acme", b"type = 3").unwrap_err().to_string();
        assert!(err.contains("integration config of acme"), "{err}");
        assert!(err.contains("syncctl"), "{err}");
    }
}
