//! The operations endpoint of running services: `/healthz`, `/readyz` and `/metrics` of the
//! `oomnitza-loader` and `sage-extractor` binaries, readiness following NATS, and refused
//! credentials showing from the start. (The deployment files themselves are checked by
//! `scripts/check-deploy`.)

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A service binary whose stderr (JSON logs) is read for its `http listening on ADDR` line;
/// killed on drop.
pub(crate) struct Running {
    child: std::process::Child,
    http: std::net::SocketAddr,
}

impl Running {
    pub(crate) fn start(program: &str, envs: &[(&str, &str)]) -> Running {
        let mut child = Command::new(peoplesync_testkit::bin_path(program))
            .envs(envs.iter().copied())
            .env("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let show = std::env::var_os("PEOPLESYNC_TEST_LOGS").is_some();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if show {
                    eprintln!("{line}");
                }
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(addr) = entry["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("http listening on "))
                    .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let http = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{program} did not log `http listening on ADDR` within 30s");
            }
        };
        Running { child, http }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn get(url: &str) -> Option<(u16, String, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((status, content_type, response.text().await.ok()?))
}

async fn wait_for_readyz(service: &Running, status: u16, what: &str) -> serde_json::Value {
    let url = service.url("/readyz");
    peoplesync_testkit::wait_for(what, Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let (code, _, body) = get(&url).await?;
            (code == status)
                .then(|| serde_json::from_str(&body).ok())
                .flatten()
        }
    })
    .await
}

