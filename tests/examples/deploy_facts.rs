//! What the services accept that their `--help` does not show, for `scripts/check-deploy`
//! (the one checker of the deployment files), read from the services' own code so that no
//! list is kept twice:
//!
//! - `deploy_facts` prints one JSON document: for `sage-extractor` and `oomnitza-loader`, every
//!   environment variable the service reads (its `ENV_VARS` and the `PEOPLESYNC_<SERVICE>__<KEY>`
//!   variable of every key of its configuration file) and the shapes of variables it reads by
//!   pattern (the extractor's per-credential-set secrets); and the custom fields of the default
//!   integration, as the Oomnitza simulator's `OOMNITZA_SIM_CUSTOM_FIELDS` spells them.
//! - `deploy_facts load <loader|extractor|integration> FILE` loads a shipped configuration file
//!   the way the service does, and exits non-zero with the service's own message when it does
//!   not load. An integration config is printed back as the loader stores it, to compare with
//!   the default.
//! - `deploy_facts default-integration ID` prints the default integration config `ID` the same
//!   way.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

/// `SAGE_PEOPLE_<NAME>_{CLIENT_SECRET,PRIVATE_KEY,PASSWORD}[_FILE]`: the secrets of a named
/// credential set (docs/configuration.md), which the extractor reads by name only once a
/// configuration names the set.
const CREDENTIAL_SET_SECRET: &str =
    "^SAGE_PEOPLE_[A-Z0-9_]+_(CLIENT_SECRET|PRIVATE_KEY|PASSWORD)(_FILE)?$";

/// `ENV_VARS` plus the variable of every key of the configuration whose defaults are `defaults`.
fn service(
    env_vars: &[&str],
    service: &str,
    defaults: Result<Value, serde_json::Error>,
    patterns: &[&str],
) -> Result<Value, String> {
    let defaults = defaults.map_err(|e| format!("{service} defaults: {e}"))?;
    let mut env: Vec<String> = env_vars.iter().map(|v| (*v).to_owned()).collect();
    env.extend(
        peoplesync_runtime::env_config::keys(&defaults)
            .iter()
            .map(|key| peoplesync_runtime::env_config::variable(service, key)),
    );
    env.sort();
    env.dedup();
    Ok(json!({ "env": env, "env_patterns": patterns }))
}

fn facts() -> Result<Value, String> {
    let extractor = service(
        peoplesync_extractor::config::ENV_VARS,
        peoplesync_extractor::config::ENV_SERVICE,
        serde_json::to_value(peoplesync_extractor::ExtractorConfig::default()),
        &[CREDENTIAL_SET_SECRET],
    )?;
    let loader = service(
        peoplesync_loader::config::ENV_VARS,
        peoplesync_loader::config::ENV_SERVICE,
        serde_json::to_value(peoplesync_loader::LoaderConfig::default()),
        &[],
    )?;
    let custom_fields: Vec<String> = peoplesync_core::default_custom_fields()
        .into_iter()
        .map(|f| {
            format!(
                "{}:{}{}",
                f.id,
                f.label,
                if f.unique { ":unique" } else { "" }
            )
        })
        .collect();
    Ok(json!({
        "programs": { "sage-extractor": extractor, "oomnitza-loader": loader },
        "default_custom_fields": custom_fields.join(","),
    }))
}

/// Loads `file` as the configuration `kind`; an integration config is returned as stored.
fn load(kind: &str, file: &Path) -> Result<String, String> {
    match kind {
        "loader" => peoplesync_loader::LoaderConfig::load(Some(file))
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "extractor" => peoplesync_extractor::ExtractorConfig::load(Some(file))
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
        "integration" => {
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            peoplesync_core::IntegrationConfig::from_toml(&text)
                .map(|config| config.to_toml())
                .map_err(|e| e.to_string())
        }
        other => Err(format!(
            "unknown kind {other:?}: loader, extractor or integration"
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => facts().and_then(|f| serde_json::to_string_pretty(&f).map_err(|e| e.to_string())),
        ["load", kind, file] => load(kind, Path::new(file)),
        ["default-integration", id] => Ok(peoplesync_core::IntegrationConfig::default_for(id).to_toml()),
        _ => Err("usage: deploy_facts [load <loader|extractor|integration> FILE | default-integration ID]".to_owned()),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
