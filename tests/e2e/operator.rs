//! What an operator sees of a freshly started process: every metric it exports is there at 0
//! before anything happened, and logs redirected to a file carry no colour codes.

use std::process::Command;

use peoplesync_runtime::metrics::catalog::{self, Kind, Service};

/// Every counter and gauge of `service`'s catalog, for integration `sage-people`, as the
/// series lines a scrape must contain.
fn expected_series(service: Service) -> Vec<(String, Kind)> {
    let integrations = vec!["sage-people".to_owned()];
    let mut lines = Vec::new();
    for metric in service.metrics() {
        if metric.kind == Kind::Histogram {
            continue;
        }
        for labels in catalog::series(metric, &integrations) {
            let labels: Vec<String> = labels
                .iter()
                .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
                .collect();
            let series = if labels.is_empty() {
                metric.name.to_owned()
            } else {
                format!("{}{{{}}}", metric.name, labels.join(","))
            };
            lines.push((series, metric.kind));
        }
    }
    lines
}

/// Asserts every series of `service` is in `text`, counters at 0.
pub(crate) fn assert_zero_initialised(service: Service, text: &str) {
    for (series, kind) in expected_series(service) {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(series.as_str()))
            .unwrap_or_else(|| panic!("{series} is not exported from start-up:\n{text}"));
        if kind == Kind::Counter {
            assert!(line.ends_with(" 0"), "{line} is not 0 at start-up");
        }
    }
    assert!(
        text.contains(&format!(
            "peoplesync_build_info{{service=\"{}\"",
            service.name()
        )),
        "{text}"
    );
    assert!(text.contains("process_open_fds"), "{text}");
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    // Started without OOMNITZA_URL, the loader logs an error and exits: text logs, stderr not
    // a terminal.
    let output = Command::new(peoplesync_testkit::bin_path("oomnitza-loader"))
        .env_remove("LOG_FORMAT")
        .env_remove("OOMNITZA_URL")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .expect("the loader runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("OOMNITZA_URL"), "{stderr}");
    assert!(
        stderr.contains("ERROR"),
        "a log line, not only the exit message: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in {stderr:?}"
    );
}

#[test]
fn each_service_prints_its_full_configuration_file_and_it_loads() {
    for (program, prefix) in [
        ("oomnitza-loader", "PEOPLESYNC_LOADER__"),
        ("sage-extractor", "PEOPLESYNC_EXTRACTOR__"),
    ] {
        let output = Command::new(peoplesync_testkit::bin_path(program))
            .arg("--print-default-config")
            .output()
            .expect("the service runs");
        assert!(output.status.success(), "{program}");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(
            text.contains(prefix),
            "{program} explains the environment form"
        );
        let parsed: Result<serde_json::Value, _> = match program {
            "oomnitza-loader" => toml_to_json::<peoplesync_loader::LoaderConfig>(&text),
            _ => toml_to_json::<peoplesync_extractor::ExtractorConfig>(&text),
        };
        parsed.unwrap_or_else(|e| panic!("{program}'s printed file does not load: {e}"));
    }
}

fn toml_to_json<T: serde::de::DeserializeOwned + serde::Serialize>(
    text: &str,
) -> Result<serde_json::Value, String> {
    let config: T = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_value(config).map_err(|e| e.to_string())
}
