//! Setting any key of a service's TOML configuration by environment, the same way in every
//! service: the service's prefix (`PEOPLESYNC_LOADER__`, `PEOPLESYNC_EXTRACTOR__`), then the
//! key path in capitals with sections separated by [`SEPARATOR`]:
//! `PEOPLESYNC_LOADER__BATCH__SIZE=200` sets `[batch] size = 200`.

use figment::providers::Env;

/// Between the prefix and the key, and between a section and its key.
pub const SEPARATOR: &str = "__";

/// The variable prefix of `service` (`"loader"` gives `PEOPLESYNC_LOADER__`).
pub fn prefix(service: &str) -> String {
    format!("PEOPLESYNC_{}{SEPARATOR}", service.to_ascii_uppercase())
}

/// The figment provider reading every `PEOPLESYNC_<SERVICE>__…` variable as a config key.
pub fn provider(service: &str) -> Env {
    Env::prefixed(&prefix(service)).split(SEPARATOR)
}

/// The variable that sets `key` (a dotted path such as `batch.size`) of `service`.
pub fn variable(service: &str, key: &str) -> String {
    format!(
        "{}{}",
        prefix(service),
        key.replace('.', SEPARATOR).to_ascii_uppercase()
    )
}

/// Every key path (`batch.size`) of a configuration serialised as JSON: the leaves, with maps
/// and sections joined by dots. An empty map (named credential sets) has no key to list.
pub fn keys(config: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

/// The variables of `service`'s keys (see [`keys`]) that `page` does not name, `defaults`
/// being the service's default configuration: the configuration page must name the variable
/// of every key.
pub fn unnamed_variables(
    page: &str,
    service: &str,
    defaults: &impl serde::Serialize,
) -> Result<Vec<String>, serde_json::Error> {
    Ok(keys(&serde_json::to_value(defaults)?)
        .iter()
        .map(|key| variable(service, key))
        .filter(|variable| !page.contains(variable.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_must_name_the_variable_of_every_key() {
        let defaults = serde_json::json!({"batch": {"size": 1, "linger_ms": 2}, "credentials": {}});
        let page = "`PEOPLESYNC_LOADER__BATCH__SIZE` sets the size.";
        assert_eq!(
            unnamed_variables(page, "loader", &defaults).unwrap(),
            ["PEOPLESYNC_LOADER__BATCH__LINGER_MS"]
        );
    }

    #[test]
    fn a_dotted_key_becomes_one_variable() {
        assert_eq!(
            variable("loader", "retry.max_attempts"),
            "PEOPLESYNC_LOADER__RETRY__MAX_ATTEMPTS"
        );
    }
}
