//! Loading a service's own configuration the same way in every service: built-in defaults,
//! then the `--config` TOML file, then every key by environment (see [`crate::env_config`]),
//! then the short names both services share (`NATS_URL`, …) and the service's own. The
//! service then validates the result once; its messages name the key and the variable.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::secrets::SecretError;
use crate::tls::CaFileError;

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl From<SecretError> for ConfigError {
    fn from(e: SecretError) -> Self {
        ConfigError(e.to_string())
    }
}

impl From<CaFileError> for ConfigError {
    fn from(e: CaFileError) -> Self {
        ConfigError(e.to_string())
    }
}

/// A short environment variable and the key it sets, e.g. `("NATS_URL", "nats_url")`.
pub type ShortName = (&'static str, &'static str);

/// The short names every service reads, with the same key in each.
pub const SHARED_SHORT_NAMES: &[ShortName] = &[
    ("NATS_URL", "nats_url"),
    ("PEOPLESYNC_REPLICA", "replica"),
    ("PEOPLESYNC_STREAM_REPLICAS", "stream_replicas"),
];

/// The integrations a service serves, comma separated; replaces the key `integrations`.
pub const INTEGRATION_ENV: &str = "PEOPLESYNC_INTEGRATION";

/// Every environment variable both services read besides their own and the NATS connection
/// ones: the shared short names, [`INTEGRATION_ENV`], the operations endpoint, the outbound
/// proxy, logging, and the one allocator setting the image sets (`MIMALLOC_PURGE_DELAY`, read
/// by the memory allocator, mimalloc, at start-up: how many milliseconds freed memory is kept
/// before it is given back to the system).
pub const SHARED_ENV_VARS: &[&str] = &[
    "NATS_URL",
    INTEGRATION_ENV,
    "PEOPLESYNC_REPLICA",
    "PEOPLESYNC_STREAM_REPLICAS",
    crate::http::LISTEN_ENV,
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "RUST_LOG",
    "LOG_FORMAT",
    "MIMALLOC_PURGE_DELAY",
];

/// Lists of variable names joined into one at compile time:
/// `const ALL: [&str; N] = concat::<N>(&[A, B])` (a wrong `N` fails the build).
pub const fn concat<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut all = [""; N];
    let mut i = 0;
    let mut part = 0;
    while part < parts.len() {
        let mut j = 0;
        while j < parts[part].len() {
            assert!(i < N, "N is smaller than the lists together");
            all[i] = parts[part][j];
            i += 1;
            j += 1;
        }
        part += 1;
    }
    assert!(i == N, "N is larger than the lists together");
    all
}

/// Loads `T`: its defaults, then `file` (an error when it does not exist), then every key as
/// `PEOPLESYNC_<SERVICE>__<KEY>`, then [`SHARED_SHORT_NAMES`] and `short_names`, then
/// [`INTEGRATION_ENV`] into the list `integrations` picks. The caller validates the result.
pub fn load<T>(
    service: &str,
    file: Option<&Path>,
    short_names: &'static [ShortName],
    integrations: fn(&mut T) -> &mut Vec<String>,
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(crate::env_config::provider(service));
    figment = figment.merge(Env::raw().filter_map(move |var| {
        SHARED_SHORT_NAMES
            .iter()
            .chain(short_names)
            .find(|(name, _)| var == *name)
            .map(|(_, key)| (*key).into())
    }));
    let mut config: T = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
    if let Ok(list) = std::env::var(INTEGRATION_ENV) {
        *integrations(&mut config) = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Ok(config)
}

/// Checks `stream_replicas`, the copies of each stream and KV bucket, as both services do.
pub fn check_stream_replicas(replicas: usize) -> Result<(), ConfigError> {
    within(&(1..=5), replicas, || {
        format!(
            "stream_replicas = {replicas} (PEOPLESYNC_STREAM_REPLICAS): JetStream allows 1 to 5 replicas"
        )
    })
}

/// Checks `shutdown_grace_secs`, how long a service may take to stop after SIGTERM, as both
/// services do.
pub fn check_shutdown_grace(secs: u64) -> Result<(), ConfigError> {
    within(&(1..=600), secs, || {
        format!("shutdown_grace_secs = {secs}: between 1 and 600")
    })
}

/// `Ok` when `value` is in `range`, else the error `message` says.
fn within<T: PartialOrd>(
    range: &std::ops::RangeInclusive<T>,
    value: T,
    message: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError(message()))
    }
}

/// Whether `shipped`, a service's `default-config.toml`, states exactly `T::default()`;
/// the error shows both, so a key added to one and not the other is found by a test.
pub fn check_shipped_file<T>(shipped: &str) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + Default,
{
    let parsed: T =
        toml::from_str(shipped).map_err(|e| format!("the shipped file does not parse: {e}"))?;
    let as_json = |config: &T| serde_json::to_value(config).map_err(|e| e.to_string());
    let (shipped, defaults) = (as_json(&parsed)?, as_json(&T::default())?);
    if shipped == defaults {
        Ok(())
    } else {
        Err(format!(
            "default-config.toml and the built-in defaults disagree:\nfile:     {shipped}\ndefaults: {defaults}"
        ))
    }
}

