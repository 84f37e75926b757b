//! The extractor's configuration: a TOML file (`--config`) with environment overrides, and
//! secrets from the environment or files only. Validated once at start-up; every key is in
//! `docs/configuration.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use peoplesync_sage_people::{Credentials, SageConfig};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Every environment variable the extractor reads, besides the per-credential-set secrets
/// `SAGE_PEOPLE_<NAME>_{CLIENT_SECRET,PRIVATE_KEY,PASSWORD}[_FILE]` (deployment manifests are
/// checked against it).
pub const ENV_VARS: &[&str] = &[
    "NATS_URL",
    "PEOPLESYNC_INTEGRATION",
    "PEOPLESYNC_EXTRACTOR_CONFIG",
    "SAGE_PEOPLE_LOGIN_URL",
    "SAGE_PEOPLE_CLIENT_ID",
    "SAGE_PEOPLE_GRANT",
    "SAGE_PEOPLE_USERNAME",
    "SAGE_PEOPLE_AUDIENCE",
    "SAGE_PEOPLE_CLIENT_SECRET",
    "SAGE_PEOPLE_CLIENT_SECRET_FILE",
    "SAGE_PEOPLE_PRIVATE_KEY",
    "SAGE_PEOPLE_PRIVATE_KEY_FILE",
    "SAGE_PEOPLE_PASSWORD",
    "SAGE_PEOPLE_PASSWORD_FILE",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// The extractor's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorConfig {
    /// NATS server URL(s), comma separated (`NATS_URL`).
    pub nats_url: String,
    /// Integrations this extractor serves (`PEOPLESYNC_INTEGRATION`, comma separated).
    pub integrations: Vec<String>,
    /// Publish acks awaited at once (pipelining window).
    pub publish_window: usize,
    /// Timeout of every Sage People request, in seconds.
    pub request_timeout_secs: u64,
    /// Named Sage People credential sets; `default` comes from the `SAGE_PEOPLE_*` variables.
    pub credentials: BTreeMap<String, CredentialSet>,
}

/// One named set of Sage People credentials (the "Local installation" of the seed). Secrets
/// are not part of it: they come from `SAGE_PEOPLE_[<NAME>_]CLIENT_SECRET`, `..._PASSWORD` and
/// `..._PRIVATE_KEY` (each also as `_FILE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSet {
    /// The org's login URL (My Domain, or login/test.salesforce.com).
    pub login_url: String,
    /// `client_credentials` (default), `jwt_bearer` or `password`.
    #[serde(default)]
    pub grant: Grant,
    /// The External Client App's consumer key.
    pub client_id: String,
    /// The API user's username (JWT bearer and password grants).
    #[serde(default)]
    pub username: Option<String>,
    /// The JWT audience (default: the login URL).
    #[serde(default)]
    pub audience: Option<String>,
}

/// The OAuth grant of a credential set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Client credentials (recommended).
    #[default]
    ClientCredentials,
    /// JWT bearer with an RS256 private key.
    JwtBearer,
    /// Username and password (legacy).
    Password,
}

