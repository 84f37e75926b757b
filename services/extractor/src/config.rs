//! The extractor's configuration: a TOML file (`--config`) with environment overrides, and
//! secrets from the environment or files only. Validated once at start-up; every key is in
//! `docs/configuration.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use peoplesync_runtime::SecretError;
use peoplesync_sage_people::{Credentials, SageConfig};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Every environment variable the extractor reads, besides the per-credential-set secrets
/// `SAGE_PEOPLE_<NAME>_{CLIENT_SECRET,PRIVATE_KEY,PASSWORD}[_FILE]` (deployment manifests are
/// checked against it).
pub const ENV_VARS: &[&str] = &peoplesync_bus::connect::with_env_vars::<
    { OWN_ENV_VARS.len() + peoplesync_bus::connect::ENV_VARS.len() },
>(OWN_ENV_VARS);

/// The variables of this service itself; [`ENV_VARS`] adds the NATS connection ones.
const OWN_ENV_VARS: &[&str] = &[
    "NATS_URL",
    "PEOPLESYNC_INTEGRATION",
    "PEOPLESYNC_EXTRACTOR_CONFIG",
    "SAGE_PEOPLE_LOGIN_URL",
    "SAGE_PEOPLE_CLIENT_ID",
    "SAGE_PEOPLE_GRANT",
    "SAGE_PEOPLE_USERNAME",
    "SAGE_PEOPLE_AUDIENCE",
    "SAGE_PEOPLE_CA_FILE",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "SAGE_PEOPLE_CLIENT_SECRET",
    "SAGE_PEOPLE_CLIENT_SECRET_FILE",
    "SAGE_PEOPLE_PRIVATE_KEY",
    "SAGE_PEOPLE_PRIVATE_KEY_FILE",
    "SAGE_PEOPLE_PASSWORD",
    "SAGE_PEOPLE_PASSWORD_FILE",
    "PEOPLESYNC_REPLICA",
    "PEOPLESYNC_HTTP_LISTEN",
    "PEOPLESYNC_STREAM_REPLICAS",
    "RUST_LOG",
    "LOG_FORMAT",
    "PEOPLESYNC_TEST_TODAY_FILE",
];

fn one() -> usize {
    1
}

fn sage_retry_secs() -> u64 {
    120
}

/// The shipped configuration file: every key, its default and what it does
/// (`sage-extractor --print-default-config`).
pub const DEFAULT_TOML: &str = include_str!("../default-config.toml");

/// The service name in its environment prefix: `PEOPLESYNC_EXTRACTOR__<KEY>`.
pub const ENV_SERVICE: &str = "extractor";

/// The extractor's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorConfig {
    /// NATS server URL(s), comma separated (`NATS_URL`).
    pub nats_url: String,
    /// Copies of each stream and KV bucket in a NATS cluster (`PEOPLESYNC_STREAM_REPLICAS`;
    /// 1 on a single server, 3 in production). Never lowered on an existing stream.
    #[serde(default = "one")]
    pub stream_replicas: usize,
    /// Integrations this extractor serves (`PEOPLESYNC_INTEGRATION`, comma separated).
    pub integrations: Vec<String>,
    /// Publish acks awaited at once (pipelining window).
    pub publish_window: usize,
    /// Timeout of every Sage People request, in seconds.
    pub request_timeout_secs: u64,
    /// How long a Sage People request failing transiently (5xx, timeouts, connection errors) is
    /// retried before the run stops, resumable, in seconds (default 120). The run is then
    /// resumed under `run_retry`.
    #[serde(default = "sage_retry_secs")]
    pub sage_retry_secs: u64,
    /// Share of the org's daily API quota (0 < share <= 1) past which a run stops, resumable,
    /// so the integration never starves the customer's other Salesforce users.
    pub quota_share: f64,
    /// Time to live of the scheduler lease, in seconds: a standby replica takes over this long
    /// after the scheduling replica stopped renewing it.
    pub lease_ttl_secs: u64,
    /// This replica's name in leases and logs (`PEOPLESYNC_REPLICA`; default: host name + pid).
    pub replica: Option<String>,
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint (`PEOPLESYNC_HTTP_LISTEN`).
    pub http_listen: String,
    /// A PEM file of certificate authorities to trust for Sage People besides the OS store
    /// and the public roots, e.g. a TLS-inspecting proxy's CA (`SAGE_PEOPLE_CA_FILE`).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// When removals are held for approval instead of published.
    pub removals: RemovalPolicy,
    /// How a run stopped by a NATS or transient Sage People failure is started again.
    #[serde(default)]
    pub run_retry: RunRetry,
    /// Named Sage People credential sets; `default` comes from the `SAGE_PEOPLE_*` variables.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialSet>,
}

