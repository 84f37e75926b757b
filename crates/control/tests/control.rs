//! The control plane end to end: a real nats-server, the Sage People and Oomnitza simulators
//! in-process, `oomnitza-loader` (serving the control plane) and `sage-extractor` (as a service,
//! answering commands) as child processes, and a tonic client — or `syncctl` as a process.
//! Build the binaries first: `cargo build --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use peoplesync_bus::{Bus, BusSettings};
use peoplesync_proto::v1 as pb;
use peoplesync_proto::v1::sync_control_client::SyncControlClient;
use peoplesync_sims::generate;
use peoplesync_sims::oomnitza::{CustomField, OomnitzaConfig, OomnitzaSim};
use peoplesync_sims::sage::{PageSize, SageConfig, SageFaults, SageSim};
use peoplesync_testkit::{ChildService, NatsServer, bin_path, wait_for};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status};

const TOKEN: &str = "test-control-token-0123456789";
const INTEGRATION: &str = "sage-people";

type Client = SyncControlClient<InterceptedService<Channel, Bearer>>;

/// Adds a bearer token (or none) to every call.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        Ok(request)
    }
}

fn tls_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
}

/// What a test's deployment looks like.
struct Options {
    workers: u64,
    extractor: bool,
    tls: bool,
    sage_faults: SageFaults,
    /// The client secret the extractor is given (default: the simulator's).
    sage_secret: Option<String>,
    /// The API token the loader is given (default: the simulator's).
    oomnitza_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 40,
            extractor: true,
            tls: false,
            sage_faults: SageFaults::default(),
            sage_secret: None,
            oomnitza_token: None,
        }
    }
}

/// NATS, both simulators, a loader serving the control plane, and (usually) an extractor.
struct Stack {
    nats: NatsServer,
    sage: SageSim,
    oomnitza: OomnitzaSim,
    _loader: ChildService,
    _extractor: Option<ChildService>,
    addr: SocketAddr,
    seed: u64,
    tls: bool,
}

impl Stack {
    async fn start(options: Options) -> Stack {
        let nats = NatsServer::start();
        let sage_config = SageConfig {
            workers: options.workers,
            page_size: PageSize::Fixed(10),
            faults: options.sage_faults,
            ..SageConfig::default()
        };
        let seed = sage_config.seed;
        let sage = SageSim::spawn(sage_config.clone()).await.unwrap();
        let oomnitza_config = OomnitzaConfig {
            custom_fields: peoplesync_core::default_custom_fields()
                .into_iter()
                .map(|f| CustomField {
                    id: f.id,
                    label: f.label,
                    unique: f.unique,
                })
                .collect(),
            ..OomnitzaConfig::default()
        };
        let oomnitza = OomnitzaSim::spawn(oomnitza_config.clone()).await.unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", peoplesync_testkit::free_port())
            .parse()
            .unwrap();
        let listen = addr.to_string();
        let oomnitza_url = oomnitza.url();
        let cert = tls_dir().join("server.pem").display().to_string();
        let key = tls_dir().join("server.key").display().to_string();
        let mut loader_env = vec![
            ("NATS_URL", nats.url()),
            ("OOMNITZA_URL", oomnitza_url.as_str()),
            (
                "OOMNITZA_API_TOKEN",
                options
                    .oomnitza_token
                    .as_deref()
                    .unwrap_or(oomnitza_config.api_token.as_str()),
            ),
            ("PEOPLESYNC_REPLICA", "loader-1"),
            ("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0"),
            ("CONTROL_LISTEN", listen.as_str()),
            ("PEOPLESYNC_CONTROL_TOKEN", TOKEN),
            ("RUST_LOG", "info"),
        ];
        if options.tls {
            loader_env.push(("CONTROL_TLS_CERT_FILE", cert.as_str()));
            loader_env.push(("CONTROL_TLS_KEY_FILE", key.as_str()));
        }
        let loader = ChildService::spawn("oomnitza-loader", &[], &loader_env);
        let sage_url = sage.url();
        let extractor = options.extractor.then(|| {
            ChildService::spawn(
                "sage-extractor",
                &[],
                &[
                    ("NATS_URL", nats.url()),
                    ("SAGE_PEOPLE_LOGIN_URL", sage_url.as_str()),
                    ("SAGE_PEOPLE_CLIENT_ID", sage_config.client_id.as_str()),
                    (
                        "SAGE_PEOPLE_CLIENT_SECRET",
                        options
                            .sage_secret
                            .as_deref()
                            .unwrap_or(sage_config.client_secret.as_str()),
                    ),
                    ("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0"),
                    ("RUST_LOG", "info"),
                ],
            )
        });
        let stack = Stack {
            nats,
            sage,
            oomnitza,
            _loader: loader,
            _extractor: extractor,
            addr,
            seed,
            tls: options.tls,
        };
        stack.wait_until_serving().await;
        stack
    }

    fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Channel::from_shared(self.url()).unwrap();
        if self.tls {
            let ca = std::fs::read(tls_dir().join("ca.pem")).unwrap();
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .unwrap();
        }
        endpoint.connect().await
    }

    /// Waits until the loader's health service says SERVING (no token needed).
    async fn wait_until_serving(&self) {
        wait_for(
            "the control plane to serve",
            Duration::from_secs(30),
            || async {
                let channel = self.channel().await.ok()?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let reply = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .ok()?;
                (reply.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                    .then_some(())
            },
        )
        .await;
    }

    async fn client_with(&self, token: Option<&str>) -> Client {
        SyncControlClient::with_interceptor(
            self.channel().await.unwrap(),
            Bearer(token.map(|t| t.to_owned())),
        )
    }

    async fn client(&self) -> Client {
        self.client_with(Some(&format!("Bearer {TOKEN}"))).await
    }

    async fn bus(&self) -> Bus {
        Bus::connect(self.nats.url(), "control-test", BusSettings::default())
            .await
            .unwrap()
    }

    /// The raw Sage People record of worker `index`.
    fn worker(&self, index: u64) -> Value {
        generate::worker(self.seed, index)
    }

    /// Indices of workers with and without an e-mail.
    fn workers_by_email(&self, workers: u64) -> (Vec<u64>, Vec<u64>) {
        (0..workers).partition(|i| {
            self.worker(*i)
                .get("emailAddress")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.trim().is_empty())
        })
    }

    /// E-mails of the users the Oomnitza simulator holds.
    fn stored_emails(&self) -> Vec<String> {
        self.oomnitza
            .users()
            .into_iter()
            .filter_map(|u| u.get("EMAIL")?.as_str().map(str::to_owned))
            .collect()
    }
}

