//! The operations endpoint of running services: `/healthz`, `/readyz` and `/metrics` of the
//! `oomnitza-loader` and `sage-extractor` binaries, served (saying why they are not ready)
//! while NATS is out of reach at start (the loader's control plane too: bound at once, answering
//! health and telling calls it is still starting), readiness following NATS, refused
//! credentials showing from the start, and `--once` giving up on a NATS that does not answer,
//! stopping on SIGTERM with its checkpoint kept and its lease given back, and ending, its
//! checkpoint kept, when NATS goes away mid-run.
//! The services start from the stack harness on an HTTP port of their own choosing, found in
//! their logs ([`Launch::spawn_serving`]). (The deployment files themselves are checked by
//! `scripts/check-deploy`.)
//!
//! [`Launch::spawn_serving`]: peoplesync_testkit::stack::Launch::spawn_serving

use std::time::Duration;

use peoplesync_bus::RunState;
use peoplesync_sims::oomnitza::OomnitzaConfig;
use peoplesync_sims::sage::{SageConfig, SageFaults};
use peoplesync_testkit::stack::{Deployment, Serving, deployment, lease_holder};

/// NATS and both simulators as they start by default (no custom fields in Oomnitza).
pub(crate) async fn default_deployment() -> Deployment {
    Deployment::start(SageConfig::default(), OomnitzaConfig::default()).await
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

async fn wait_for_readyz(service: &Serving, status: u16, what: &str) -> serde_json::Value {
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
    service: &Serving,
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

#[tokio::test]
async fn loader_serves_health_readiness_and_metrics_and_readiness_follows_nats() {
    let mut d = default_deployment().await;
    let loader = d
        .loader("loader-1")
        .envs(&[
            ("CONTROL_LISTEN", "127.0.0.1:0"),
            ("CONTROL_TOKEN", "deploy-test-control-token-0123456789"),
        ])
        .spawn_serving();

    let ready = wait_for_readyz(&loader, 200, "the loader to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    assert_eq!(ready["checks"]["consumer"], true, "{ready}");
    assert_serves_health_and_metrics(&loader, peoplesync_runtime::metrics::Service::Loader).await;

    d.nats.server().kill();
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

    d.nats.server().restart();
    wait_for_readyz(
        &loader,
        200,
        "the loader to be ready again after NATS came back",
    )
    .await;
}

#[tokio::test]
async fn extractor_serves_health_readiness_and_metrics_while_it_waits_for_its_schedule() {
    let d = default_deployment().await;
    let extractor = d.extractor().spawn_serving();

    let ready = wait_for_readyz(&extractor, 200, "the extractor to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    assert_serves_health_and_metrics(&extractor, peoplesync_runtime::metrics::Service::Extractor)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_answer_probes_and_say_why_while_nats_is_out_of_reach_at_start() {
    let mut d = default_deployment().await;
    d.nats.server().kill();
    let extractor = d.extractor().spawn_serving();
    let loader = d.loader("loader-1").spawn_serving();
    for service in [&extractor, &loader] {
        let waiting = wait_for_readyz(service, 503, "/readyz to say NATS is not ready").await;
        let not_ready = waiting["not_ready"].as_array().cloned().unwrap_or_default();
        assert!(not_ready.contains(&serde_json::json!("nats")), "{waiting}");
        let note = waiting["notes"]["nats"].as_str().unwrap_or_default();
        assert!(
            note.contains("connecting to NATS and setting up"),
            "{waiting}"
        );
        let (status, _, _) = get(&service.url("/healthz")).await.expect("/healthz");
        assert_eq!(status, 200, "alive while it waits for NATS");
    }
    d.nats.server().restart();
    for service in [&extractor, &loader] {
        let ready = wait_for_readyz(service, 200, "ready once NATS answers").await;
        assert!(ready["notes"]["nats"].is_null(), "{ready}");
    }
}

/// The gRPC health status of `service` (`""`: the server) on the control plane at `port`.
async fn health_of(port: u16, service: &str) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_answers_from_the_start_and_serves_calls_once_nats_does() {
    use peoplesync_proto::v1::sync_control_client::SyncControlClient;
    use tonic_health::pb::health_check_response::ServingStatus;
    const CONTROL: &str = "peoplesync.v1.SyncControl";

    let mut d = default_deployment().await;
    d.nats.server().kill();
    // A taken control address stops the loader at once, not once NATS answers.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let port = taken.local_addr().expect("its address").port();
    let command = d.loader("loader-taken").control(port).command();
    let (code, stderr) = run_to_exit(command, Duration::from_secs(30), "with NATS away").await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("control plane cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(taken);

    // While NATS is away: alive for a liveness probe, not serving SyncControl, and a call is
    // told why instead of finding nobody listening.
    let port = peoplesync_testkit::free_port();
    let loader = d.loader("loader-1").control(port).spawn_serving();
    peoplesync_testkit::wait_for(
        "the control plane to answer health checks",
        Duration::from_secs(30),
        || async {
            health_of(port, "")
                .await
                .filter(|s| *s == ServingStatus::Serving as i32)
        },
    )
    .await;
    assert_eq!(
        health_of(port, CONTROL).await,
        Some(ServingStatus::NotServing as i32)
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("the URL")
        .connect()
        .await
        .expect("a channel");
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", peoplesync_testkit::stack::CONTROL_TOKEN)
            .parse()
            .expect("the header");
    let mut client =
        SyncControlClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        });
    let status_request = || peoplesync_proto::v1::GetStatusRequest {
        integration_id: "sage-people".to_owned(),
    };
    let early = client
        .get_status(status_request())
        .await
        .expect_err("no status before NATS answers");
    assert_eq!(early.code(), tonic::Code::Unavailable, "{early:?}");
    assert!(early.message().contains("still starting"), "{early:?}");

    d.nats.server().restart();
    wait_for_readyz(&loader, 200, "ready once NATS answers").await;
    peoplesync_testkit::wait_for("SyncControl to serve", Duration::from_secs(60), || async {
        health_of(port, CONTROL)
            .await
            .filter(|s| *s == ServingStatus::Serving as i32)
    })
    .await;
    let reply = client
        .get_status(status_request())
        .await
        .expect("the status once connected")
        .into_inner();
    assert_eq!(reply.integration_id, "sage-people");
}

/// Waits until `/readyz` answers 503 naming exactly `conditions` (NATS and the consumer come
/// up first; the credential check follows).
async fn wait_for_not_ready(service: &Serving, conditions: &[&str]) {
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
    let d = default_deployment().await;
    let loader = d
        .loader("loader-1")
        .env("OOMNITZA_API_TOKEN", "not-the-token")
        .spawn_serving();
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
    let d = default_deployment().await;
    let extractor = d
        .extractor()
        .env("SAGE_PEOPLE_CLIENT_SECRET", "not-the-secret")
        .spawn_serving();
    // The condition is registered (not ready) before the check runs: wait for the check.
    peoplesync_testkit::wait_for(
        "the start-up check to ask for a token",
        Duration::from_secs(30),
        || async { (d.sage.stats().token_failures > 0).then_some(()) },
    )
    .await;
    wait_for_not_ready(&extractor, &["sage_people_credentials.sage-people"]).await;
    assert_eq!(
        d.sage.stats().token_failures,
        1,
        "one check, not a retry loop"
    );
}

#[tokio::test]
async fn once_gives_up_on_nats_that_does_not_answer_within_its_wait() {
    // A cron job's sync must end, failed, when NATS stays away; the service waits instead.
    let d = default_deployment().await;
    let nobody = format!("nats://127.0.0.1:{}", peoplesync_testkit::free_port());
    let command = d
        .extractor()
        .env("NATS_URL", &nobody)
        .env("PEOPLESYNC_ONCE_NATS_WAIT_SECS", "3")
        .args(&["--once"])
        .command();
    let (code, stderr) = run_to_exit(command, Duration::from_secs(60), "waiting for NATS").await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "NATS did not answer within 3 s (--nats-wait, PEOPLESYNC_ONCE_NATS_WAIT_SECS)"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_stopped_by_sigterm_keeps_its_checkpoint_gives_its_lease_back_and_is_resumed() {
    // A CronJob's pod evicted mid-sync: the run stops between two pages and records its
    // checkpoint, the scheduler lease is given back instead of left to expire, and the process
    // exits 1 saying so. The next `--once` resumes the same run and every worker lands.
    let mut once = OnceReadingSlowly::start("").await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &once.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let stderr = once.exit_1(Duration::from_secs(30), "after SIGTERM").await;
    assert!(
        stderr.contains("was interrupted; it resumes from its checkpoint"),
        "{stderr}"
    );
    let d = &once.d;
    assert_eq!(
        lease_holder(&d.bus().await, "sage-people").await,
        None,
        "the lease is given back"
    );
    let run = once.the_run_left_running().await;
    assert!(
        stderr.contains(&format!(
            "run {run} of sage-people was interrupted; it resumes from its checkpoint"
        )),
        "the run's own end, with its id: {stderr}"
    );
    once.is_resumed_by_the_next_once(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_losing_nats_mid_run_exits_1_saying_so_and_the_next_run_resumes_it() {
    // A cron job's sync whose NATS goes away for good mid-listing must end, failed and saying
    // why, rather than wait on NATS for ever (it did: the scheduler that started it never
    // learnt of it). It cannot renew its lease, so it stops within about three quarters of the
    // TTL plus shutdown_grace_secs. The run keeps its checkpoint: the next `--once` resumes it.
    // A second integration is not tried (it would wait on NATS in turn: it did, for ever).
    let mut once = OnceReadingSlowly::start(
        "shutdown_grace_secs = 10\nintegrations = [\"sage-people\", \"hr-us\"]\n",
    )
    .await;
    once.d.nats.server().kill();
    // 15 s of TTL: a quarter of it for each renewal, a step-down at half of it, 10 s of grace.
    let stderr = once
        .exit_1(Duration::from_secs(60), "after NATS went")
        .await;
    assert!(
        stderr.contains("cannot renew the scheduler lease"),
        "{stderr}"
    );
    once.d.nats.server().restart();
    let run = once.the_run_left_running().await;
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("sage-extractor: "))
        .unwrap_or_default();
    assert!(
        last.contains(&format!("run {run} of sage-people")) && last.contains("resumes from"),
        "the error names the run and what follows: {stderr}"
    );
    assert!(
        last.contains(
            "hr-us: run of hr-us: starting a run of hr-us: not tried: NATS stopped answering during the sync of sage-people"
        ),
        "{stderr}"
    );
    once.is_resumed_by_the_next_once(&run).await;
}

/// `sage-extractor --once` reading a deployment of 4,000 workers whose Sage People answers
/// each page 300 ms late, beside a loader, with its log in a file; started by
/// [`OnceReadingSlowly::start`], which returns once three pages were read.
struct OnceReadingSlowly {
    d: Deployment,
    _loader: peoplesync_testkit::ChildService,
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for OnceReadingSlowly {
    /// A test failing before the process ended does not leave it behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl OnceReadingSlowly {
    /// Starts it with `config` as the extractor's configuration file.
    async fn start(config: &str) -> OnceReadingSlowly {
        let d = deployment(4_000).await;
        let loader = d.loader("loader-1").spawn();
        d.sage.set_faults(SageFaults {
            latency_ms: 300,
            ..SageFaults::default()
        });
        let log = d.dir.path().join("once.log");
        let child = d
            .extractor()
            .config(config)
            .args(&["--once"])
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("start sage-extractor --once");
        peoplesync_testkit::wait_for("three pages read", Duration::from_secs(60), || async {
            (d.sage.stats().pages_served >= 3).then_some(())
        })
        .await;
        OnceReadingSlowly {
            d,
            _loader: loader,
            child,
            log,
        }
    }

    /// Waits at most `limit` (`when`: what it waits after) for the process to exit 1, before
    /// the end of the listing, and returns its log.
    async fn exit_1(&mut self, limit: Duration, when: &str) -> String {
        let status = wait_for_exit(&mut self.child, limit, when).await;
        let stderr = std::fs::read_to_string(&self.log).expect("the log");
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            self.d.sage.stats().records_served < 4_000,
            "stopped before the end of the listing"
        );
        stderr
    }

    /// The id of the one run recorded, which is left running.
    async fn the_run_left_running(&self) -> String {
        let runs = self
            .d
            .bus()
            .await
            .runs()
            .list(Some("sage-people"))
            .await
            .expect("the runs");
        let [run] = runs.as_slice() else {
            panic!("one run: {runs:?}")
        };
        assert_eq!(run.state, RunState::Running, "{run:?}");
        run.run_id.clone()
    }

    /// With Sage People answering at once, the next `--once` resumes run `run` and every worker
    /// lands.
    async fn is_resumed_by_the_next_once(&self, run: &str) {
        self.d.sage.set_faults(SageFaults::default());
        assert_eq!(self.d.extract_run(), run, "the same run is resumed");
        self.d.assert_loaded(run, Duration::from_secs(120)).await;
    }
}

/// Runs `command` to its end within `limit` (`when`: what it waited for, in the panic, which
/// shows the end of its log), and returns its exit code and standard error. Read as it is
/// written, so a talkative process cannot fill the pipe and block.
async fn run_to_exit(
    mut command: std::process::Command,
    limit: Duration,
    when: &str,
) -> (Option<i32>, String) {
    let ran =
        tokio::task::spawn_blocking(move || peoplesync_testkit::output_within(&mut command, limit))
            .await
            .unwrap_or_else(|e| panic!("the process did not end {when}: {e}"));
    (
        ran.status.code(),
        String::from_utf8_lossy(&ran.stderr).into_owned(),
    )
}

/// Waits at most `limit` for `child` to exit; kills it and fails the test otherwise.
async fn wait_for_exit(
    child: &mut std::process::Child,
    limit: Duration,
    when: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the process's status") {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process still ran {limit:?} {when}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `/readyz` note on `subject` once `wanted` holds for it (`None`: no note).
pub(crate) async fn wait_for_note(
    service: &Serving,
    subject: &str,
    what: &str,
    wanted: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    let url = service.url("/readyz");
    peoplesync_testkit::wait_for(what, Duration::from_secs(30), || {
        let url = url.clone();
        let wanted = &wanted;
        async move {
            let (_, _, body) = get(&url).await?;
            let ready: serde_json::Value = serde_json::from_str(&body).ok()?;
            let note = ready["notes"][subject].as_str();
            wanted(note).then(|| note.map(str::to_owned))
        }
    })
    .await
}

#[tokio::test]
async fn a_stored_config_the_loader_cannot_use_shows_on_readyz_until_a_valid_one_is_stored() {
    let d = default_deployment().await;
    // A config with a key this loader does not know, as after a rollback to an older version.
    let unusable = "id = \"sage-people\"\nkey_of_a_newer_version = 1\n";
    d.bus()
        .await
        .config_kv()
        .put("sage-people", unusable.as_bytes().to_vec().into())
        .await
        .expect("storing the config");
    let loader = d.loader("loader-1").spawn_serving();
    let note = wait_for_note(
        &loader,
        "config sage-people",
        "the refused config to be noted",
        |note| note.is_some(),
    )
    .await
    .unwrap_or_default();
    assert!(
        note.contains("key_of_a_newer_version")
            && note.contains("none of its events are loaded")
            && note.contains("syncctl integration put"),
        "{note}"
    );
    d.put_config(&peoplesync_core::IntegrationConfig::default_for(
        "sage-people",
    ))
    .await;
    wait_for_note(
        &loader,
        "config sage-people",
        "the note to go once a valid config is stored",
        |note| note.is_none(),
    )
    .await;
}