/// The accidental-deletion guard: a full run whose removals exceed either limit publishes
/// none of them and holds them until an operator approves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemovalPolicy {
    /// Hold when more than this many workers disappeared (default 50).
    pub hold_above_count: u64,
    /// Hold when more than this share (0..1) of the previously listed workers disappeared
    /// (default 0.05).
    pub hold_above_share: f64,
}

impl Default for RemovalPolicy {
    fn default() -> Self {
        RemovalPolicy {
            hold_above_count: 50,
            hold_above_share: 0.05,
        }
    }
}

impl RemovalPolicy {
    /// Whether `removed` out of `previously_listed` workers must wait for approval.
    pub fn holds(&self, removed: u64, previously_listed: u64) -> bool {
        removed > self.hold_above_count
            || removed as f64 > self.hold_above_share * previously_listed as f64
    }
}

/// Retrying runs that stopped part-way but can resume from their checkpoint (NATS
/// unreachable, Sage People failing for longer than its two-minute retry budget): the scheduling
/// replica resumes them after `first_delay_secs`, doubling the pause after each further failure
/// up to `max_delay_secs`, at most `max_attempts` times. A run stopped by a configuration
/// problem or by the API quota is not retried (the first needs a fix, the second the next
/// scheduled run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunRetry {
    /// Retry at all (default true).
    pub enabled: bool,
    /// Pause before the first retry, in seconds (default 10).
    pub first_delay_secs: u64,
    /// Longest pause between retries, in seconds (default 900).
    pub max_delay_secs: u64,
    /// Retries of one run before waiting for the next scheduled or manual run (default 10).
    pub max_attempts: u32,
}

impl Default for RunRetry {
    fn default() -> Self {
        RunRetry {
            enabled: true,
            first_delay_secs: 10,
            max_delay_secs: 900,
            max_attempts: 10,
        }
    }
}

impl RunRetry {
    /// The pause before retry number `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.min(32));
        Duration::from_secs(
            self.first_delay_secs
                .saturating_mul(factor)
                .min(self.max_delay_secs),
        )
    }
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