/// `/healthz` answers 200 and `/metrics` serves every metric of `kind`, zero-initialised.
async fn assert_serves_health_and_metrics(
    service: &Running,
    kind: peoplesync_runtime::metrics::Service,
) {
    let (status, _, _) = get(&service.url("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(status, 200);
    let (status, content_type, text) = get(&service.url("/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    crate::operator::assert_zero_initialised(kind, &text);
}

/// NATS, an Oomnitza simulator and a loader writing to it with the simulator's token, or with
/// `token`; `extra` variables besides.
async fn loader_writing_to_a_sim(
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (
    peoplesync_testkit::NatsServer,
    peoplesync_sims::oomnitza::OomnitzaSim,
    Running,
) {
    let nats = peoplesync_testkit::NatsServer::start();
    let oomnitza_config = peoplesync_sims::oomnitza::OomnitzaConfig::default();
    let oomnitza = peoplesync_sims::oomnitza::OomnitzaSim::spawn(oomnitza_config.clone())
        .await
        .expect("oomnitza sim");
    let oomnitza_url = oomnitza.url();
    let mut envs = vec![
        ("NATS_URL", nats.url()),
        ("OOMNITZA_URL", &oomnitza_url),
        (
            "OOMNITZA_API_TOKEN",
            token.unwrap_or(&oomnitza_config.api_token),
        ),
        ("RUST_LOG", "info"),
    ];
    envs.extend_from_slice(extra);
    let loader = Running::start("oomnitza-loader", &envs);
    (nats, oomnitza, loader)
}

#[tokio::test]
async fn loader_serves_health_readiness_and_metrics_and_readiness_follows_nats() {
    let (mut nats, _oomnitza, loader) = loader_writing_to_a_sim(
        None,
        &[
            ("CONTROL_LISTEN", "127.0.0.1:0"),
            ("CONTROL_TOKEN", "deploy-test-control-token-0123456789"),
        ],
    )
    .await;

    let ready = wait_for_readyz(&loader, 200, "the loader to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    assert_eq!(ready["checks"]["consumer"], true, "{ready}");
    assert_serves_health_and_metrics(&loader, peoplesync_runtime::metrics::Service::Loader).await;

    nats.kill();
    let not_ready = wait_for_readyz(&loader, 503, "the loader to report NATS as not ready").await;
    assert_eq!(
        not_ready["not_ready"],
        serde_json::json!(["nats"]),
        "{not_ready}"
    );
    let (status, _, _) = get(&loader.url("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(
        status, 200,
        "alive while NATS is away, so Kubernetes does not restart it"
    );

    nats.restart();
    wait_for_readyz(
        &loader,
        200,
        "the loader to be ready again after NATS came back",
    )
    .await;
}

/// NATS, a Sage People simulator and an extractor reading it with the simulator's client
/// secret, or with `secret`.
async fn extractor_reading_a_sim(
    secret: Option<&str>,
) -> (
    peoplesync_testkit::NatsServer,
    peoplesync_sims::sage::SageSim,
    Running,
) {
    let nats = peoplesync_testkit::NatsServer::start();
    let sage_config = peoplesync_sims::sage::SageConfig::default();
    let sage = peoplesync_sims::sage::SageSim::spawn(sage_config.clone())
        .await
        .expect("sage sim");
    let sage_url = sage.url();
    let extractor = Running::start(
        "sage-extractor",
        &[
            ("NATS_URL", nats.url()),
            ("SAGE_PEOPLE_LOGIN_URL", &sage_url),
            ("SAGE_PEOPLE_CLIENT_ID", &sage_config.client_id),
            (
                "SAGE_PEOPLE_CLIENT_SECRET",
                secret.unwrap_or(&sage_config.client_secret),
            ),
            ("RUST_LOG", "info"),
        ],
    );
    (nats, sage, extractor)
}

#[tokio::test]
async fn extractor_serves_health_readiness_and_metrics_while_it_waits_for_its_schedule() {
    let (_nats, _sage, extractor) = extractor_reading_a_sim(None).await;

    let ready = wait_for_readyz(&extractor, 200, "the extractor to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    assert_serves_health_and_metrics(&extractor, peoplesync_runtime::metrics::Service::Extractor)
        .await;
}

/// Waits until `/readyz` answers 503 naming exactly `conditions` (NATS and the consumer come
/// up first; the credential check follows).
async fn wait_for_not_ready(service: &Running, conditions: &[&str]) {
    let url = service.url("/readyz");
    let expected = serde_json::json!(conditions);
    peoplesync_testkit::wait_for(
        &format!("/readyz to name only {conditions:?}"),
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let expected = expected.clone();
            async move {
                let (code, _, body) = get(&url).await?;
                let body: serde_json::Value = serde_json::from_str(&body).ok()?;
                (code == 503 && body["not_ready"] == expected).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_refused_oomnitza_token_sets_credentials_failing_from_the_start_and_the_loader_stays_ready()
 {
    let (_nats, _oomnitza, loader) = loader_writing_to_a_sim(Some("not-the-token"), &[]).await;
    let metrics = loader.url("/metrics");
    peoplesync_testkit::wait_for(
        "credentials_failing to be set before any run",
        Duration::from_secs(30),
        || {
            let metrics = metrics.clone();
            async move {
                let (_, _, text) = get(&metrics).await?;
                text.lines()
                    .any(|l| {
                        l.starts_with("peoplesync_loader_credentials_failing") && l.ends_with(" 1")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    // Still ready: its control plane must stay reachable to find out what is wrong.
    wait_for_readyz(&loader, 200, "the loader to stay ready").await;
}

#[tokio::test]
async fn a_refused_sage_people_secret_shows_on_the_extractors_readyz_from_the_start() {
    let (_nats, sage, extractor) = extractor_reading_a_sim(Some("not-the-secret")).await;
    // The condition is registered (not ready) before the check runs: wait for the check.
    peoplesync_testkit::wait_for(
        "the start-up check to ask for a token",
        Duration::from_secs(30),
        || async { (sage.stats().token_failures > 0).then_some(()) },
    )
    .await;
    wait_for_not_ready(&extractor, &["sage_people_credentials.sage-people"]).await;
    assert_eq!(
        sage.stats().token_failures,
        1,
        "one check, not a retry loop"
    );
}
