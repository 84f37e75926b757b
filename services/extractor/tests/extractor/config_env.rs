//! The extractor's configuration file and environment: the shipped file states the defaults,
//! every key reaches its setting by environment, and the configuration page names each
//! variable.

use peoplesync_extractor::ExtractorConfig;
use peoplesync_extractor::config::{DEFAULT_TOML, ENV_SERVICE};
use peoplesync_runtime::service_config::documentation_gaps;

#[test]
fn the_shipped_file_and_the_configuration_page_state_every_key() {
    let page = include_str!("../../../../docs/configuration.md");
    let gaps = documentation_gaps::<ExtractorConfig>(ENV_SERVICE, DEFAULT_TOML, page);
    assert!(gaps.is_empty(), "{gaps:#?}");
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