impl Default for ExtractorConfig {
    fn default() -> Self {
        ExtractorConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            stream_replicas: 1,
            integrations: vec!["sage-people".into()],
            publish_window: 512,
            request_timeout_secs: 30,
            sage_retry_secs: sage_retry_secs(),
            quota_share: 0.8,
            lease_ttl_secs: 15,
            replica: None,
            http_listen: "127.0.0.1:9090".into(),
            ca_file: None,
            removals: RemovalPolicy::default(),
            run_retry: RunRetry::default(),
            credentials: BTreeMap::new(),
        }
    }
}

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl ExtractorConfig {
    /// Loads defaults, then the TOML file (if any), then environment overrides: any key as
    /// `PEOPLESYNC_EXTRACTOR__<KEY>` (sections joined by `__`), then the short names
    /// (`NATS_URL`, `SAGE_PEOPLE_LOGIN_URL`, …).
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
        figment = figment.merge(peoplesync_runtime::env_config::provider(ENV_SERVICE));
        figment = figment.merge(
            Env::raw()
                .only(&[
                    "NATS_URL",
                    "PEOPLESYNC_REPLICA",
                    "PEOPLESYNC_HTTP_LISTEN",
                    "PEOPLESYNC_STREAM_REPLICAS",
                    "SAGE_PEOPLE_LOGIN_URL",
                    "SAGE_PEOPLE_CLIENT_ID",
                    "SAGE_PEOPLE_GRANT",
                    "SAGE_PEOPLE_USERNAME",
                    "SAGE_PEOPLE_AUDIENCE",
                    "SAGE_PEOPLE_CA_FILE",
                ])
                .map(|key| {
                    match key.as_str() {
                        "NATS_URL" => "nats_url",
                        "PEOPLESYNC_REPLICA" => "replica",
                        "PEOPLESYNC_HTTP_LISTEN" => "http_listen",
                        "PEOPLESYNC_STREAM_REPLICAS" => "stream_replicas",
                        "SAGE_PEOPLE_LOGIN_URL" => "credentials.default.login_url",
                        "SAGE_PEOPLE_CLIENT_ID" => "credentials.default.client_id",
                        "SAGE_PEOPLE_GRANT" => "credentials.default.grant",
                        "SAGE_PEOPLE_USERNAME" => "credentials.default.username",
                        "SAGE_PEOPLE_CA_FILE" => "ca_file",
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
        peoplesync_bus::NatsServers::parse(&self.nats_url)
            .map_err(|e| ConfigError(e.to_string()))?;
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError(format!(
                "stream_replicas = {} (PEOPLESYNC_STREAM_REPLICAS): JetStream allows 1 to 5 replicas",
                self.stream_replicas
            )));
        }
        if self.integrations.is_empty() {
            return Err(ConfigError(
                "no integration configured; set PEOPLESYNC_INTEGRATION or `integrations`".into(),
            ));
        }
        for id in &self.integrations {
            peoplesync_bus::names::validate_integration_id(id).map_err(ConfigError)?;
        }
        if self.publish_window == 0 || self.publish_window > 65_536 {
            return Err(ConfigError(
                "publish_window must be between 1 and 65536".into(),
            ));
        }
        if !(self.quota_share > 0.0 && self.quota_share <= 1.0) {
            return Err(ConfigError(format!(
                "quota_share is {}; it must be above 0 and at most 1 (0.8 stops runs at 80% of the org's daily API quota)",
                self.quota_share
            )));
        }
        if !(0.0..=1.0).contains(&self.removals.hold_above_share) {
            return Err(ConfigError(format!(
                "removals.hold_above_share is {}; it must be between 0 and 1 (0.05 holds removals of more than 5% of the workers)",
                self.removals.hold_above_share
            )));
        }
        if self.lease_ttl_secs == 0 || self.lease_ttl_secs > 3600 {
            return Err(ConfigError(
                "lease_ttl_secs must be between 1 and 3600".into(),
            ));
        }
        if self.sage_retry_secs == 0 || self.sage_retry_secs > 3600 {
            return Err(ConfigError(format!(
                "sage_retry_secs = {}: it must be between 1 and 3600 (default 120)",
                self.sage_retry_secs
            )));
        }
        if self.run_retry.first_delay_secs == 0
            || self.run_retry.max_delay_secs < self.run_retry.first_delay_secs
            || self.run_retry.max_attempts == 0
        {
            return Err(ConfigError(format!(
                "run_retry: first_delay_secs ({}) must be at least 1 and at most max_delay_secs ({}), and max_attempts ({}) at least 1 (set enabled = false to turn retries off)",
                self.run_retry.first_delay_secs,
                self.run_retry.max_delay_secs,
                self.run_retry.max_attempts
            )));
        }
        if self.http_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "http_listen {:?} is not an address such as 127.0.0.1:9090 (PEOPLESYNC_HTTP_LISTEN)",
                self.http_listen
            )));
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
            if set.grant == Grant::ClientCredentials
                && let Some(problem) =
                    peoplesync_sage_people::client_credentials_host_problem(&set.login_url)
            {
                return Err(ConfigError(format!(
                    "credentials.{name}.login_url (SAGE_PEOPLE_LOGIN_URL for the default set): {problem}"
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

    /// This replica's name: `replica`, else host name and process id.
    pub fn replica_name(&self) -> String {
        match &self.replica {
            Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "sage-extractor".to_owned());
                format!("{host}-{}", std::process::id())
            }
        }
    }

    /// The bus settings for this extractor (stream replicas).
    pub fn bus_settings(&self) -> peoplesync_bus::BusSettings {
        peoplesync_bus::BusSettings {
            replicas: self.stream_replicas,
            ..peoplesync_bus::BusSettings::default()
        }
    }

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
                peoplesync_runtime::tls::load_ca_file("SAGE_PEOPLE_CA_FILE", Path::new(path))
                    .map_err(|e| ConfigError(e.to_string()))?;
        }
        Ok(config)
    }
}

