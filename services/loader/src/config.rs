//! The loader's configuration: a TOML file (`--config`) with environment overrides; the
//! Oomnitza token from the environment or a file only. Every key is in `docs/configuration.md`.

use std::path::Path;
use std::time::Duration;

use peoplesync_oomnitza::{OomnitzaAuth, OomnitzaConfig};
use peoplesync_runtime::service_config::{self, SHARED_ENV_VARS, ShortName};
use serde::{Deserialize, Serialize};

pub use peoplesync_runtime::ConfigError;

/// Every environment variable the loader reads (deployment manifests are checked against it).
pub const ENV_VARS: &[&str] = &peoplesync_bus::connect::with_env_vars::<
    { OWN_ENV_VARS.len() + peoplesync_bus::connect::ENV_VARS.len() },
>(&OWN_ENV_VARS);

/// The variables of this service itself, its control plane's included; [`ENV_VARS`] adds the
/// NATS connection ones.
const OWN_ENV_VARS: [&str;
    SHARED_ENV_VARS.len() + LOADER_ENV_VARS.len() + peoplesync_control::config::ENV_VARS.len()] =
    service_config::concat(&[
        SHARED_ENV_VARS,
        LOADER_ENV_VARS,
        peoplesync_control::config::ENV_VARS,
    ]);

/// The variables only the loader reads, besides its control plane's.
const LOADER_ENV_VARS: &[&str] = &[
    "PEOPLESYNC_WORKER_THREADS",
    "PEOPLESYNC_LOADER_CONFIG",
    "PEOPLESYNC_INTEGRATION_FILE",
    "OOMNITZA_URL",
    "OOMNITZA_LOGIN",
    "OOMNITZA_CA_FILE",
    "OOMNITZA_API_TOKEN",
    "OOMNITZA_API_TOKEN_FILE",
    "OOMNITZA_PASSWORD",
    "OOMNITZA_PASSWORD_FILE",
    "PEOPLESYNC_LEAVERS_WEBHOOK_URL",
    "PEOPLESYNC_LEAVERS_WEBHOOK_SECRET",
    "PEOPLESYNC_LEAVERS_WEBHOOK_SECRET_FILE",
];

/// The loader's short environment names besides the shared ones, and the key each sets.
const SHORT_NAMES: &[ShortName] = &[
    ("OOMNITZA_URL", "oomnitza.url"),
    ("OOMNITZA_LOGIN", "oomnitza.login"),
    ("OOMNITZA_CA_FILE", "oomnitza.ca_file"),
    ("PEOPLESYNC_WORKER_THREADS", "worker_threads"),
];

/// The shipped configuration file: every key, its default and what it does
/// (`oomnitza-loader --print-default-config`).
pub const DEFAULT_TOML: &str = include_str!("../default-config.toml");

/// The service name in its environment prefix: `PEOPLESYNC_LOADER__<KEY>`.
pub const ENV_SERVICE: &str = "loader";

/// The loader's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// NATS server URL(s), comma separated (`NATS_URL`).
    pub nats_url: String,
    /// Integrations whose configs are seeded with the shipped default when absent from KV
    /// (`PEOPLESYNC_INTEGRATION`, comma separated).
    pub integrations: Vec<String>,
    /// This replica's name in logs and finalize claims (`PEOPLESYNC_REPLICA`; default: host
    /// name and process id).
    pub replica: Option<String>,
    /// Oomnitza connection.
    pub oomnitza: OomnitzaSettings,
    /// Batching and concurrency.
    pub batch: BatchSettings,
    /// Retries of bulk requests.
    pub retry: RetrySettings,
    /// The adaptive rate limit on bulk requests.
    pub rate_limit: RateLimitSettings,
    /// The shared consumers' delivery settings (every replica applies them; keep them equal).
    pub consumer: ConsumerSettings,
    /// Copies of each stream and KV bucket in a NATS cluster (`PEOPLESYNC_STREAM_REPLICAS`):
    /// 1 on a single server, 3 in production. Never lowered on an existing stream.
    pub stream_replicas: usize,
    /// Threads running the replica (`PEOPLESYNC_WORKER_THREADS`). One is the default: a
    /// replica is the unit of scale, and on one thread (a current-thread runtime) it spends
    /// less CPU per event than on two (no wake-ups and frees across threads); add replicas,
    /// not threads.
    pub worker_threads: usize,
    /// Days a finalized run's record (state, counts) is kept after the run finished; 0 keeps
    /// records forever. Runs still holding removals for approval are always kept.
    pub run_retention_days: u64,
    /// Checking finalized runs against what Oomnitza holds.
    pub verify: VerifySettings,
    /// After SIGTERM, how long deliveries in flight may take to finish, in seconds. The whole
    /// stop takes at most [`STOP_MARGIN`] longer: then the replica exits with status 1 (its
    /// unacknowledged events are redelivered). Keep it [`STOP_MARGIN`] under the orchestrator's
    /// grace period.
    pub shutdown_grace_secs: u64,
}