/// Triggers a run, retrying while the extractor is still starting (no responder yet).
async fn trigger(client: &mut Client) -> pb::TriggerSyncResponse {
    trigger_resending(client, false).await
}

/// Triggers a run (sending every record when `resend_all`), retrying while the extractor is
/// still starting.
async fn trigger_resending(client: &mut Client, resend_all: bool) -> pb::TriggerSyncResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .trigger_sync(pb::TriggerSyncRequest {
                integration_id: INTEGRATION.into(),
                resend_all,
            })
            .await
        {
            Ok(reply) => return reply.into_inner(),
            Err(status)
                if status.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("TriggerSync failed: {status:?}"),
        }
    }
}

/// Follows a run to its end; returns every update.
async fn watch_to_end(client: &mut Client, run_id: &str) -> Vec<pb::Run> {
    let mut stream = client
        .watch_run(pb::WatchRunRequest {
            integration_id: INTEGRATION.into(),
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut updates = Vec::new();
    let collect = async {
        while let Some(update) = stream.next().await {
            updates.push(update.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(90), collect)
        .await
        .expect("the run ended within 90 s");
    updates
}

/// A worker count whose generated org (default seed) has `missing` workers without an e-mail,
/// so that a full run leaves that many dead letters.
fn workers_with_missing_emails(missing: usize) -> u64 {
    let seed = SageConfig::default().seed;
    let mut found = 0;
    for index in 0.. {
        let email = generate::worker(seed, index)["emailAddress"]
            .as_str()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if email.is_empty() {
            found += 1;
            if found == missing {
                return index + 5;
            }
        }
    }
    unreachable!()
}

fn counts(run: &pb::Run) -> pb::RunCounts {
    run.counts.unwrap()
}

fn default_toml() -> String {
    peoplesync_core::IntegrationConfig::default_for(INTEGRATION).to_toml()
}

/// The default config, with USER and EMAIL falling back to an address made from the worker id,
/// so that workers without an e-mail can be loaded: the fix before a replay.
fn fixed_toml() -> String {
    let fallback =
        "template = \"{{ worker.email or (worker.id | lower) ~ '@replayed.example.com' }}\"";
    let fixed = default_toml()
        .replace(
            "field = \"USER\"\nsource = \"Email\"",
            &format!("field = \"USER\"\n{fallback}"),
        )
        .replace(
            "field = \"EMAIL\"\nsource = \"Email\"",
            &format!("field = \"EMAIL\"\n{fallback}"),
        );
    assert_ne!(
        fixed,
        default_toml(),
        "the default config maps USER and EMAIL from Email"
    );
    fixed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_are_unauthenticated_while_health_and_reflection_answer() {
    let stack = Stack::start(Options {
        extractor: false,
        ..Options::default()
    })
    .await;

    let attempts = [
        (None, "missing `authorization: Bearer <token>`"),
        (
            Some("Bearer wrong-token-wrong-token"),
            "not the control plane's token",
        ),
        (Some(TOKEN), "must be `Bearer <token>`"),
    ];
    for (token, message) in attempts {
        let mut client = stack.client_with(token).await;
        let status = client
            .get_integration(pb::GetIntegrationRequest {
                integration_id: INTEGRATION.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        assert!(status.message().contains(message), "{}", status.message());
        // A streaming call is refused the same way, before anything is streamed.
        let status = client
            .watch_run(pb::WatchRunRequest {
                integration_id: INTEGRATION.into(),
                run_id: "r".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    // Reflection answers without a token and lists the control service.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            stack.channel().await.unwrap(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = reply.message_response
    else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"peoplesync.v1.SyncControl".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // With the token, the same call works; no extractor means UNAVAILABLE with the reason.
    let mut client = stack.client().await;
    client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap();
    let status = client
        .trigger_sync(pb::TriggerSyncRequest {
            integration_id: INTEGRATION.into(),
            resend_all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("no extractor is answering for integration sage-people"),
        "{}",
        status.message()
    );
    let status = client
        .trigger_sync(pb::TriggerSyncRequest {
            integration_id: "bad.id".into(),
            resend_all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_validated_and_written_only_over_the_revision_read() {
    let stack = Stack::start(Options {
        extractor: false,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;

    // The loader seeded the default config.
    let stored = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.revision > 0);
    assert!(stored.toml.contains("sync_keys = [\"EMAIL\"]"));
    assert!(!stored.pause.unwrap().paused);

    // Validation reports every problem and stores nothing.
    let broken = stored
        .toml
        .replace("sync_keys = [\"EMAIL\"]", "sync_keys = [\"NOPE\"]")
        .replace("source = \"Job Title\"", "source = \"Job Titel\"")
        + "\nsurprise = true\n";
    let report = client
        .validate_integration(pb::ValidateIntegrationRequest {
            toml: broken.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!report.valid);
    assert!(report.problems.len() >= 3, "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.kind == "unknown_key"));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("Job Titel"))
    );
    assert!(
        client
            .validate_integration(pb::ValidateIntegrationRequest { toml: fixed_toml() })
            .await
            .unwrap()
            .into_inner()
            .valid
    );

    // An invalid config is refused with every message, and nothing changes.
    let status = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: broken,
            revision: stored.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for problem in &report.problems {
        assert!(
            status.message().contains(&problem.message),
            "{} lacks {}",
            status.message(),
            problem.message
        );
    }
    assert!(status.message().contains("nothing was stored"));

    // A config stored under another integration's name is refused.
    let status = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: "other".into(),
            toml: default_toml(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("\"other\""),
        "{}",
        status.message()
    );

    // The revision read wins once; the same revision again is stale.
    let written = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: fixed_toml(),
            revision: stored.revision,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(written.revision > stored.revision);
    let status = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: default_toml(),
            revision: stored.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains(&format!(
            "revision {} of integration sage-people is stale",
            stored.revision
        )) && status
            .message()
            .contains(&format!("at revision {} now", written.revision)),
        "{}",
        status.message()
    );
    let status = client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: default_toml(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("already has a config"),
        "{}",
        status.message()
    );
    let now = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.revision, written.revision);
    assert_eq!(now.toml, fixed_toml());

    // A new integration is created with revision 0; an unknown one is NOT_FOUND.
    let acme = default_toml().replace("id = \"sage-people\"", "id = \"acme\"");
    client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: "acme".into(),
            toml: acme,
            revision: 0,
        })
        .await
        .unwrap();
    let status = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("PutIntegration"),
        "{}",
        status.message()
    );

    // Smart mapping: Email goes to Username and Email, ID to the unique Sage User ID field.
    let suggested = client
        .suggest_mapping(pb::SuggestMappingRequest {
            integration_id: INTEGRATION.into(),
            additional_fields: vec!["Cost Centre".into()],
            custom_fields: vec![pb::TargetField {
                id: "AAAABBBBCCCCDDDDEEEEFFFF00001111".into(),
                label: "Cost Centre".into(),
                unique: false,
            }],
            include_default_custom_fields: true,
        })
        .await
        .unwrap()
        .into_inner();
    let target = |source: &str| -> Vec<String> {
        suggested
            .suggestions
            .iter()
            .filter(|s| s.source_kind == "source" && s.source == source)
            .map(|s| s.field.clone())
            .collect()
    };
    assert_eq!(target("Email"), ["USER", "EMAIL"]);
    assert_eq!(target("ID"), [peoplesync_core::SAGE_USER_ID_FIELD]);
    assert_eq!(target("Cost Centre"), ["AAAABBBBCCCCDDDDEEEEFFFF00001111"]);
    assert!(suggested.toml.contains("[[mapping]]"));
    assert!(
        suggested
            .suggestions
            .iter()
            .any(|s| s.field == "PERMISSIONS_ID" && s.source == "default_role")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_is_watched_to_its_end_and_listed_with_its_counts() {
    let workers = 60;
    let stack = Stack::start(Options {
        workers,
        // Slow pages, so that the run is still going when it is triggered again.
        sage_faults: SageFaults {
            latency_ms: 150,
            ..SageFaults::default()
        },
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;

    let started = trigger(&mut client).await;
    let again = trigger(&mut client).await;
    assert_eq!(again.run_id, started.run_id);
    assert!(again.already_running);

    let updates = watch_to_end(&mut client, &started.run_id).await;
    assert!(updates.len() >= 2, "progress was streamed: {updates:?}");
    for pair in updates.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.published >= a.published, "published never goes back");
        let done = |r: &pb::Run| r.published + r.removed - r.pending;
        assert!(done(b) >= done(a), "accounted events never go back");
    }
    let last = updates.last().unwrap();
    assert!(last.done && last.counts_final);
    assert_eq!(last.published, workers);
    assert_eq!(last.pending, 0);
    let c = counts(last);
    assert_eq!(
        c.written + c.unchanged + c.filtered + c.dead_lettered,
        workers,
        "published = written + unchanged + filtered + dead-lettered"
    );
    let (with_email, without_email) = stack.workers_by_email(workers);
    assert_eq!(c.written, with_email.len() as u64);
    assert_eq!(c.dead_lettered, without_email.len() as u64);
    let expected_outcome = if without_email.is_empty() {
        pb::RunOutcome::Succeeded
    } else {
        pb::RunOutcome::SucceededWithDeadLetters
    };
    assert_eq!(last.outcome(), expected_outcome);
    assert_eq!(
        last.finalize.clone().unwrap().state(),
        pb::FinalizeState::Finalized
    );
    assert_eq!(last.finalize.clone().unwrap().by, "loader-1");

    let got = client
        .get_run(pb::GetRunRequest {
            integration_id: INTEGRATION.into(),
            run_id: started.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&got, last);
    let history = client
        .list_runs(pb::ListRunsRequest {
            integration_id: INTEGRATION.into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history.runs.first().map(|r| &r.run_id),
        Some(&started.run_id)
    );
    assert_eq!(history.runs[0].outcome(), expected_outcome);
    assert_eq!(counts(&history.runs[0]), c);

    let status = client
        .get_run(pb::GetRunRequest {
            integration_id: INTEGRATION.into(),
            run_id: "no-such-run".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("no-such-run"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_verdict_the_record_and_how_it_differs_from_oomnitza() {
    let workers = 20;
    let stack = Stack::start(Options {
        workers,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let (with_email, without_email) = stack.workers_by_email(workers);
    let index = with_email[0];
    let raw = stack.worker(index);
    let id = generate::worker_id(index);
    let email = raw["emailAddress"].as_str().unwrap().trim().to_lowercase();

    // Oomnitza already has the user, with another position and no first name.
    let mut user = serde_json::Map::new();
    user.insert("USER".into(), json!(email));
    user.insert("EMAIL".into(), json!(email));
    user.insert("POSITION".into(), json!("Chief Tester"));
    stack.oomnitza.insert_user(user);

    let base = client.clone();
    let preview = move |worker_id: String| {
        let client = base.clone();
        async move {
            // Retried while the extractor is still starting.
            wait_for("the extractor to answer", Duration::from_secs(30), || {
                let mut client = client.clone();
                let worker_id = worker_id.clone();
                async move {
                    match client
                        .preview_worker(pb::PreviewWorkerRequest {
                            integration_id: INTEGRATION.into(),
                            worker_id,
                        })
                        .await
                    {
                        Err(status) if status.code() == Code::Unavailable => None,
                        other => Some(other.map(|r| r.into_inner())),
                    }
                }
            })
            .await
        }
    };

    let shown = preview(id.clone()).await.unwrap();
    assert_eq!(shown.verdict(), pb::Verdict::Load);
    let record: Value = serde_json::from_str(&shown.record_json).unwrap();
    assert_eq!(record["EMAIL"], json!(email));
    assert_eq!(record["PERMISSIONS_ID"], json!("25"));
    assert_eq!(shown.sync_key, "EMAIL");
    assert_eq!(shown.sync_key_value, email);
    assert!(shown.user_exists, "{}", shown.oomnitza_error);
    let change = |field: &str| {
        shown
            .diff
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no diff of {field}"))
            .change()
    };
    assert_eq!(change("EMAIL"), pb::Change::Unchanged);
    assert_eq!(change("POSITION"), pb::Change::Modified);
    assert_eq!(change("FIRST_NAME"), pb::Change::Added);
    let position = shown.diff.iter().find(|d| d.field == "POSITION").unwrap();
    assert_eq!(position.attribute, "position");
    assert_eq!(position.current_json, "\"Chief Tester\"");
    assert!(
        shown
            .fields
            .iter()
            .any(|f| f.field == "EMAIL" && f.sync_key && f.required)
    );
    assert!(
        stack.oomnitza.users().len() == 1,
        "a preview writes nothing"
    );

    // A worker without an e-mail would be dead-lettered, and the preview says why.
    if let Some(&index) = without_email.first() {
        let shown = preview(generate::worker_id(index)).await.unwrap();
        assert_eq!(shown.verdict(), pb::Verdict::Unloadable);
        assert!(
            shown.reason.contains("USER") || shown.reason.contains("EMAIL"),
            "{}",
            shown.reason
        );
    }

    // A filter that excludes the worker is shown with its reason.
    let stored = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let filtered = stored.toml.replace(
        "[filter]\nmode = \"always\"",
        "[filter]\nmode = \"if_conditions\"\ncondition = \"worker.region == 'Atlantis'\"",
    );
    assert_ne!(filtered, stored.toml);
    client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: filtered,
            revision: stored.revision,
        })
        .await
        .unwrap();
    let shown = preview(id).await.unwrap();
    assert_eq!(shown.verdict(), pb::Verdict::Filtered);
    assert!(shown.reason.contains("Atlantis"), "{}", shown.reason);
    assert!(shown.record_json.is_empty());

    let status = preview("a2G7E9999999999999".into()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_is_synced_now_and_pause_flags_and_held_removals_are_handled() {
    let workers = 40;
    let stack = Stack::start(Options {
        workers,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let (with_email, _) = stack.workers_by_email(workers);

    // SyncWorker: one worker, its own run, loaded now.
    let index = with_email[1];
    let email = stack.worker(index)["emailAddress"]
        .as_str()
        .unwrap()
        .trim()
        .to_lowercase();
    let synced = wait_for(
        "the extractor to sync the worker",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                match client
                    .sync_worker(pb::SyncWorkerRequest {
                        integration_id: INTEGRATION.into(),
                        worker_id: generate::worker_id(index),
                    })
                    .await
                {
                    Err(status) if status.code() == Code::Unavailable => None,
                    other => Some(other.unwrap().into_inner()),
                }
            }
        },
    )
    .await;
    let run = watch_to_end(&mut client, &synced.run_id).await;
    let last = run.last().unwrap();
    assert!(!last.full);
    assert_eq!(last.published, 1);
    assert_eq!(counts(last).written, 1);
    assert_eq!(stack.stored_emails(), [email]);
    let status = client
        .sync_worker(pb::SyncWorkerRequest {
            integration_id: INTEGRATION.into(),
            worker_id: "a2G7E9999999999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Pause and Resume write the flag every loader replica watches.
    let paused = client
        .pause(pb::PauseRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
            reason: "Oomnitza maintenance".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    assert_eq!(paused.by, "ops");
    let pauses = stack.bus().await.pauses();
    let flag = pauses.get(INTEGRATION).await.unwrap().unwrap();
    assert!(flag.paused);
    assert_eq!(flag.reason.as_deref(), Some("Oomnitza maintenance"));
    let config = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(config.pause.unwrap().paused);
    let resumed = client
        .resume(pb::ResumeRequest {
            integration_id: INTEGRATION.into(),
            by: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    assert!(resumed.by.starts_with("grpc "), "{}", resumed.by);
    assert!(!pauses.is_paused(INTEGRATION).await.unwrap());

    // A full run lists every worker; then a tenth of them leave Sage People, which is more
    // than the extractor removes without approval, so the second run holds the removals.
    let first = trigger(&mut client).await;
    watch_to_end(&mut client, &first.run_id).await;
    // Only workers employed at the first run can leave (those who had left already are not in
    // its list).
    let today = chrono::Utc::now().date_naive();
    let leaving: Vec<String> = (0..workers)
        .map(generate::worker_id)
        .filter(|id| {
            let raw = stack.sage.worker(id).unwrap();
            let worker = peoplesync_core::Worker::from_raw(&raw).unwrap();
            peoplesync_core::leavers::ended(&worker, today).is_none()
        })
        .take((workers / 10) as usize)
        .collect();
    for id in &leaving {
        stack.sage.remove_worker(id);
    }
    let second = trigger(&mut client).await;
    let held = watch_to_end(&mut client, &second.run_id).await;
    assert_eq!(held.last().unwrap().removed, 0, "removals are held");
    assert_eq!(held.last().unwrap().removals_held, leaving.len() as u64);
    let status = client
        .get_status(pb::GetStatusRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.removals_held, leaving.len() as u64);
    assert_eq!(status.runs_holding_removals, vec![second.run_id.clone()]);
    let listed = client
        .list_leavers(pb::ListLeaversRequest {
            integration_id: INTEGRATION.into(),
            run_id: String::new(),
            held: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.run_id, second.run_id);
    assert_eq!(listed.held_count, leaving.len() as u64);
    let mut held_ids: Vec<String> = listed.leavers.iter().map(|l| l.worker_id.clone()).collect();
    held_ids.sort();
    let mut expected = leaving.clone();
    expected.sort();
    assert_eq!(held_ids, expected);
    assert!(
        listed
            .leavers
            .iter()
            .all(|l| l.reason == "removed" && l.action == "held")
    );
    let cli = syncctl(&stack, &["leavers", "--held", "-o", "json"]).json();
    assert_eq!(cli["held"], leaving.len());
    assert_eq!(cli["run_id"], second.run_id.as_str());
    let text = syncctl(&stack, &["leavers", "--held"]).stdout;
    let heading = format!("{} leavers of run {} held", leaving.len(), second.run_id);
    assert!(text.starts_with(&heading), "{text}");
    let released = client
        .approve_removals(pb::ApproveRemovalsRequest {
            integration_id: INTEGRATION.into(),
            run_id: second.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released, leaving.len() as u64);
    let after = client
        .get_status(pb::GetStatusRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.removals_held, 0,
        "approved removals are no longer held"
    );
    // The loaders handle them as leavers (action none by default: counted and reported).
    let report = wait_for(
        "the released leavers' report",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let count = leaving.len();
            async move {
                let reply = client
                    .list_leavers(pb::ListLeaversRequest {
                        integration_id: INTEGRATION.into(),
                        run_id: String::new(),
                        held: false,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (reply.leavers.len() == count).then_some(reply)
            }
        },
    )
    .await;
    assert_ne!(
        report.run_id, second.run_id,
        "reported under the release run"
    );
    let cli = syncctl(&stack, &["leavers", "-o", "json"]).json();
    assert_eq!(cli["run_id"], report.run_id.as_str());
    assert_eq!(cli["count"], leaving.len());
    assert!(
        report
            .leavers
            .iter()
            .all(|l| l.action == "none" || l.action == "not_found")
    );
    let status = client
        .approve_removals(pb::ApproveRemovalsRequest {
            integration_id: INTEGRATION.into(),
            run_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_purged_and_replayed_after_a_fix() {
    let workers = workers_with_missing_emails(3);
    let stack = Stack::start(Options {
        workers,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let (with_email, without_email) = stack.workers_by_email(workers);
    assert_eq!(without_email.len(), 3);

    let run = trigger(&mut client).await;
    watch_to_end(&mut client, &run.run_id).await;
    let selector = |f: &dyn Fn(&mut pb::DeadLetterSelector)| {
        let mut s = pb::DeadLetterSelector {
            integration_id: INTEGRATION.into(),
            ..Default::default()
        };
        f(&mut s);
        Some(s)
    };
    let base = client.clone();
    let list = move |selector: Option<pb::DeadLetterSelector>, limit: u32, after: u64| {
        let mut client = base.clone();
        async move {
            client
                .list_dead_letters(pb::ListDeadLettersRequest {
                    selector,
                    limit,
                    after_sequence: after,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };

    let all = list(selector(&|_| {}), 0, 0).await;
    assert_eq!(all.letters.len(), without_email.len());
    assert_eq!(all.held, without_email.len() as u64);
    assert_eq!(all.next_after_sequence, 0);
    let mut lettered: Vec<String> = all.letters.iter().map(|l| l.worker_id.clone()).collect();
    lettered.sort();
    let mut expected: Vec<String> = without_email
        .iter()
        .map(|i| generate::worker_id(*i))
        .collect();
    expected.sort();
    assert_eq!(lettered, expected);
    for letter in &all.letters {
        assert_eq!(letter.run_id, run.run_id);
        assert_eq!(letter.stage, "pipeline");
        assert!(letter.at.is_some());
        assert_eq!(letter.runs_seen, 1);
        assert_eq!(letter.first_run_id, run.run_id);
        assert_eq!(letter.first_seen, letter.at);
    }

    // A second run refuses the same workers for the same reasons: still one letter each,
    // now seen in two runs, with the second run's details.
    let second = trigger(&mut client).await;
    watch_to_end(&mut client, &second.run_id).await;
    let again = list(selector(&|_| {}), 0, 0).await;
    assert_eq!(
        again.letters.len(),
        without_email.len(),
        "one letter per worker"
    );
    assert_eq!(again.held, without_email.len() as u64);
    for letter in &again.letters {
        assert_eq!(letter.runs_seen, 2, "{letter:?}");
        assert_eq!(letter.run_id, second.run_id);
        assert_eq!(letter.first_run_id, run.run_id);
        let before = all
            .letters
            .iter()
            .find(|l| l.worker_id == letter.worker_id)
            .unwrap();
        assert_eq!(letter.first_seen, before.at);
        assert!(letter.sequence > before.sequence);
    }
    let all = again;
    let by_run = list(selector(&|s| s.run_id = run.run_id.clone()), 0, 0).await;
    assert_eq!(by_run.letters.len(), without_email.len());
    let by_reason = list(selector(&|s| s.reason_contains = "is EMPTY".into()), 0, 0).await;
    assert_eq!(
        by_reason.letters.len(),
        without_email.len(),
        "reasons match case-insensitively"
    );
    assert!(
        list(
            selector(&|s| s.reason_contains = "no such reason".into()),
            0,
            0
        )
        .await
        .letters
        .is_empty()
    );
    assert!(
        list(selector(&|s| s.run_id = "other-run".into()), 0, 0)
            .await
            .letters
            .is_empty()
    );
    let page = list(selector(&|_| {}), 1, 0).await;
    assert_eq!(page.letters.len(), 1);
    assert_eq!(page.next_after_sequence, page.letters[0].sequence);
    let next = list(selector(&|_| {}), 1, page.next_after_sequence).await;
    assert_eq!(next.letters[0].sequence, all.letters[1].sequence);

    // Destructive calls need a selection.
    let status = client
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            selector: selector(&|_| {}),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("`all`"), "{}", status.message());

    // Counted by reason; a dry run counts what a purge would take and takes nothing.
    let summary = client
        .summarize_dead_letters(pb::SummarizeDeadLettersRequest {
            selector: selector(&|_| {}),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.total, without_email.len() as u64);
    assert!(!summary.truncated);
    assert_eq!(
        summary.reasons.iter().map(|r| r.count).sum::<u64>(),
        summary.total
    );
    assert!(
        summary
            .reasons
            .iter()
            .all(|r| r.stage == "pipeline" && !r.reason.is_empty())
    );
    let dry = client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            selector: selector(&|s| s.all = true),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.purged, without_email.len() as u64);
    assert_eq!(
        list(selector(&|_| {}), 0, 0).await.letters.len(),
        without_email.len(),
        "a dry run purges nothing"
    );

    // The status shows the integration at a glance: the last run, the letters by reason, the
    // loader replica, the scheduler, and a pause with its reason.
    let status = |mut client: Client| async move {
        client
            .get_status(pb::GetStatusRequest {
                integration_id: INTEGRATION.into(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let now = status(client.clone()).await;
    assert_eq!(now.last_run.as_ref().unwrap().run_id, second.run_id);
    assert_eq!(
        now.dead_letters.as_ref().unwrap().total,
        without_email.len() as u64
    );
    assert!(now.loaders.iter().any(|l| l.name == "loader-1"), "{now:?}");
    assert!(!now.scheduler_leader.is_empty(), "{now:?}");
    assert!(now.config_revision > 0 && !now.schedule.is_empty() && now.next_run_at.is_some());
    assert_eq!((now.events_waiting, now.removals_held), (0, 0));
    assert!(
        !now.pause.as_ref().unwrap().paused && now.problems.is_empty(),
        "{now:?}"
    );
    client
        .pause(pb::PauseRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
            reason: "maintenance window".into(),
        })
        .await
        .unwrap();
    let paused = status(client.clone()).await;
    let pause = paused.pause.unwrap();
    assert!(pause.paused && pause.reason == "maintenance window" && pause.by == "ops");
    assert_eq!(paused.refused_config_revision, 0);
    client
        .resume(pb::ResumeRequest {
            integration_id: INTEGRATION.into(),
            by: "ops".into(),
        })
        .await
        .unwrap();

    // Purge one letter by sequence.
    let purged_letter = all.letters[0].clone();
    let purged = client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            selector: selector(&|s| s.sequences = vec![purged_letter.sequence]),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    assert_eq!(
        list(selector(&|_| {}), 0, 0).await.letters.len(),
        without_email.len() - 1
    );

    // Fix the config, then replay the rest of the run's letters: they load in a replay run.
    let stored = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .put_integration(pb::PutIntegrationRequest {
            integration_id: INTEGRATION.into(),
            toml: fixed_toml(),
            revision: stored.revision,
        })
        .await
        .unwrap();
    let replay = client
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            selector: selector(&|s| s.run_id = run.run_id.clone()),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.replayed, without_email.len() as u64 - 1);
    assert!(replay.failures.is_empty() && !replay.more);
    assert_ne!(replay.run_id, run.run_id);
    let replayed = watch_to_end(&mut client, &replay.run_id).await;
    let last = replayed.last().unwrap();
    assert_eq!(last.trigger, "replay");
    assert_eq!(last.published, replay.replayed);
    assert_eq!(counts(last).written, replay.replayed);
    assert_eq!(last.outcome(), pb::RunOutcome::Succeeded);
    assert!(list(selector(&|_| {}), 0, 0).await.letters.is_empty());
    let stored = stack.stored_emails();
    assert_eq!(stored.len(), with_email.len() + without_email.len() - 1);
    assert!(
        !stored
            .iter()
            .any(|e| e.starts_with(&purged_letter.worker_id.to_lowercase())),
        "the purged letter was not replayed"
    );

    // Purge everything that is left: nothing.
    let purged = client
        .purge_dead_letters(pb::PurgeDeadLettersRequest {
            selector: selector(&|s| s.all = true),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_certificate() {
    let stack = Stack::start(Options {
        extractor: false,
        tls: true,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let config = client
        .get_integration(pb::GetIntegrationRequest {
            integration_id: INTEGRATION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(config.revision > 0);

    // Plain HTTP/2 against the TLS port does not get an answer.
    let plain = Channel::from_shared(format!("http://{}", stack.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client =
            SyncControlClient::with_interceptor(channel, Bearer(Some(format!("Bearer {TOKEN}"))));
        assert!(
            client
                .get_integration(pb::GetIntegrationRequest {
                    integration_id: INTEGRATION.into(),
                })
                .await
                .is_err()
        );
    }

    // syncctl with --ca-file.
    let ca = tls_dir().join("ca.pem");
    let out = syncctl(
        &stack,
        &[
            "--ca-file",
            ca.to_str().unwrap(),
            "integration",
            "get",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["revision"], json!(config.revision));
    let out = syncctl(&stack, &["integration", "get"]);
    assert_eq!(
        out.code, 5,
        "an untrusted certificate cannot be reached: {}",
        out.stderr
    );
}

/// What a syncctl run printed and how it exited.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Ran {
    fn from(output: std::process::Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

fn syncctl_with(stack: &Stack, token: Option<&str>, args: &[&str]) -> Ran {
    let mut command = std::process::Command::new(bin_path("syncctl"));
    command
        .args(args)
        .env("PEOPLESYNC_CONTROL_URL", stack.url())
        .env_remove("PEOPLESYNC_CONTROL_TOKEN")
        .env_remove("PEOPLESYNC_CONTROL_TOKEN_FILE")
        .env_remove("PEOPLESYNC_INTEGRATION");
    if let Some(token) = token {
        command.env("PEOPLESYNC_CONTROL_TOKEN", token);
    }
    Ran::from(command.output().expect("run syncctl"))
}

fn syncctl(stack: &Stack, args: &[&str]) -> Ran {
    syncctl_with(stack, Some(TOKEN), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncctl_triggers_and_watches_a_run_then_lists_and_replays_its_dead_letters() {
    let workers = workers_with_missing_emails(2);
    let stack = Stack::start(Options {
        workers,
        ..Options::default()
    })
    .await;
    let (with_email, without_email) = stack.workers_by_email(workers);

    // Scripts can tell failures apart by exit code.
    assert_eq!(syncctl_with(&stack, None, &["runs"]).code, 3);
    assert_eq!(
        syncctl_with(&stack, Some("wrong-token-wrong"), &["runs"]).code,
        3
    );
    let missing = syncctl(&stack, &["runs", "get", "no-such-run"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(missing.stderr.contains("no-such-run"), "{}", missing.stderr);
    assert_eq!(syncctl(&stack, &["run", "--fail-on-dead-letters"]).code, 2);
    let unreachable = std::process::Command::new(bin_path("syncctl"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{}", peoplesync_testkit::free_port()),
            "runs",
        ])
        .env("PEOPLESYNC_CONTROL_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(5));

    // Trigger and watch to completion (retried while the extractor is starting).
    let ran = wait_for("syncctl run --watch", Duration::from_secs(60), || async {
        let ran = syncctl(&stack, &["run", "--watch", "--output", "json"]);
        (ran.code != 5).then_some(ran)
    })
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let run = ran.json();
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run["done"], json!(true));
    assert_eq!(run["published"], json!(workers));
    assert_eq!(run["counts"]["written"], json!(with_email.len()));
    assert_eq!(run["counts"]["dead_lettered"], json!(without_email.len()));
    assert_eq!(run["pending"], json!(0));
    assert_eq!(run["outcome"], json!("succeeded_with_dead_letters"));
    let strict = syncctl(&stack, &["runs", "get", &run_id, "--fail-on-dead-letters"]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
    assert!(strict.stdout.contains("dead-lettered"), "{}", strict.stdout);
    let history = syncctl(&stack, &["runs", "-o", "json"]).json();
    assert_eq!(history[0]["run_id"], json!(run_id));

    // List the dead letters, fix the config, replay, and watch the replay run.
    let letters = syncctl(&stack, &["dlq", "list", "--run", &run_id, "-o", "json"]).json();
    assert_eq!(
        letters["letters"].as_array().unwrap().len(),
        without_email.len()
    );
    for letter in letters["letters"].as_array().unwrap() {
        assert_eq!(letter["runs_seen"], json!(1));
        assert_eq!(letter["first_run_id"], json!(run_id));
        assert_eq!(letter["first_seen"], letter["at"]);
    }
    let text = syncctl(&stack, &["dlq", "list"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("is empty"), "{}", text.stdout);
    assert!(
        text.stdout.contains("RUNS") && text.stdout.contains("FIRST SEEN"),
        "{}",
        text.stdout
    );
    let current = syncctl(&stack, &["integration", "get", "-o", "json"]).json();
    let revision = current["revision"].as_u64().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixed.toml");
    std::fs::write(&file, fixed_toml()).unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(syncctl(&stack, &["integration", "validate", file]).code, 0);
    assert_eq!(
        syncctl(&stack, &["integration", "put", file]).code,
        2,
        "a put names the revision it replaces"
    );
    let put = syncctl(
        &stack,
        &["integration", "put", file, "--revision", &revision],
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    let stale = syncctl(
        &stack,
        &["integration", "put", file, "--revision", &revision],
    );
    assert_eq!(stale.code, 6, "{}", stale.stderr);
    assert!(stale.stderr.contains("stale"), "{}", stale.stderr);

    let replay = syncctl(
        &stack,
        &["dlq", "replay", "--run", &run_id, "--watch", "-o", "json"],
    );
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let replayed = replay.json();
    assert_eq!(replayed["trigger"], json!("replay"));
    assert_eq!(replayed["counts"]["written"], json!(without_email.len()));
    let left = syncctl(&stack, &["dlq", "list", "-o", "json"]).json();
    assert!(left["letters"].as_array().unwrap().is_empty());
    assert_eq!(stack.stored_emails().len(), workers as usize);

    let completions = syncctl_with(&stack, None, &["completions", "bash"]);
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("syncctl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_in_oomnitza_are_put_right_by_a_full_run_and_by_sync_worker() {
    let workers = 30;
    let stack = Stack::start(Options {
        workers,
        ..Options::default()
    })
    .await;
    let mut client = stack.client().await;
    let first = trigger(&mut client).await;
    let first = watch_to_end(&mut client, &first.run_id).await;
    let written = counts(first.last().unwrap()).written;
    assert!(written > 0);

    // Someone edits two users by hand in Oomnitza.
    let edit = |n: usize| {
        let mut user = stack.oomnitza.users()[n].clone();
        user.insert("POSITION".into(), Value::from("Edited by hand"));
        stack.oomnitza.insert_user(user);
    };
    let edited = |n: usize| {
        stack.oomnitza.users()[n].get("POSITION") == Some(&Value::from("Edited by hand"))
    };
    edit(0);
    edit(1);

    // A normal run sends nothing unchanged, so the edits stay.
    let normal = trigger(&mut client).await;
    let normal = watch_to_end(&mut client, &normal.run_id).await;
    assert_eq!(counts(normal.last().unwrap()).written, 0);
    assert!(edited(0) && edited(1));

    // A full run sends every record and puts them right.
    let full = trigger_resending(&mut client, true).await;
    let full = watch_to_end(&mut client, &full.run_id).await;
    let last = full.last().unwrap();
    assert!(last.resend_all);
    assert_eq!(
        counts(last).written,
        written,
        "every record sent and confirmed"
    );
    assert_eq!(counts(last).unchanged, 0);
    let verification = last.verification.clone().unwrap();
    assert_eq!(
        verification.state(),
        pb::VerificationState::Verified,
        "{verification:?}"
    );
    assert!(!edited(0) && !edited(1), "the hand edits are undone");

    // sync-worker always writes the worker, unchanged or not.
    edit(0);
    let email = stack.oomnitza.users()[0]["EMAIL"]
        .as_str()
        .unwrap()
        .to_owned();
    let index = (0..workers)
        .find(|i| {
            stack.worker(*i)["emailAddress"]
                .as_str()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(&email))
        })
        .expect("the edited user's worker");
    let synced = client
        .sync_worker(pb::SyncWorkerRequest {
            integration_id: INTEGRATION.into(),
            worker_id: generate::worker_id(index),
        })
        .await
        .unwrap()
        .into_inner();
    let run = watch_to_end(&mut client, &synced.run_id).await;
    assert_eq!(counts(run.last().unwrap()).written, 1);
    assert!(!edited(0), "sync-worker put the user right");
}

// ---- check ---------------------------------------------------------------------------------

/// `syncctl check --output json`, once the extractor answers commands (until then the Sage
/// People side is reported unreachable as a whole).
async fn check(stack: &Stack) -> (Ran, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ran = syncctl(stack, &["check", "--output", "json"]);
        let report = ran.json();
        let extractor_missing = report["checks"]
            .as_array()
            .is_some_and(|checks| checks.iter().any(|c| c["name"] == "sage_people"));
        if !extractor_missing || tokio::time::Instant::now() >= deadline {
            return (ran, report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The check line `name` of a report.
fn check_line<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Asserts that check `name` failed as `outcome`, naming every one of `hints`.
fn assert_check(report: &Value, name: &str, outcome: &str, hints: &[&str]) {
    let line = check_line(report, name);
    assert_eq!(line["outcome"], outcome, "{name}: {report:#}");
    let detail = line["detail"].as_str().unwrap_or_default();
    for hint in hints {
        assert!(
            detail.contains(hint),
            "{name} should mention {hint:?}: {detail}"
        );
    }
}

/// Stores `text` as the integration config without validation, as an older peoplesync (or a
/// hand edit in KV) could have.
async fn store_raw_config(stack: &Stack, text: &str) {
    stack
        .bus()
        .await
        .config_kv()
        .put(INTEGRATION, text.to_owned().into_bytes().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_healthy_stack_line_by_line_and_exits_zero() {
    let stack = Stack::start(Options::default()).await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 0, "{report:#}\n{}", ran.stderr);
    assert_eq!(report["verdict"], "ready");
    for name in [
        "nats",
        "config",
        "sage_people.token",
        "sage_people.page",
        "sage_people.fields",
        "oomnitza.token",
        "oomnitza.fields",
    ] {
        assert_check(&report, name, "passed", &[]);
    }
    assert_check(
        &report,
        "oomnitza.role",
        "not_checkable",
        &["publishes no read of user roles"],
    );
    assert_eq!(
        stack.oomnitza.users().len(),
        0,
        "the field probe is a test run and creates no user"
    );
    let text = syncctl(&stack, &["check"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("ok   sage_people.token"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("ready"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_wrong_in_the_stored_config_and_how_to_fix_it() {
    let stack = Stack::start(Options::default()).await;
    let base = default_toml();
    let schedule = |text: &str| {
        let replaced = base.replacen("every = \"24h\"\nat = \"02:00\"", text, 1);
        assert_ne!(replaced, base, "the default schedule is every/at");
        replaced
    };
    let bad_cron = schedule("cron = \"0 25 * * *\"");
    let cases = [
        (
            "bad cron",
            bad_cron.clone(),
            "config",
            vec![
                "schedule.cron",
                "is not a cron expression",
                "syncctl integration put",
            ],
        ),
        (
            "bad time zone",
            schedule("at = \"02:00\"\ntimezone = \"Europe/Londres\""),
            "config",
            vec!["schedule.timezone", "IANA time zone"],
        ),
        (
            "bad filter",
            base.replacen(
                "credentials = ",
                "source_filter = \"workAddress.country equals 'France'\"\ncredentials = ",
                1,
            ),
            "config",
            vec!["source_filter", "character"],
        ),
        (
            "unknown custom field id",
            format!("{base}\n[[mapping]]\nfield = \"CUSTOM_BADGE_NUMBER\"\nsource = \"ID\"\n"),
            "oomnitza.fields",
            vec!["CUSTOM_BADGE_NUMBER", "create the custom field"],
        ),
        (
            "additional field not in the field set",
            base.replacen(
                "credentials = ",
                "additional_fields = [\"Badge Number\"]\ncredentials = ",
                1,
            ),
            "sage_people.fields",
            vec!["Badge Number", "Employee API Additional Fields"],
        ),
    ];
    for (case, text, name, hints) in cases {
        store_raw_config(&stack, &text).await;
        let (ran, report) = check(&stack).await;
        assert_eq!(ran.code, 7, "{case}: exit 7 (misconfigured): {report:#}");
        assert_eq!(report["verdict"], "misconfigured", "{case}");
        assert_check(&report, name, "misconfigured", &hints);
    }

    // A run refused for a configuration error exits 7 (misconfigured), not 5 (unavailable).
    store_raw_config(&stack, &bad_cron).await;
    let ran = syncctl(&stack, &["run"]);
    assert_eq!(ran.code, 7, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("schedule"), "{}", ran.stderr);
    // Such configs are refused when validated or stored through the control plane.
    let validated = syncctl_stdin(&stack, &["integration", "validate", "-"], &bad_cron);
    assert_eq!(
        validated.code, 2,
        "{}{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated.stdout.contains("schedule.cron"),
        "{}",
        validated.stdout
    );
    let stored = syncctl_stdin(&stack, &["integration", "put", "-", "--force"], &bad_cron);
    assert_ne!(stored.code, 0, "{}", stored.stdout);
    assert!(stored.stderr.contains("schedule.cron"), "{}", stored.stderr);
    // A field id Oomnitza does not know is refused when stored, naming it.
    let unknown_field =
        format!("{base}\n[[mapping]]\nfield = \"CUSTOM_BADGE_NUMBER\"\nsource = \"ID\"\n");
    let stored = syncctl_stdin(
        &stack,
        &["integration", "put", "-", "--force"],
        &unknown_field,
    );
    assert_ne!(stored.code, 0, "{}", stored.stdout);
    assert!(
        stored.stderr.contains("CUSTOM_BADGE_NUMBER") && stored.stderr.contains("not stored"),
        "{}",
        stored.stderr
    );
}

/// syncctl with `args`, `text` on its stdin.
fn syncctl_stdin(stack: &Stack, args: &[&str], text: &str) -> Ran {
    use std::io::Write;
    let mut command = std::process::Command::new(bin_path("syncctl"));
    command
        .args(args)
        .env("PEOPLESYNC_CONTROL_URL", stack.url())
        .env("PEOPLESYNC_CONTROL_TOKEN", TOKEN)
        .env_remove("PEOPLESYNC_INTEGRATION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run syncctl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write the config");
    }
    Ran::from(child.wait_with_output().expect("syncctl ends"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_wrong_sage_people_secret() {
    let stack = Stack::start(Options {
        sage_secret: Some("not-the-secret".into()),
        ..Options::default()
    })
    .await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 7, "{report:#}");
    assert_check(
        &report,
        "sage_people.token",
        "misconfigured",
        &["consumer secret", "External Client App"],
    );
    assert_check(&report, "sage_people.page", "not_checkable", &[]);
    assert_check(&report, "oomnitza.token", "passed", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_field_permission() {
    let stack = Stack::start(Options {
        sage_faults: SageFaults {
            config_error: Some("INACCESSIBLE_FIELD".into()),
            config_error_target: Some("fHCM2__Team_Member__c.fHCM2__Department__c".into()),
            ..SageFaults::default()
        },
        ..Options::default()
    })
    .await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 7, "{report:#}");
    assert_check(&report, "sage_people.token", "passed", &[]);
    for name in ["sage_people.page", "sage_people.fields"] {
        assert_check(
            &report,
            name,
            "misconfigured",
            &[
                "fHCM2__Team_Member__c.fHCM2__Department__c",
                "field-level security",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_wrong_oomnitza_token() {
    let stack = Stack::start(Options {
        oomnitza_token: Some("not-the-token".into()),
        ..Options::default()
    })
    .await;
    let (ran, report) = check(&stack).await;
    assert_eq!(ran.code, 7, "{report:#}");
    assert_check(
        &report,
        "oomnitza.token",
        "misconfigured",
        &["OOMNITZA_API_TOKEN"],
    );
    assert_check(&report, "oomnitza.fields", "not_checkable", &[]);
    assert_check(&report, "sage_people.page", "passed", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_an_extractor_is_unreachable_not_misconfigured() {
    let stack = Stack::start(Options {
        extractor: false,
        ..Options::default()
    })
    .await;
    let ran = syncctl(&stack, &["check", "--output", "json"]);
    let report = ran.json();
    assert_eq!(ran.code, 5, "{report:#}");
    assert_eq!(report["verdict"], "unreachable");
    assert_check(
        &report,
        "sage_people",
        "unreachable",
        &["no extractor is answering"],
    );
}