/// Where the secrets of credential sets come from: the environment (`NAME` or `NAME_FILE`),
/// or, for tests and embedding, a fixed map keyed by the same variable names.
#[derive(Clone, Default)]
pub enum SecretSource {
    /// `NAME` or the file named by `NAME_FILE`.
    #[default]
    Environment,
    /// A fixed map from variable name to secret.
    Fixed(BTreeMap<String, SecretString>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Environment => f.write_str("SecretSource::Environment"),
            SecretSource::Fixed(map) => f
                .debug_struct("SecretSource::Fixed")
                .field("names", &map.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl SecretSource {
    /// A fixed source from `(variable, secret)` pairs.
    pub fn fixed<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SecretSource {
        SecretSource::Fixed(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretString::from(v.to_owned())))
                .collect(),
        )
    }

    /// Secret `name`, or an error naming the variables to set.
    pub fn require(&self, name: &str) -> Result<SecretString, SecretError> {
        match self {
            SecretSource::Environment => peoplesync_runtime::require(name),
            SecretSource::Fixed(map) => {
                map.get(name).cloned().ok_or_else(|| SecretError::Missing {
                    name: name.to_owned(),
                })
            }
        }
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
    fn removals_are_held_above_either_limit() {
        let policy = RemovalPolicy::default();
        assert!(!policy.holds(3, 1000));
        assert!(!policy.holds(50, 10_000));
        assert!(policy.holds(51, 10_000));
        assert!(policy.holds(6, 100));
        assert!(!policy.holds(5, 100));
    }

    #[test]
    fn client_credentials_on_login_salesforce_com_are_refused_at_start_naming_my_domain() {
        let mut config = ExtractorConfig::default();
        config.credentials.insert(
            "default".into(),
            CredentialSet {
                login_url: "https://login.salesforce.com".into(),
                client_id: "3MVG9".into(),
                ..CredentialSet::default()
            },
        );
        let err = config.validate().unwrap_err().to_string();
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
    fn a_quota_share_outside_zero_to_one_is_refused() {
        for share in [0.0, -0.1, 1.5, f64::NAN] {
            let config = ExtractorConfig {
                quota_share: share,
                ..Default::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("quota_share"), "{err}");
        }
    }

    #[test]
    fn secrets_come_from_the_chosen_source() {
        let mut config = ExtractorConfig::default();
        config.credentials.insert(
            "emea".into(),
            CredentialSet {
                login_url: "https://emea.my.salesforce.com".into(),
                client_id: "id".into(),
                ..Default::default()
            },
        );
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
    fn bad_integration_ids_are_refused() {
        let config = ExtractorConfig {
            integrations: vec!["a.b".into()],
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }
}