/// What a stop may take beyond `shutdown_grace_secs`: the finalizer's last check, removing the
/// replica's announcement, the control plane's and `/metrics`' own stops.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

/// How finalized runs are checked against what Oomnitza holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// Read each finalized run's log and users back, and count as written only what Oomnitza
    /// holds. Off: `written` counts records Oomnitza accepted.
    pub enabled: bool,
    /// How long to wait for Oomnitza to finish processing a finalized portion, in seconds,
    /// before the run is marked unverified.
    pub processing_timeout_secs: u64,
    /// Records checked per group: their users are read back a few hundred per request.
    pub read_batch: usize,
}

/// Delivery settings of the integrations' shared consumers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Seconds an event may stay unacknowledged before it is delivered again (long retries
    /// send progress acks, so this bounds how long a crashed replica's events wait).
    pub ack_wait_secs: u64,
    /// Deliveries of one event before it is dead-lettered.
    pub max_deliver: i64,
    /// Unacknowledged events allowed per integration across all replicas: at least the
    /// replicas times what one holds (about `(in_flight + 5) × size + 2 × max(pull_batch,
    /// size)`, 1,100 by default) plus events nak'ed for a delayed retry, or the replicas that
    /// ask last wait for acks instead of loading.
    pub max_ack_pending: i64,
}

/// The adaptive (AIMD) rate limit on bulk requests of one replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Ceiling, in bulk requests per second (also the starting rate).
    pub max_per_second: f64,
    /// Floor the rate never drops below while Oomnitza answers 429.
    pub min_per_second: f64,
    /// Requests per second added back after each successful request.
    pub recover_step: f64,
}

/// Where and how to reach Oomnitza.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OomnitzaSettings {
    /// The tenant URL, `https://<tenant>.oomnitza.com` (`OOMNITZA_URL`).
    pub url: String,
    /// Login for password authentication (`OOMNITZA_LOGIN`); the password comes from
    /// `OOMNITZA_PASSWORD` / `OOMNITZA_PASSWORD_FILE`. Unused when an API token is set.
    pub login: Option<String>,
    /// Timeout of every Oomnitza request, in seconds.
    pub request_timeout_secs: u64,
    /// A PEM file of certificate authorities to trust for Oomnitza besides the OS store and
    /// the public roots, e.g. a TLS-inspecting proxy's CA (`OOMNITZA_CA_FILE`).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// How events are grouped into bulk requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Records per bulk request at most.
    pub size: usize,
    /// How long a partial batch waits for more records, in milliseconds.
    pub linger_ms: u64,
    /// Bulk requests in flight per replica.
    pub in_flight: usize,
    /// Messages asked for per pull request (small values spread work across replicas).
    pub pull_batch: usize,
}

/// How a failing bulk request is retried before its events are handed back to the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts per bulk request, the first included.
    pub max_attempts: usize,
    /// First retry delay, in milliseconds (doubles, with jitter).
    pub initial_delay_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    pub max_delay_ms: u64,
    /// Give up retrying in-process after this many seconds and let the stream redeliver.
    pub max_elapsed_secs: u64,
    /// While Oomnitza refuses the credentials, how often they are checked again, in seconds.
    pub credentials_retry_secs: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            integrations: vec!["sage-people".into()],
            replica: None,
            oomnitza: OomnitzaSettings {
                url: String::new(),
                login: None,
                request_timeout_secs: 30,
                ca_file: None,
            },
            batch: BatchSettings {
                size: 100,
                linger_ms: 50,
                in_flight: 4,
                pull_batch: 100,
            },
            retry: RetrySettings {
                max_attempts: 10,
                initial_delay_ms: 200,
                max_delay_ms: 10_000,
                max_elapsed_secs: 60,
                credentials_retry_secs: 60,
            },
            stream_replicas: 1,
            worker_threads: 1,
            run_retention_days: 90,
            shutdown_grace_secs: 25,
            verify: VerifySettings {
                enabled: true,
                processing_timeout_secs: 600,
                read_batch: 1_000,
            },
            consumer: ConsumerSettings {
                ack_wait_secs: 30,
                max_deliver: 8,
                max_ack_pending: 20_000,
            },
            rate_limit: RateLimitSettings {
                max_per_second: 1000.0,
                min_per_second: 0.5,
                recover_step: 1.0,
            },
        }
    }
}

