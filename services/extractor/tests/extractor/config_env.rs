//! The extractor's configuration file and environment: the shipped file states the defaults,
//! every key reaches its setting by environment, the configuration page names each variable,
//! and each variable it names is one of the extractor's settings.

use peoplesync_extractor::ExtractorConfig;
use peoplesync_extractor::config::{CredentialSet, DEFAULT_TOML, ENV_SERVICE};
use peoplesync_runtime::env_config::{keys, prefix, variable};
use peoplesync_runtime::service_config::documentation_gaps;

#[test]
fn the_shipped_file_and_the_configuration_page_state_every_key() {
    let page = include_str!("../../../../docs/configuration.md");
    let gaps = documentation_gaps::<ExtractorConfig>(ENV_SERVICE, DEFAULT_TOML, page);
    assert!(gaps.is_empty(), "{gaps:#?}");
}

/// The leaf keys of `value` serialised, as `a.b` paths.
fn leaf_keys(value: impl serde::Serialize) -> Vec<String> {
    keys(&serde_json::to_value(value).expect("a config serialises"))
}

#[test]
fn every_extractor_variable_the_page_names_sets_a_setting() {
    let page = include_str!("../../../../docs/configuration.md");
    let prefix = prefix(ENV_SERVICE);
    let settings: Vec<String> = leaf_keys(ExtractorConfig::default())
        .iter()
        .map(|key| variable(ENV_SERVICE, key))
        .collect();
    let set_keys = leaf_keys(CredentialSet::default());
    // `PEOPLESYNC_EXTRACTOR__CREDENTIALS__<NAME>__<KEY>`: a named set's key.
    let sets_a_credential_key = |name: &str| {
        name.strip_prefix(&format!("{prefix}CREDENTIALS__"))
            .and_then(|rest| rest.rsplit_once("__"))
            .is_some_and(|(set, key)| {
                !set.is_empty() && set_keys.contains(&key.to_ascii_lowercase())
            })
    };
    let named = page.match_indices(&prefix).filter_map(|(at, _)| {
        page[at..]
            .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .next()
    });
    // A name ending in the separator is followed by a placeholder (`<KEY>`).
    let unknown: Vec<&str> = named
        .filter(|name| !name.ends_with("__"))
        .filter(|name| !settings.iter().any(|s| s == name) && !sets_a_credential_key(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names variables that set no extractor setting (the extractor \
         refuses to start with them): {unknown:?}"
    );
}

#[test]
// figment::Jail's closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn every_key_reaches_its_nested_setting_by_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("PEOPLESYNC_EXTRACTOR__REMOVALS__HOLD_ABOVE_COUNT", "7");
        jail.set_env("PEOPLESYNC_EXTRACTOR__PUBLISH_WINDOW", "64");
        jail.set_env(
            "PEOPLESYNC_EXTRACTOR__CREDENTIALS__EU__LOGIN_URL",
            "https://eu.my.salesforce.com",
        );
        jail.set_env(
            "PEOPLESYNC_EXTRACTOR__CREDENTIALS__EU__CLIENT_ID",
            "eu-client",
        );
        let config = ExtractorConfig::load(None).map_err(|e| e.to_string())?;
        assert_eq!(config.removals.hold_above_count, 7);
        assert_eq!(config.publish_window, 64);
        assert_eq!(config.credentials["eu"].client_id, "eu-client");
        Ok(())
    });
}
