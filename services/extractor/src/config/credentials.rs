//! Named Sage People credential sets (`[credentials.<name>]`; `default` also from the
//! `SAGE_PEOPLE_*` variables): their checks at start-up, and the Sage People client
//! configuration each one gives, with its secrets read from a [`SecretSource`].

use std::path::Path;
use std::time::Duration;

use peoplesync_runtime::{ConfigError, SecretSource};
use peoplesync_sage_people::{Credentials, SageConfig};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ExtractorConfig;

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
    /// The JWT bearer audience (default: `https://login.salesforce.com`, or
    /// `https://test.salesforce.com` for sandbox login hosts; never the My Domain host).
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

impl CredentialSet {
    /// The host of the login URL, in lower case: with the set's name, it tells which Sage
    /// People org a run reads (a sandbox's login host is not production's). `None` when the
    /// URL cannot be read (the client refuses it).
    pub fn login_host(&self) -> Option<String> {
        let url = url::Url::parse(self.login_url.trim().trim_end_matches('/')).ok()?;
        url.host_str().map(str::to_ascii_lowercase)
    }

    /// Checks set `name` without the network; the message names its key.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if self.login_url.trim().is_empty() {
            return Err(ConfigError(format!(
                "credentials.{name}.login_url is empty (SAGE_PEOPLE_LOGIN_URL for the default set)"
            )));
        }
        if self.client_id.trim().is_empty() {
            return Err(ConfigError(format!(
                "credentials.{name}.client_id is empty (SAGE_PEOPLE_CLIENT_ID for the default set)"
            )));
        }
        if self.grant == Grant::ClientCredentials
            && let Some(problem) =
                peoplesync_sage_people::client_credentials_host_problem(&self.login_url)
        {
            return Err(ConfigError(format!(
                "credentials.{name}.login_url (SAGE_PEOPLE_LOGIN_URL for the default set): {problem}"
            )));
        }
        if self.grant != Grant::ClientCredentials && self.username.is_none() {
            return Err(ConfigError(format!(
                "credentials.{name}.username is required for the {:?} grant",
                self.grant
            )));
        }
        Ok(())
    }
}

impl ExtractorConfig {
    /// The Sage People client configuration of credential set `name`, secrets from the
    /// environment.
    pub fn sage_config(&self, name: &str) -> Result<SageConfig, ConfigError> {
        self.sage_config_with(name, &SecretSource::Environment)
    }

    /// The Sage People client configuration of credential set `name`, secrets from `secrets`.
    pub fn sage_config_with(
        &self,
        name: &str,
        secrets: &SecretSource,
    ) -> Result<SageConfig, ConfigError> {
        let set = self.credentials.get(name).ok_or_else(|| {
            ConfigError(format!(
                "credential set {name:?} is not configured; define [credentials.{name}] \
                 (or SAGE_PEOPLE_LOGIN_URL and SAGE_PEOPLE_CLIENT_ID for \"default\")"
            ))
        })?;
        let prefix = secret_prefix(name);
        let secret = |what: &str| -> Result<SecretString, ConfigError> {
            secrets
                .require(&format!("{prefix}_{what}"))
                .map_err(|e| ConfigError(format!("credential set {name:?}: {e}")))
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
        config.retry.max_elapsed = Duration::from_secs(self.sage_retry_secs);
        if let Some(path) = &self.ca_file {
            config.extra_roots =
                peoplesync_runtime::tls::load_ca_file("SAGE_PEOPLE_CA_FILE", Path::new(path))?;
        }
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

    fn with_set(name: &str, set: CredentialSet) -> ExtractorConfig {
        let mut config = ExtractorConfig::default();
        config.credentials.insert(name.into(), set);
        config
    }

    /// A config with one client-credentials set `name` on a My Domain host.
    fn my_domain_set(name: &str) -> ExtractorConfig {
        with_set(
            name,
            CredentialSet {
                login_url: format!("https://{name}.my.salesforce.com"),
                client_id: "id".into(),
                ..Default::default()
            },
        )
    }

    /// Why `config` is refused (it must be).
    fn refusal(config: &ExtractorConfig) -> String {
        match config.validate() {
            Ok(()) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn secret_variables_are_named_after_the_set() {
        assert_eq!(secret_prefix("default"), "SAGE_PEOPLE");
        assert_eq!(secret_prefix("emea-prod"), "SAGE_PEOPLE_EMEA_PROD");
    }

    #[test]
    fn a_set_without_login_url_is_refused_with_its_key() {
        let config = with_set(
            "default",
            CredentialSet {
                client_id: "x".into(),
                ..Default::default()
            },
        );
        let err = refusal(&config);
        assert!(err.contains("credentials.default.login_url"), "{err}");
    }

    #[test]
    fn client_credentials_on_login_salesforce_com_are_refused_at_start_naming_my_domain() {
        let mut config = with_set(
            "default",
            CredentialSet {
                login_url: "https://login.salesforce.com".into(),
                client_id: "3MVG9".into(),
                ..CredentialSet::default()
            },
        );
        let err = refusal(&config);
        assert!(err.contains("credentials.default.login_url"), "{err}");
        assert!(err.contains("my.salesforce.com"), "{err}");
        if let Some(set) = config.credentials.get_mut("default") {
            set.grant = Grant::JwtBearer;
            set.username = Some("api@acme.com".into());
        }
        assert!(
            config.validate().is_ok(),
            "JWT bearer may use login.salesforce.com"
        );
    }

    #[test]
    fn secrets_come_from_the_chosen_source() {
        let config = my_domain_set("emea");
        let missing = config
            .sage_config_with("emea", &SecretSource::fixed([]))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("SAGE_PEOPLE_EMEA_CLIENT_SECRET"),
            "{missing}"
        );
        let secrets = SecretSource::fixed([("SAGE_PEOPLE_EMEA_CLIENT_SECRET", "hunter2")]);
        let sage = config.sage_config_with("emea", &secrets).unwrap();
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert!(!format!("{sage:?}").contains("hunter2"));
    }

    #[test]
    fn a_long_sage_retry_budget_is_spent_in_full() {
        let mut config = my_domain_set("default");
        config.sage_retry_secs = 1_800;
        let secrets = SecretSource::fixed([("SAGE_PEOPLE_CLIENT_SECRET", "s")]);
        let policy = config.sage_config_with("default", &secrets).unwrap().retry;
        let budget = Duration::from_secs(1_800);
        assert_eq!(policy.max_elapsed, budget);
        // The shortest delays the jitter allows: the budget, not a count, still ends them.
        let elapsed = policy.span(0.0);
        assert!(
            elapsed > budget - policy.max_delay && elapsed <= budget,
            "retries span {elapsed:?} of a {budget:?} budget"
        );
    }
}
