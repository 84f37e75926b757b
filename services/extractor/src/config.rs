//! The extractor's configuration: a TOML file (`--config`) with environment overrides, and
//! secrets from the environment or files only. Validated once at start-up; every key is in
//! `docs/configuration.md`. Loading, secrets and CA files work as in every service
//! (`peoplesync_runtime`); the credential sets and the run policies have their own modules.

mod credentials;
mod runs;

use std::collections::BTreeMap;
use std::path::Path;

use peoplesync_runtime::service_config::{self, SHARED_ENV_VARS, ShortName};
use serde::{Deserialize, Serialize};

pub use credentials::{CredentialSet, Grant, secret_prefix};
pub use peoplesync_runtime::{ConfigError, SecretSource};
pub use runs::{RemovalPolicy, RunRetry};

/// The shipped configuration file: every key, its default and what it does
/// (`sage-extractor --print-default-config`).
pub const DEFAULT_TOML: &str = include_str!("../default-config.toml");

/// The service name in its environment prefix: `PEOPLESYNC_EXTRACTOR__<KEY>`.
pub const ENV_SERVICE: &str = "extractor";

/// Every environment variable the extractor reads, besides the per-credential-set secrets
/// `SAGE_PEOPLE_<NAME>_{CLIENT_SECRET,PRIVATE_KEY,PASSWORD}[_FILE]` (deployment manifests are
/// checked against it).
pub const ENV_VARS: &[&str] = &peoplesync_bus::connect::with_env_vars::<
    { OWN_ENV_VARS.len() + peoplesync_bus::connect::ENV_VARS.len() },
>(&OWN_ENV_VARS);

/// The variables of this service itself; [`ENV_VARS`] adds the NATS connection ones.
const OWN_ENV_VARS: [&str; SHARED_ENV_VARS.len() + EXTRACTOR_ENV_VARS.len()] =
    service_config::concat(&[SHARED_ENV_VARS, EXTRACTOR_ENV_VARS]);

/// The variables only the extractor reads.
const EXTRACTOR_ENV_VARS: &[&str] = &[
    "PEOPLESYNC_EXTRACTOR_CONFIG",
    "SAGE_PEOPLE_LOGIN_URL",
    "SAGE_PEOPLE_CLIENT_ID",
    "SAGE_PEOPLE_GRANT",
    "SAGE_PEOPLE_USERNAME",
    "SAGE_PEOPLE_AUDIENCE",
    "SAGE_PEOPLE_CA_FILE",
    "SAGE_PEOPLE_CLIENT_SECRET",
    "SAGE_PEOPLE_CLIENT_SECRET_FILE",
    "SAGE_PEOPLE_PRIVATE_KEY",
    "SAGE_PEOPLE_PRIVATE_KEY_FILE",
    "SAGE_PEOPLE_PASSWORD",
    "SAGE_PEOPLE_PASSWORD_FILE",
    "PEOPLESYNC_TEST_TODAY_FILE",
];

/// The extractor's short environment names besides the shared ones, and the key each sets.
const SHORT_NAMES: &[ShortName] = &[
    (peoplesync_runtime::http::LISTEN_ENV, "http_listen"),
    ("SAGE_PEOPLE_LOGIN_URL", "credentials.default.login_url"),
    ("SAGE_PEOPLE_CLIENT_ID", "credentials.default.client_id"),
    ("SAGE_PEOPLE_GRANT", "credentials.default.grant"),
    ("SAGE_PEOPLE_USERNAME", "credentials.default.username"),
    ("SAGE_PEOPLE_AUDIENCE", "credentials.default.audience"),
    ("SAGE_PEOPLE_CA_FILE", "ca_file"),
];

fn one() -> usize {
    1
}

fn sage_retry_secs() -> u64 {
    120
}

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
    /// How long a Sage People request failing transiently (5xx, timeouts, connection errors,
    /// answers not of the documented shape) is retried before the run stops, in seconds
    /// (default 120). The run is then resumed under `run_retry`, unless the answers decoded but
    /// broke the listing's contract: those fail the same way again, so the run is not resumed.
    #[serde(default = "sage_retry_secs")]
    pub sage_retry_secs: u64,
    /// Share of the org's daily API quota (0 < share <= 1) past which a run stops, resumable,
    /// so the integration never starves the customer's other Salesforce users.
    pub quota_share: f64,
    /// Time to live of the scheduler lease, in seconds: a standby replica takes over this long
    /// after the scheduling replica stopped renewing it.
    pub lease_ttl_secs: u64,
    /// After SIGTERM, how long the service may take to stop, in seconds: the run in progress
    /// stops between two pages and records its checkpoint. Past it (NATS not answering), the
    /// process exits with status 1 and the run resumes from its last recorded checkpoint.
    pub shutdown_grace_secs: u64,
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
            shutdown_grace_secs: 30,
            replica: None,
            http_listen: "127.0.0.1:9090".into(),
            ca_file: None,
            removals: RemovalPolicy::default(),
            run_retry: RunRetry::default(),
            credentials: BTreeMap::new(),
        }
    }
}

impl ExtractorConfig {
    /// Loads defaults, then the TOML file (if any), then environment overrides: any key as
    /// `PEOPLESYNC_EXTRACTOR__<KEY>` (sections joined by `__`), then the short names
    /// (`NATS_URL`, `SAGE_PEOPLE_LOGIN_URL`, …).
    pub fn load(file: Option<&Path>) -> Result<ExtractorConfig, ConfigError> {
        let config = service_config::load(ENV_SERVICE, file, SHORT_NAMES, |c: &mut Self| {
            &mut c.integrations
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        peoplesync_bus::NatsServers::parse(&self.nats_url)
            .map_err(|e| ConfigError(e.to_string()))?;
        service_config::check_stream_replicas(self.stream_replicas)?;
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
        service_config::check_shutdown_grace(self.shutdown_grace_secs)?;
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
            set.validate(name)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_shutdown_grace_outside_one_to_six_hundred_seconds_is_refused_naming_it() {
        for secs in [0, 601] {
            let config = ExtractorConfig {
                shutdown_grace_secs: secs,
                ..Default::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("shutdown_grace_secs"), "{err}");
        }
        let config = ExtractorConfig {
            shutdown_grace_secs: 600,
            ..Default::default()
        };
        assert!(config.validate().is_ok());
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