/// What a service's documentation lacks: `shipped` (its `default-config.toml`) must state
/// exactly `T::default()` ([`check_shipped_file`]) and `page` (`docs/configuration.md`) must
/// name the variable of every key ([`crate::env_config::unnamed_variables`]). Each service
/// has a test asserting this is empty.
pub fn documentation_gaps<T>(service: &str, shipped: &str, page: &str) -> Vec<String>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut gaps: Vec<String> = check_shipped_file::<T>(shipped).err().into_iter().collect();
    match crate::env_config::unnamed_variables(page, service, &T::default()) {
        Ok(unnamed) => gaps.extend(
            unnamed
                .into_iter()
                .map(|variable| format!("docs/configuration.md does not name {variable}")),
        ),
        Err(e) => gaps.push(format!("the defaults cannot be listed: {e}")),
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        nats_url: String,
        stream_replicas: usize,
        integrations: Vec<String>,
        #[serde(default)]
        ca_file: Option<String>,
    }

    const OWN: &[ShortName] = &[("EXAMPLE_CA_FILE", "ca_file")];

    fn load_settings(file: Option<&Path>) -> Result<Settings, ConfigError> {
        load("example", file, OWN, |s: &mut Settings| &mut s.integrations)
    }

    #[test]
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_file_then_prefixed_keys_then_short_names_win() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "example.toml",
                "nats_url = \"nats://file:4222\"\nstream_replicas = 2",
            )?;
            let file = Some(Path::new("example.toml"));
            let from_file = load_settings(file).map_err(|e| e.to_string())?;
            assert_eq!(from_file.nats_url, "nats://file:4222");
            assert_eq!(from_file.stream_replicas, 2);
            jail.set_env("PEOPLESYNC_EXAMPLE__NATS_URL", "nats://prefixed:4222");
            jail.set_env("PEOPLESYNC_EXAMPLE__STREAM_REPLICAS", "3");
            let prefixed = load_settings(file).map_err(|e| e.to_string())?;
            assert_eq!(prefixed.nats_url, "nats://prefixed:4222");
            assert_eq!(prefixed.stream_replicas, 3);
            jail.set_env("NATS_URL", "nats://short:4222");
            jail.set_env("EXAMPLE_CA_FILE", "/ca.pem");
            jail.set_env(INTEGRATION_ENV, " a, ,b ");
            let short = load_settings(file).map_err(|e| e.to_string())?;
            assert_eq!(short.nats_url, "nats://short:4222");
            assert_eq!(short.ca_file.as_deref(), Some("/ca.pem"));
            assert_eq!(short.integrations, ["a", "b"]);
            Ok(())
        });
    }

    #[test]
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn a_missing_file_and_an_unknown_key_are_named() {
        let missing = load_settings(Some(Path::new("/nonexistent/example.toml"))).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("--config /nonexistent/example.toml: no such file"),
            "{missing}"
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("PEOPLESYNC_EXAMPLE__NATS_URLS", "x");
            let err = load_settings(None).expect_err("an unknown key is refused");
            assert!(err.to_string().contains("nats_urls"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn stream_replicas_are_one_to_five_naming_the_variable() {
        assert!(check_stream_replicas(1).is_ok() && check_stream_replicas(5).is_ok());
        for bad in [0, 6] {
            let err = check_stream_replicas(bad).unwrap_err().to_string();
            assert!(err.contains("PEOPLESYNC_STREAM_REPLICAS"), "{err}");
        }
    }

    #[test]
    fn lists_are_joined_in_order() {
        const JOINED: [&str; 3] = concat::<3>(&[&["A"], &[], &["B", "C"]]);
        assert_eq!(JOINED, ["A", "B", "C"]);
    }

    #[test]
    fn a_shipped_file_must_state_every_default() {
        let defaults = "nats_url = \"\"\nstream_replicas = 0\nintegrations = []\n";
        assert_eq!(check_shipped_file::<Settings>(defaults), Ok(()));
        let other = "nats_url = \"x\"\nstream_replicas = 0\nintegrations = []\n";
        let err = check_shipped_file::<Settings>(other).unwrap_err();
        assert!(err.contains("disagree"), "{err}");
        assert!(check_shipped_file::<Settings>("nats_url = 1").is_err());
    }

    #[test]
    fn documentation_gaps_name_the_file_and_each_unnamed_variable() {
        let shipped = "nats_url = \"\"\nstream_replicas = 0\nintegrations = []\n";
        let page = "PEOPLESYNC_EXAMPLE__NATS_URL PEOPLESYNC_EXAMPLE__STREAM_REPLICAS \
                    PEOPLESYNC_EXAMPLE__INTEGRATIONS PEOPLESYNC_EXAMPLE__CA_FILE";
        assert!(documentation_gaps::<Settings>("example", shipped, page).is_empty());
        let gaps = documentation_gaps::<Settings>("example", "stream_replicas = 1", "");
        assert_eq!(gaps.len(), 5, "{gaps:#?}");
        assert!(gaps[0].contains("does not parse"), "{gaps:#?}");
        assert!(
            gaps[1..]
                .iter()
                .all(|gap| gap
                    .starts_with("docs/configuration.md does not name PEOPLESYNC_EXAMPLE__")),
            "{gaps:#?}"
        );
    }
}