impl Default for ExtractorConfig {
    fn default() -> Self {
        ExtractorConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            integrations: vec!["sage-people".into()],
            publish_window: 512,
            request_timeout_secs: 30,
            credentials: BTreeMap::new(),
        }
    }
}

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl ExtractorConfig {
    /// Loads defaults, then the TOML file (if any), then environment overrides.
    pub fn load(file: Option<&Path>) -> Result<ExtractorConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ExtractorConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::raw()
                .only(&[
                    "NATS_URL",
                    "SAGE_PEOPLE_LOGIN_URL",
                    "SAGE_PEOPLE_CLIENT_ID",
                    "SAGE_PEOPLE_GRANT",
                    "SAGE_PEOPLE_USERNAME",
                    "SAGE_PEOPLE_AUDIENCE",
                ])
                .map(|key| {
                    match key.as_str() {
                        "NATS_URL" => "nats_url",
                        "SAGE_PEOPLE_LOGIN_URL" => "credentials.default.login_url",
                        "SAGE_PEOPLE_CLIENT_ID" => "credentials.default.client_id",
                        "SAGE_PEOPLE_GRANT" => "credentials.default.grant",
                        "SAGE_PEOPLE_USERNAME" => "credentials.default.username",
                        _ => "credentials.default.audience",
                    }
                    .into()
                }),
        );
        let mut config: ExtractorConfig =
            figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        if let Ok(list) = std::env::var("PEOPLESYNC_INTEGRATION") {
            config.integrations = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.integrations.is_empty() {
            return Err(ConfigError(
                "no integration configured; set PEOPLESYNC_INTEGRATION or `integrations`".into(),
            ));
        }
        for id in &self.integrations {
            peoplesync_bus::names::validate_integration_id(id).map_err(ConfigError)?;
        }
        if self.publish_window == 0 {
            return Err(ConfigError("publish_window must be at least 1".into()));
        }
        for (name, set) in &self.credentials {
            if set.login_url.trim().is_empty() {
                return Err(ConfigError(format!(
                    "credentials.{name}.login_url is empty (SAGE_PEOPLE_LOGIN_URL for the default set)"
                )));
            }
            if set.client_id.trim().is_empty() {
                return Err(ConfigError(format!(
                    "credentials.{name}.client_id is empty (SAGE_PEOPLE_CLIENT_ID for the default set)"
                )));
            }
            if set.grant != Grant::ClientCredentials && set.username.is_none() {
                return Err(ConfigError(format!(
                    "credentials.{name}.username is required for the {:?} grant",
                    set.grant
                )));
            }
        }
        Ok(())
    }

    /// The Sage People client configuration of credential set `name`, secrets included.
    pub fn sage_config(&self, name: &str) -> Result<SageConfig, ConfigError> {
        let set = self.credentials.get(name).ok_or_else(|| {
            ConfigError(format!(
                "credential set {name:?} is not configured; define [credentials.{name}] \
                 (or SAGE_PEOPLE_LOGIN_URL and SAGE_PEOPLE_CLIENT_ID for \"default\")"
            ))
        })?;
        let prefix = secret_prefix(name);
        let secret = |what: &str| -> Result<SecretString, ConfigError> {
            peoplesync_runtime::require(&format!("{prefix}_{what}"))
                .map_err(|e| ConfigError(e.to_string()))
        };
        let credentials = match set.grant {
            Grant::ClientCredentials => Credentials::ClientCredentials {
                client_id: set.client_id.clone(),
                client_secret: secret("CLIENT_SECRET")?,
            },
            Grant::JwtBearer => Credentials::JwtBearer {
                client_id: set.client_id.clone(),
                username: set.username.clone().unwrap_or_default(),
                audience: set.audience.clone(),
                private_key_pem: secret("PRIVATE_KEY")?,
            },
            Grant::Password => Credentials::Password {
                client_id: set.client_id.clone(),
                client_secret: secret("CLIENT_SECRET")?,
                username: set.username.clone().unwrap_or_default(),
                password: secret("PASSWORD")?,
            },
        };
        let mut config = SageConfig::new(set.login_url.trim_end_matches('/'), credentials);
        config.request_timeout = Duration::from_secs(self.request_timeout_secs.max(1));
        Ok(config)
    }
}

/// `SAGE_PEOPLE` for the default set, `SAGE_PEOPLE_<NAME>` (upper case, `-` as `_`) otherwise.
pub fn secret_prefix(name: &str) -> String {
    if name == "default" {
        "SAGE_PEOPLE".to_owned()
    } else {
        format!(
            "SAGE_PEOPLE_{}",
            name.to_ascii_uppercase().replace(['-', '.', ' '], "_")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_variables_are_named_after_the_set() {
        assert_eq!(secret_prefix("default"), "SAGE_PEOPLE");
        assert_eq!(secret_prefix("emea-prod"), "SAGE_PEOPLE_EMEA_PROD");
    }

    #[test]
    fn a_set_without_login_url_is_refused_with_its_key() {
        let mut config = ExtractorConfig::default();
        config.credentials.insert(
            "default".into(),
            CredentialSet {
                client_id: "x".into(),
                ..Default::default()
            },
        );
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("credentials.default.login_url"), "{err}");
    }

    #[test]
    fn bad_integration_ids_are_refused() {
        let config = ExtractorConfig {
            integrations: vec!["a.b".into()],
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }
}