impl LoaderConfig {
    /// Loads defaults, then the TOML file (if any), then environment overrides: any key as
    /// `PEOPLESYNC_LOADER__<KEY>` (sections joined by `__`), then the short names
    /// (`NATS_URL`, `OOMNITZA_URL`, …).
    pub fn load(file: Option<&Path>) -> Result<LoaderConfig, ConfigError> {
        let config = service_config::load(ENV_SERVICE, file, SHORT_NAMES, |c: &mut Self| {
            &mut c.integrations
        })?;
        config.validate()?;
        Ok(config)
    }

    /// How long finalized run records are kept (`None`: forever).
    pub fn run_retention(&self) -> Option<std::time::Duration> {
        (self.run_retention_days > 0)
            .then(|| std::time::Duration::from_secs(self.run_retention_days.saturating_mul(86_400)))
    }

    /// How long deliveries in flight may take to finish after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        peoplesync_bus::NatsServers::parse(&self.nats_url)
            .map_err(|e| ConfigError(e.to_string()))?;
        for id in &self.integrations {
            peoplesync_bus::names::validate_integration_id(id).map_err(ConfigError)?;
        }
        if self.oomnitza.url.trim().is_empty() {
            return Err(ConfigError(
                "oomnitza.url is empty; set OOMNITZA_URL to https://<tenant>.oomnitza.com".into(),
            ));
        }
        let b = &self.batch;
        if b.size == 0 || b.in_flight == 0 || b.pull_batch == 0 {
            return Err(ConfigError(
                "batch.size, batch.in_flight and batch.pull_batch must be at least 1".into(),
            ));
        }
        if b.size > 1000 {
            return Err(ConfigError(format!(
                "batch.size = {} is too large; Oomnitza bulk requests should carry at most 1000 records",
                b.size
            )));
        }
        let r = &self.rate_limit;
        if !(r.min_per_second > 0.0
            && r.max_per_second >= r.min_per_second
            && r.recover_step >= 0.0)
        {
            return Err(ConfigError(
                "rate_limit: need 0 < min_per_second <= max_per_second and recover_step >= 0"
                    .into(),
            ));
        }
        if !(1..=256).contains(&self.worker_threads) {
            return Err(ConfigError(format!(
                "worker_threads = {} (PEOPLESYNC_WORKER_THREADS): between 1 and 256",
                self.worker_threads
            )));
        }
        service_config::check_stream_replicas(self.stream_replicas)?;
        let c = &self.consumer;
        if c.ack_wait_secs == 0 || c.max_deliver < 1 || c.max_ack_pending < 1 {
            return Err(ConfigError(
                "consumer.ack_wait_secs, consumer.max_deliver and consumer.max_ack_pending must be at least 1".into(),
            ));
        }
        service_config::check_shutdown_grace(self.shutdown_grace_secs)?;
        if self.retry.max_attempts == 0 {
            return Err(ConfigError("retry.max_attempts must be at least 1".into()));
        }
        Ok(())
    }

    /// The Oomnitza client configuration, with the token or password read now.
    pub fn oomnitza_config(&self) -> Result<OomnitzaConfig, ConfigError> {
        let token = peoplesync_runtime::env_or_file("OOMNITZA_API_TOKEN")?;
        let auth = match (token, &self.oomnitza.login) {
            (Some(token), _) => OomnitzaAuth::ApiToken(token),
            (None, Some(login)) => OomnitzaAuth::Password {
                login: login.clone(),
                password: peoplesync_runtime::require("OOMNITZA_PASSWORD")?,
            },
            (None, None) => {
                return Err(ConfigError(
                    "no Oomnitza credentials: set OOMNITZA_API_TOKEN (or OOMNITZA_API_TOKEN_FILE), \
                     or OOMNITZA_LOGIN with OOMNITZA_PASSWORD (or OOMNITZA_PASSWORD_FILE)"
                        .into(),
                ));
            }
        };
        let mut config = OomnitzaConfig::new(self.oomnitza.url.trim_end_matches('/'), auth);
        config.request_timeout = Duration::from_secs(self.oomnitza.request_timeout_secs.max(1));
        if let Some(path) = &self.oomnitza.ca_file {
            config.extra_roots =
                peoplesync_runtime::tls::load_ca_file("OOMNITZA_CA_FILE", Path::new(path))?;
        }
        Ok(config)
    }

    /// The bus settings these consumer settings give.
    pub fn bus_settings(&self) -> peoplesync_bus::BusSettings {
        peoplesync_bus::BusSettings {
            ack_wait: Duration::from_secs(self.consumer.ack_wait_secs),
            max_deliver: self.consumer.max_deliver,
            max_ack_pending: self.consumer.max_ack_pending,
            replicas: self.stream_replicas,
            ..peoplesync_bus::BusSettings::default()
        }
    }

    /// This replica's name.
    pub fn replica_name(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "loader".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peoplesync_runtime::service_config::documentation_gaps;

    #[test]
    fn a_bad_seed_in_nats_url_is_refused_at_load_and_a_list_is_not() {
        let bad = LoaderConfig {
            nats_url: "nats://n1:4222,nats://n2:port".into(),
            ..LoaderConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("NATS_URL") && err.contains("nats://n2:port"),
            "{err}"
        );
        let list = LoaderConfig {
            nats_url: "nats://n1:4222, nats://n2:4222".into(),
            ..LoaderConfig::default()
        };
        let err = list.validate().unwrap_err().to_string();
        assert!(err.contains("OOMNITZA_URL"), "the list passed; {err}");
    }

    #[test]
    fn missing_oomnitza_url_names_the_variable() {
        let err = LoaderConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("OOMNITZA_URL"), "{err}");
    }

    #[test]
    fn stream_replicas_come_from_the_environment_name_and_are_bounded() {
        let mut config = LoaderConfig::default();
        config.oomnitza.url = "http://x".into();
        assert_eq!(config.bus_settings().replicas, 1);
        config.stream_replicas = 3;
        assert_eq!(config.bus_settings().replicas, 3);
        config.stream_replicas = 7;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("PEOPLESYNC_STREAM_REPLICAS"), "{err}");
    }

    #[test]
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn every_key_reaches_its_nested_setting_by_environment() {
        use peoplesync_runtime::env_config::variable;
        use serde_json::json;
        let settings = [
            ("batch.size", json!(250)),
            ("retry.max_attempts", json!(3)),
            ("verify.enabled", json!(false)),
            ("oomnitza.request_timeout_secs", json!(5)),
            ("rate_limit.max_per_second", json!(20.5)),
        ];
        figment::Jail::expect_with(|jail| {
            jail.set_env("OOMNITZA_URL", "http://oomnitza.test");
            for (key, value) in &settings {
                jail.set_env(variable(ENV_SERVICE, key), value);
            }
            let config = LoaderConfig::load(None).map_err(|e| e.to_string())?;
            let loaded = serde_json::to_value(config).map_err(|e| e.to_string())?;
            for (key, value) in &settings {
                let pointer = format!("/{}", key.replace('.', "/"));
                assert_eq!(loaded.pointer(&pointer), Some(value), "{key}");
            }
            jail.set_env(variable(ENV_SERVICE, "batch.sizes"), "1");
            let err = LoaderConfig::load(None).expect_err("an unknown key is refused");
            assert!(err.to_string().contains("sizes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn zero_sized_batches_are_refused() {
        let mut config = LoaderConfig::default();
        config.oomnitza.url = "http://x".into();
        config.batch.size = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_shutdown_grace_outside_one_to_six_hundred_seconds_is_refused_naming_it() {
        let mut config = LoaderConfig::default();
        config.oomnitza.url = "http://x".into();
        assert_eq!(config.shutdown_grace(), Duration::from_secs(25));
        for secs in [0, 601] {
            config.shutdown_grace_secs = secs;
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("shutdown_grace_secs"), "{err}");
        }
        config.shutdown_grace_secs = 600;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_shipped_file_and_the_configuration_page_state_every_key() {
        let page = include_str!("../../../docs/configuration.md");
        let gaps = documentation_gaps::<LoaderConfig>(ENV_SERVICE, DEFAULT_TOML, page);
        assert!(gaps.is_empty(), "{gaps:#?}");
    }
}
