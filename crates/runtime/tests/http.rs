//! The operations endpoint over a real socket: what Docker health checks, Kubernetes probes and
//! Prometheus see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use peoplesync_runtime::{Readiness, http, metrics};
use tokio_util::sync::CancellationToken;

async fn start(readiness: Readiness) -> (String, http::HttpServer, CancellationToken) {
    let stop = CancellationToken::new();
    let server = http::serve("127.0.0.1:0".parse().unwrap(), readiness, stop.clone())
        .await
        .expect("serve on port 0");
    let base = format!("http://{}", server.local_addr());
    (base, server, stop)
}

#[tokio::test]
async fn healthz_answers_200_while_the_process_runs_even_when_not_ready() {
    let readiness = Readiness::new();
    readiness.register("nats");
    let (base, server, stop) = start(readiness).await;
    assert_ne!(
        server.local_addr().port(),
        0,
        "port 0 resolves to a real port"
    );
    let response = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    stop.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_naming_what_is_missing_until_every_condition_holds() {
    let readiness = Readiness::new();
    readiness.register("nats");
    readiness.register("consumer");
    let (base, server, stop) = start(readiness.clone()).await;

    readiness.set("nats", true);
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["not_ready"], serde_json::json!(["consumer"]));
    assert_eq!(body["checks"]["nats"], true);

    readiness.set("consumer", true);
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], true);

    stop.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn metrics_serves_recorded_values_as_prometheus_text_with_help_and_buckets() {
    let (base, server, stop) = start(Readiness::new()).await;
    metrics::register(metrics::Service::Loader, &["acme".to_owned()]);
    ::metrics::counter!(metrics::names::LOADER_EVENTS, "integration" => "acme", "outcome" => "written")
        .increment(3);
    ::metrics::histogram!(metrics::names::LOADER_BULK_REQUEST_SECONDS).record(0.2);

    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"peoplesync_loader_events_total{integration="acme",outcome="written"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("# HELP peoplesync_loader_events_total"),
        "{text}"
    );
    assert!(
        text.contains(r#"peoplesync_loader_bulk_request_seconds_bucket{le="0.25"} 1"#),
        "latencies are histograms with buckets, not summaries: {text}"
    );
    // Registered at 0 before anything happened, and the build and process are described.
    assert!(
        text.contains(
            r#"peoplesync_loader_events_total{integration="acme",outcome="dead_lettered"} 0"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"peoplesync_loader_paused{integration="acme"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"peoplesync_build_info{service="oomnitza-loader""#),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");

    stop.cancel();
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn the_server_stops_when_its_token_is_cancelled() {
    let (base, server, stop) = start(Readiness::new()).await;
    stop.cancel();
    server.stopped().await.unwrap();
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
}

#[tokio::test]
async fn a_busy_address_is_refused_with_the_variable_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::serve(addr, Readiness::new(), CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("PEOPLESYNC_HTTP_LISTEN"), "{err}");
}
