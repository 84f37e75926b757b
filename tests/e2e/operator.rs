//! What an operator sees of a freshly started process: every metric it exports is there at 0
//! before anything happened, logs redirected to a file carry no colour codes, the full
//! configuration file can be printed, and outbound calls go through the proxy the
//! environment names.

use std::process::Command;

use peoplesync_runtime::metrics::catalog::{self, Kind, Service};
use peoplesync_testkit::{PROCESS_LIMIT, output_within};

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
    let output = output_within(
        Command::new(peoplesync_testkit::bin_path("oomnitza-loader"))
            .env_remove("LOG_FORMAT")
            .env_remove("OOMNITZA_URL")
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info"),
        PROCESS_LIMIT,
    );
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
        let output = output_within(
            Command::new(peoplesync_testkit::bin_path(program)).arg("--print-default-config"),
            PROCESS_LIMIT,
        );
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

#[tokio::test]
async fn the_loader_reaches_oomnitza_through_the_proxy_the_environment_names() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let d = crate::operations::default_deployment().await;
    // The proxy: every connection is relayed to the simulator, which serves the proxy's
    // absolute-form requests by their path.
    let backend = d
        .oomnitza
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = format!("http://{}", listener.local_addr().expect("addr"));
    let relayed = Arc::new(AtomicU64::new(0));
    let count = relayed.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let backend = backend.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });

    // A host name that resolves nowhere: only the proxy can reach it.
    let _loader = d
        .loader("loader-1")
        .env("OOMNITZA_URL", "http://oomnitza.proxied.invalid")
        .env("HTTP_PROXY", &proxy)
        .spawn_serving();
    peoplesync_testkit::wait_for(
        "the loader's start-up calls to reach Oomnitza through the proxy",
        std::time::Duration::from_secs(30),
        || async {
            (relayed.load(Ordering::SeqCst) > 0 && d.oomnitza.stats().api_requests > 0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_removals_held_gauge_follows_the_run_records() {
    use peoplesync_bus::runs::{RunRecord, RunState};

    let d = crate::operations::default_deployment().await;
    let runs = d.bus().await.runs();
    let mut record = RunRecord::start("sage-people", "run-holding-removals", true, "schedule");
    record.state = RunState::Completed;
    record.removals_held = 7;
    runs.create(&record).await.expect("run record");

    let extractor = d.extractor().spawn_serving();
    let metrics = extractor.url("/metrics");
    let gauge_reads = |value: &'static str| {
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            async move {
                let (_, _, text) = crate::operations::get(&metrics).await?;
                text.lines()
                    .any(|l| {
                        l == format!(
                            "peoplesync_extractor_removals_held{{integration=\"sage-people\"}} {value}"
                        )
                    })
                    .then_some(())
            }
        }
    };
    peoplesync_testkit::wait_for(
        "the gauge to count the held removals",
        std::time::Duration::from_secs(30),
        gauge_reads("7"),
    )
    .await;
    // An approval sets the run's count back to 0: the gauge follows the record.
    runs.update("sage-people", "run-holding-removals", |r| {
        r.removals_held = 0;
        true
    })
    .await
    .expect("update");
    peoplesync_testkit::wait_for(
        "the gauge to drop after the approval",
        std::time::Duration::from_secs(30),
        gauge_reads("0"),
    )
    .await;
}
